"""docs/protocol.md section 4: opening, funding, closing channels; channel JWTs."""
import jwt
import pytest
from channels.db import database_sync_to_async
from django.test import AsyncClient
from eth_abi import encode
from eth_account import Account
from eth_utils import keccak

from channels_app.models import Channel
from channels_app.identity import operator_keys
from operatorapi.consumers import OperatorConsumer

pytestmark = pytest.mark.django_db(transaction=True)


def nitro_channel_id(initiator, responder, nonce):
    encoded = encode(["address[]", "uint64", "address", "uint48"],
                     [[initiator, responder], nonce, "0x" + "0" * 40, 86400])
    return "0x" + keccak(encoded).hex()


async def test_open_channel_replies_with_the_nitro_channel_id_and_both_parties_hear_channel_opened(connect):
    alice = await (await connect()).subscribe()
    bob = await (await connect()).subscribe()
    reply = await alice.ok("open_channel", {"peer": {"address": bob.address.lower(), "name": "Bob",
                                                     "url": "wss://bob.example/ws"}, "margin_deposit": "1500.50"})
    channel_id = reply["data"]["channel_id"]
    assert channel_id == nitro_channel_id(alice.address, bob.address, 0)
    assert await bob.accept_channel(alice, "1500.5") == channel_id  # consent: the same deposit, written otherwise

    seen_by_alice = await alice.notification("stream_notification", action="channelOpened", channel_status="opened")
    assert seen_by_alice["reqid"] == 9000
    assert seen_by_alice["data"] == {
        "channel_id": channel_id, "action": "channelOpened", "channel_status": "opened", "my_role": "Initiator",
        "peer": {"address": bob.address, "name": "Bob", "url": "wss://bob.example/ws"},
        "margin_deposit": "1500.5", "initiator_margin_balance": "1500.5", "follower_margin_balance": "1500.5",
        "initiator_margin_zone": "green", "follower_margin_zone": "green",
    }
    seen_by_bob = await bob.notification("stream_notification", action="channelOpened", channel_status="opened")
    assert seen_by_bob["data"]["my_role"] == "Responder"
    assert seen_by_bob["data"]["peer"] == {"address": alice.address}
    channel = await Channel.objects.aget(channel_id=channel_id)
    assert channel.status == "opened"


async def test_each_new_channel_of_the_same_ordered_pair_takes_the_next_nonce(connect):
    alice, bob = await connect(), await connect()
    first = await alice.open_channel(bob)
    second = await alice.open_channel(bob)
    reverse = await bob.open_channel(alice)
    assert first == nitro_channel_id(alice.address, bob.address, 0)
    assert second == nitro_channel_id(alice.address, bob.address, 1)
    assert reverse == nitro_channel_id(bob.address, alice.address, 0)


@pytest.mark.parametrize(
    "data, code, field",
    [
        ({"peer": {"address": "0x1234"}, "margin_deposit": "10"}, "invalid_message", "data.peer.address"),
        ({"peer": {"address": "0x" + "1" * 40, "url": "ftp://x"}, "margin_deposit": "10"}, "invalid_message",
         "data.peer.url"),
        ({"peer": {"address": "0x" + "1" * 40, "name": "x" * 65}, "margin_deposit": "10"}, "invalid_message",
         "data.peer.name"),
        ({"peer": {"address": "0x" + "1" * 40}, "margin_deposit": "0"}, "invalid_decimal", "data.margin_deposit"),
        ({"peer": {"address": "0x" + "1" * 40}, "margin_deposit": "7" * 250}, "invalid_decimal",
         "data.margin_deposit"),  # more digits than the arithmetic's precision: refused, not an internal error
        ({"peer": {"address": "0x" + "1" * 40, "name": "Bob\u0000"}, "margin_deposit": "10"}, "invalid_message",
         "data.peer.name"),  # NUL: PostgreSQL cannot store it; refused alike on both databases
        ({"peer": {"address": "0x" + "1" * 40, "name": "Bob\r\nX-Injected: 1"}, "margin_deposit": "10"},
         "invalid_message", "data.peer.name"),
        ({"peer": {"address": "0x" + "1" * 40, "url": "https://bob.example/\u0000"}, "margin_deposit": "10"},
         "invalid_message", "data.peer.url"),
        ({"peer": {"address": "0x" + "1" * 40}, "margin_deposit": "-5"}, "invalid_decimal", "data.margin_deposit"),
        ({"peer": {"address": "0x" + "1" * 40}, "margin_deposit": "1e5"}, "invalid_decimal", "data.margin_deposit"),
        ({"peer": {"address": "0x" + "1" * 40}, "margin_deposit": 10}, "invalid_message", "data.margin_deposit"),
        ({"peer": {"address": "0x" + "1" * 40}}, "invalid_message", "data.margin_deposit"),
        ({"margin_deposit": "10"}, "invalid_message", "data.peer"),
    ],
)
async def test_open_channel_refuses_bad_input_and_creates_nothing(connect, data, code, field):
    alice = await connect()
    error = await alice.error("open_channel", data, code=code)
    assert error["error"].startswith(field)
    assert not await Channel.objects.aexists()
    await alice.ok("open_channel", {"peer": {"address": "0x" + "1" * 40}, "margin_deposit": "10"})  # still usable


async def test_cannot_open_a_channel_with_a_disabled_peer(connect):
    from channels_app.models import Peer

    alice = await connect()
    banned = Account.create()
    await Peer.objects.acreate(address=banned.address, is_disabled=True)
    await alice.error("open_channel", {"peer": {"address": banned.address}, "margin_deposit": "10"},
                      code="peer_disabled")
    assert not await Channel.objects.aexists()


async def test_cannot_open_a_channel_with_yourself(connect):
    alice = await connect()
    await alice.error("open_channel", {"peer": {"address": alice.address}, "margin_deposit": "10"},
                      code="invalid_message")


async def test_close_channel_needs_flat_positions_then_releases_and_notifies_both(pair):
    alice, bob, channel_id = pair
    await alice.record(channel_id, external_id="1", direction="buy", amount="1", price="100")
    error = await bob.error("close_channel", {"channel_id": channel_id}, code="open_positions")
    assert "ETH/USD" in error["error"]
    await alice.record(channel_id, external_id="2", direction="sell", amount="1", price="130")

    reply = await bob.ok("close_channel", {"channel_id": channel_id})
    assert reply["data"] == {"channel_id": channel_id}
    for client, role in ((alice, "Initiator"), (bob, "Responder")):
        closed = await client.notification("stream_notification", action="channelClosed")
        assert closed["data"]["channel_status"] == "closed"
        assert closed["data"]["my_role"] == role
        # the realized PnL of the flat position is released with the margins
        assert closed["data"]["initiator_margin_balance"] == "1030"
        assert closed["data"]["follower_margin_balance"] == "970"
    await alice.error("close_channel", {"channel_id": channel_id}, code="invalid_channel_state")
    await alice.error("record_trade", {"channel_id": channel_id, "external_id": "3", "market": "ETH/USD",
                                       "direction": "buy", "amount": "1", "price": "1", "executed_at": 1},
                      code="invalid_channel_state")
    await alice.error("channel_jwt", {"channel_id": channel_id}, code="invalid_channel_state")


async def test_channel_jwt_is_es256_with_the_documented_claims_and_verifies_with_the_served_jwks(pair):
    alice, bob, channel_id = pair
    token = (await bob.ok("channel_jwt", {"channel_id": channel_id}))["data"]["jwt"]
    response = await AsyncClient().get("/.well-known/jwks.json")
    assert response.status_code == 200
    (jwk,) = response.json()["keys"]
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "ES256" and header["kid"] == jwk["kid"]
    claims = jwt.decode(token, jwt.PyJWK(jwk).key, algorithms=["ES256"], audience="finex",
                        issuer=operator_keys().address,
                        options={"require": ["exp", "iat", "jti", "sub", "channel_id", "role", "counterparty"]})
    assert claims["sub"] == bob.address
    assert claims["channel_id"] == channel_id
    assert claims["role"] == "Responder"
    assert claims["counterparty"] == alice.address
    assert claims["exp"] - claims["iat"] == 3600
    other = (await bob.ok("channel_jwt", {"channel_id": channel_id}))["data"]["jwt"]
    assert jwt.decode(other, options={"verify_signature": False})["jti"] != claims["jti"]


async def test_an_outsider_gets_channel_not_found_for_every_event_on_someone_elses_channel(pair, connect):
    alice, bob, channel_id = pair
    await alice.record(channel_id, external_id="1", amount="1", price="100")
    mallory = await (await connect()).subscribe()
    missing = "0x" + "00" * 32
    requests = [
        ("positions", {"channel_id": channel_id}),
        ("channel_jwt", {"channel_id": channel_id}),
        ("close_channel", {"channel_id": channel_id}),
        ("record_trade", {"channel_id": channel_id, "external_id": "1", "market": "ETH/USD", "direction": "buy",
                          "amount": "1", "price": "100", "executed_at": 1}),
        ("request_settlement", {"channel_id": channel_id, "payment_method": "mock", "chain_id": 1,
                                "markets": ["ETH/USD"]}),
    ]
    for event, data in requests:
        real = await mallory.error(event, data, code="channel_not_found")
        absent = await mallory.error(event, {**data, "channel_id": missing}, code="channel_not_found")
        assert real == absent  # indistinguishable from a channel that does not exist
    await mallory.expect_nothing()
    channel = await Channel.objects.aget(channel_id=channel_id)
    assert channel.status == "opened"
    assert await database_sync_to_async(lambda: channel.trades.count())() == 1


async def test_a_peer_opening_with_an_unknown_address_creates_that_peer_who_can_later_log_in(connect):
    future_bob = Account.create()
    alice = await connect()
    channel_id = await alice.open_channel(type("P", (), {"address": future_bob.address})())
    bob = await connect(future_bob)
    positions = await bob.ok("positions", {"channel_id": channel_id})
    assert positions["data"] == {"channel_id": channel_id, "positions": []}


async def test_frames_are_compact_json_with_names_in_plain_utf8(connect):
    """The wire text itself: no spaces after separators, a non-ASCII name as its own characters (not ``\\u``
    escapes), key order as built; an integer beyond 64 bits, which orjson refuses, still encodes."""
    alice, bob = await connect(), await connect()
    channel_id = (await alice.ok("open_channel", {"peer": {"address": bob.address, "name": "Zürich Clearing ✓"},
                                                  "margin_deposit": "10"}))["data"]["channel_id"]
    reqid = await alice.send("channels", {})
    text = await alice._receive(3)
    assert text.startswith(f'{{"event":"channels","reqid":{reqid},"data":{{"channels":[{{"channel_id":"{channel_id}"')
    assert '"name":"Zürich Clearing ✓"' in text and ", " not in text and '": ' not in text
    assert await OperatorConsumer.encode_json({"n": 2**70, "s": "é"}) == '{"n":1180591620717411303424,"s":"é"}'
