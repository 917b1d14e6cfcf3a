"""docs/protocol.md section 3: connect greeting, challenge authentication, peer admission."""
import pytest
from django.test import override_settings
from eth_account import Account

from channels_app.models import Peer
from channels_app.identity import operator_keys
from tests.client import sign

pytestmark = pytest.mark.django_db(transaction=True)


async def test_connect_sends_version_identity_and_a_fresh_challenge(connect):
    client = await connect(login=False)
    version, identity, challenge = client.greeting
    assert version == {"event": "version", "reqid": 0, "data": {"version": "1.0.0"}}
    assert identity["event"] == "identity_address" and identity["reqid"] == 0
    assert identity["data"]["address"] == operator_keys().address
    assert identity["data"]["address"] != identity["data"]["address"].lower()  # EIP-55 checksummed
    assert challenge["event"] == "challenge" and challenge["reqid"] == 0
    other = await connect(login=False)
    assert other.challenge != client.challenge


async def test_authenticate_with_a_personal_sign_signature_records_the_peer(connect):
    client = await connect(login=False)
    reply = await client.request("authenticate", {"challenge": client.challenge,
                                                  "signature": sign(client.account, client.challenge)}, reqid=77)
    assert reply == {"event": "authenticate", "reqid": 77}
    peer = await Peer.objects.aget(address=client.address)
    assert peer.first_seen is not None and peer.last_seen is not None


async def test_signature_with_v_0_or_1_is_accepted(connect):
    client = await connect(login=False)
    signature = bytes.fromhex(sign(client.account, client.challenge)[2:])
    low_v = "0x" + (signature[:64] + bytes([signature[64] - 27])).hex()
    await client.ok("authenticate", {"challenge": client.challenge, "signature": low_v})


async def test_every_event_before_authentication_is_refused(connect):
    client = await connect(login=False)
    cid = "0x" + "ab" * 32
    for event, data in [("open_channel", {"peer": {"address": "0x" + "1" * 40}, "margin_deposit": "1"}),
                        ("record_trade", {"channel_id": cid}), ("positions", {"channel_id": cid}),
                        ("channel_jwt", {"channel_id": cid}), ("close_channel", {"channel_id": cid}),
                        ("subscribe_notifications", None), ("request_settlement", {"channel_id": cid})]:
        await client.error(event, data, code="not_authenticated")


async def test_wrong_signer_gets_invalid_signature_then_a_fresh_challenge(connect):
    client = await connect(login=False)
    someone_else = Account.create()
    reqid = await client.send("authenticate", {"challenge": client.challenge,
                                               "signature": sign(someone_else, client.challenge)})
    # A signature by another key recovers *that* key's address: the client is then that peer. What makes it
    # fail is signing a different text than the outstanding challenge:
    assert (await client.reply(reqid))["event"] == "authenticate"

    client = await connect(login=False)
    reqid = await client.send("authenticate", {"challenge": client.challenge,
                                               "signature": sign(client.account, "some other text")})
    # recovers some unrelated address, so the connection authenticates as a stranger, never as client.address
    reply = await client.reply(reqid)
    assert reply["event"] == "authenticate"
    assert not await Peer.objects.filter(address=client.address).aexists()


async def test_malformed_signature_is_invalid_signature_and_a_new_challenge_follows(connect):
    client = await connect(login=False)
    old = client.challenge
    err = await client.error("authenticate", {"challenge": old, "signature": "0x1234"}, code="invalid_signature")
    assert "signature" in err["error"]
    fresh = await client.recv()
    assert fresh["event"] == "challenge" and fresh["reqid"] != 0 and fresh["data"]["challenge"] != old
    # the fresh one works; the old one is gone
    await client.error("authenticate", {"challenge": old, "signature": sign(client.account, old)},
                       code="invalid_challenge")
    new = (await client.recv())["data"]["challenge"]
    await client.ok("authenticate", {"challenge": new, "signature": sign(client.account, new)})


async def test_unrecoverable_signature_is_invalid_signature(connect):
    client = await connect(login=False)
    await client.error("authenticate", {"challenge": client.challenge, "signature": "0x" + "00" * 65},
                       code="invalid_signature")


async def test_challenge_is_bound_to_its_connection(connect):
    a = await connect(login=False)
    b = await connect(login=False)
    await b.error("authenticate", {"challenge": a.challenge, "signature": sign(b.account, a.challenge)},
                  code="invalid_challenge")


async def test_challenge_cannot_be_used_twice(connect):
    client = await connect(login=False)
    signed = {"challenge": client.challenge, "signature": sign(client.account, client.challenge)}
    await client.ok("authenticate", signed)
    await client.error("authenticate", signed, code="already_authenticated")


@override_settings(CHALLENGE_TTL_SECONDS=0)
async def test_expired_challenge_is_refused(connect):
    client = await connect(login=False)
    await client.error("authenticate", {"challenge": client.challenge,
                                        "signature": sign(client.account, client.challenge)},
                       code="invalid_challenge")


async def test_five_failures_in_a_row_close_with_4403(connect):
    client = await connect(login=False)
    for attempt in range(5):
        await client.error("authenticate", {"challenge": "nope", "signature": "0x" + "00" * 65},
                           code="invalid_challenge")
        if attempt < 4:
            assert (await client.recv())["event"] == "challenge"
    output = await client.comm.receive_output(timeout=2)
    assert output == {"type": "websocket.close", "code": 4403}


async def test_disabled_peer_cannot_authenticate(connect):
    account = Account.create()
    await Peer.objects.acreate(address=account.address, is_disabled=True)
    client = await connect(account, login=False)
    await client.error("authenticate", {"challenge": client.challenge,
                                        "signature": sign(account, client.challenge)}, code="peer_disabled")


async def test_allowed_peers_restricts_who_may_authenticate(connect):
    allowed = Account.create()
    with override_settings(OPERATOR_ALLOWED_PEERS=[allowed.address.lower()]):
        stranger = await connect(login=False)
        await stranger.error("authenticate", {"challenge": stranger.challenge,
                                              "signature": sign(stranger.account, stranger.challenge)},
                             code="peer_disabled")
        await connect(allowed)  # logs in


async def test_the_operator_identity_comes_from_operator_private_key_when_set(connect, settings):
    from channels_app.identity import operator_keys

    key = Account.create()
    settings.OPERATOR_PRIVATE_KEY = key.key.to_0x_hex()
    operator_keys.cache_clear()
    try:
        client = await connect(login=False)
        assert client.greeting[1]["data"]["address"] == key.address
    finally:
        operator_keys.cache_clear()


async def test_the_signature_is_checked_on_the_event_loop_and_the_admission_on_a_database_thread(connect, monkeypatch):
    """The hashing and recovery call into C a dozen times; on a database thread each call let the interpreter lock go
    and took it back against the event loop (bench/RESULTS.md). The thread does the lock-out check and admission."""
    import threading

    from channels_app.services import auth

    threads = {}
    for name in ("recover_signer", "admit_peer"):
        def recording(*args, _real=getattr(auth, name), _name=name, **kwargs):
            threads[_name] = threading.current_thread()
            return _real(*args, **kwargs)
        monkeypatch.setattr(auth, name, recording)
    client = await connect(login=False)
    await client.ok("authenticate", {"challenge": client.challenge, "signature": sign(client.account, client.challenge)})
    assert threads["recover_signer"] is threading.main_thread()
    assert threads["admit_peer"] is not threading.main_thread()
