"""docs/protocol.md sections 1-2: frames, reqid, errors; no bad input closes the connection or changes state."""
import asyncio
import json

import pytest

from channels_app.models import Channel, Peer
from tests.client import trade

pytestmark = pytest.mark.django_db(transaction=True)


async def assert_error(client, code, reqid=0):
    # notifications of earlier requests may still arrive first; reply() sets them aside.
    frame = await client.reply(reqid, timeout=10)  # generous: big frames on a busy 2-core CI machine
    assert frame["event"] == "error", frame
    assert frame["data"]["code"] == code and frame["data"]["error"], frame
    return frame["data"]


async def still_usable(client):
    frame = await client.request("positions", {"channel_id": "0x" + "00" * 32})
    assert frame["data"]["code"] in ("channel_not_found", "not_authenticated")


@pytest.mark.parametrize(
    "raw, code",
    [
        ("{not json", "invalid_json"),
        ('{"event": "positions", "reqid": 1', "invalid_json"),
        ('{"event": "positions", "reqid": NaN}', "invalid_json"),
        ("[" * 2_200_000 + "]" * 2_200_000, "message_too_large"),  # over even the batch limit
        # deep nesting: refused without recursing through the C stack (a crash of the whole process otherwise)
        ("[" * 100000 + "]" * 100000, "invalid_json"),
        ("[" * 500 + "]" * 500, "invalid_message"),  # moderate nesting parses: not an object
        ("[1, 2]", "invalid_message"),
        ('"positions"', "invalid_message"),
        ("null", "invalid_message"),
        ('{"event": "positions"}', "invalid_message"),  # no reqid
        ('{"event": "positions", "reqid": "7"}', "invalid_message"),
        ('{"event": "positions", "reqid": 1.0}', "invalid_message"),
        ('{"event": "positions", "reqid": true}', "invalid_message"),
        ('{"event": "positions", "reqid": -1}', "invalid_message"),
        ('{"event": "positions", "reqid": 9223372036854775808}', "invalid_message"),
    ],
)
async def test_malformed_frames_get_an_error_with_reqid_0_and_the_connection_stays_open(connect, raw, code):
    client = await connect()
    await client.send_raw(text=raw)
    await assert_error(client, code)
    await still_usable(client)


async def test_reqid_is_echoed_even_on_errors_once_it_could_be_read(connect):
    client = await connect()
    await client.send_raw(text=json.dumps({"event": "nope", "reqid": 2**63 - 1}))
    await assert_error(client, "unknown_event", reqid=2**63 - 1)
    await client.send_raw(text=json.dumps({"reqid": 5}))
    await assert_error(client, "invalid_message", reqid=5)
    await client.send_raw(text=json.dumps({"event": 12, "reqid": 6}))
    await assert_error(client, "invalid_message", reqid=6)
    await client.send_raw(text=json.dumps({"event": "version", "reqid": 7}))  # a server event is no request
    await assert_error(client, "unknown_event", reqid=7)


async def test_binary_frames_are_refused(connect):
    client = await connect()
    await client.send_raw(binary=b'{"event": "positions", "reqid": 1}')
    error = await assert_error(client, "invalid_message")
    assert "binary" in error["error"]
    await still_usable(client)


async def test_frames_over_max_frame_bytes_are_refused(connect, settings):
    settings.MAX_FRAME_BYTES = 1024
    client = await connect()
    await client.send_raw(text=json.dumps({"event": "positions", "reqid": 3, "data": {"pad": "é" * 600}}))
    # 1200 bytes in UTF-8, though 600 characters; parsed (the peer is authenticated) so the reqid is known
    await assert_error(client, "message_too_large", reqid=3)
    await still_usable(client)


async def test_only_an_authenticated_peers_record_trades_may_exceed_max_frame_bytes(pair, connect, settings):
    alice, bob, channel_id = pair
    settings.MAX_FRAME_BYTES = 2048
    settings.MAX_BATCH_FRAME_BYTES = 8192
    trades = [{k: v for k, v in trade(channel_id, external_id=f"t{i}").items() if k != "channel_id"}
              for i in range(30)]  # about 3.5 KB
    reply = await alice.request("record_trades", {"channel_id": channel_id, "trades": trades})
    assert reply["event"] == "record_trades" and len(reply["data"]["external_ids"]) == 30
    await alice.error("positions", {"channel_id": channel_id, "pad": "x" * 3000}, code="message_too_large")
    huge = [{**t, "external_id": f"h{i}"} for i, t in enumerate(trades * 3)]
    await alice.send_raw(text=json.dumps({"event": "record_trades", "reqid": 5,
                                          "data": {"channel_id": channel_id, "trades": huge}}))
    await assert_error(alice, "message_too_large")  # over even the batch limit: not parsed, reqid 0
    stranger = await connect(login=False)
    await stranger.send_raw(text=json.dumps({"event": "record_trades", "reqid": 6,
                                             "data": {"channel_id": channel_id, "trades": trades}}))
    await assert_error(stranger, "message_too_large")
    await still_usable(stranger)


async def test_unknown_extra_properties_are_ignored(pair):
    alice, bob, channel_id = pair
    reply = await alice.request("record_trade", {**trade(channel_id), "note": "extra", "nested": {"a": [1]}})
    assert reply["event"] == "record_trade"
    await alice.send_raw(text=json.dumps({"event": "positions", "reqid": 12, "extra": True,
                                          "data": {"channel_id": channel_id, "foo": 1}}))
    assert (await alice.reply(12))["event"] == "positions"


async def test_data_of_the_wrong_type_is_invalid_message(connect):
    client = await connect()
    for data in ([], "x", 5, None):
        error = await client.error("open_channel", data, code="invalid_message")
        assert error["error"].startswith("data")
    assert not await Channel.objects.aexists()


async def test_requests_are_answered_in_order(pair):
    alice, bob, channel_id = pair
    reqids = [await alice.send("record_trade", trade(channel_id, external_id=str(i), amount="1"))
              for i in range(20)]
    answered = [(await alice.reply(reqid))["reqid"] for reqid in reqids]
    assert answered == reqids


async def test_an_unexpected_failure_is_internal_error_with_a_reference_and_no_traceback(pair, monkeypatch, caplog):
    alice, bob, channel_id = pair

    def explode(**kwargs):
        raise RuntimeError("database on fire: secret=hunter2")

    monkeypatch.setattr("channels_app.selectors.live_positions", explode)
    error = await alice.error("positions", {"channel_id": channel_id}, code="internal_error")
    reference = error["error"].rsplit(" ", 1)[1]
    assert "hunter2" not in error["error"] and "Traceback" not in error["error"]
    assert reference in caplog.text and "database on fire" in caplog.text  # logged with the same reference
    monkeypatch.undo()
    await alice.ok("positions", {"channel_id": channel_id})


async def test_subscribing_twice_is_harmless_and_sends_no_reply(pair, connect):
    alice, bob, channel_id = pair
    await alice.subscribe()
    await alice.expect_nothing()
    await bob.record(channel_id, external_id="1")
    first = await alice.notification("position_notification")
    assert first["reqid"] == 9000
    await alice.expect_nothing()  # one notification, not two
    assert await Peer.objects.acount() == 2


async def test_requests_over_the_rate_limit_get_rate_limited_and_sustained_abuse_closes(connect, settings):
    settings.RATE_LIMIT_PER_SECOND, settings.RATE_LIMIT_BURST, settings.RATE_LIMIT_CLOSE_AFTER = 1, 3, 4
    client = await connect(login=False)
    for _ in range(3):
        await client.error("positions", {"channel_id": "0x" + "00" * 32}, code="not_authenticated")
    limited = await client.error("positions", {"channel_id": "0x" + "00" * 32}, code="rate_limited")
    assert "per second" in limited["error"]
    for _ in range(3):
        await client.error("positions", {"channel_id": "0x" + "00" * 32}, code="rate_limited")
    await client.send("positions", {"channel_id": "0x" + "00" * 32})
    assert await client.comm.receive_output(timeout=2) == {"type": "websocket.close", "code": 4429}


async def test_the_rate_limit_refills_over_time(connect, settings):
    settings.RATE_LIMIT_PER_SECOND, settings.RATE_LIMIT_BURST = 20, 1
    client = await connect(login=False)
    await client.error("positions", {"channel_id": "0x" + "00" * 32}, code="not_authenticated")
    await client.error("positions", {"channel_id": "0x" + "00" * 32}, code="rate_limited")
    await asyncio.sleep(0.1)
    await client.error("positions", {"channel_id": "0x" + "00" * 32}, code="not_authenticated")
