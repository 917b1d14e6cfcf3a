"""Frame size limits on a real Daphne started as tests/e2e/servers.py starts it (operatorapi.serve).

Daphne has its own cap on a WebSocket message (1 MiB by default since daphne 4.2.2) and drops the connection past
it before the application sees the frame. operatorapi.serve sets it from the settings, above MAX_BATCH_FRAME_BYTES:
so a full batch with realistic fields (~1.47 MB) is booked, every frame between the application's limits and
Daphne's cap gets ``message_too_large`` with the connection left usable, and only past the cap is it dropped.
"""
import json
import random
import uuid

import pytest
from channels.db import database_sync_to_async
from django.conf import settings
from websockets.exceptions import ConnectionClosed

from channels_app.models import Trade
from operatorapi.schemas import MAX_BATCH_TRADES
from tests.client import EXECUTED_AT, NetworkClient

pytestmark = pytest.mark.e2e

MIB = 1024 * 1024
BATCH_TIMEOUT = 30  # booking 6,765 trades takes seconds on a busy 2-core machine


def frame_text(event: str, reqid: int, data: dict) -> str:
    return json.dumps({"event": event, "reqid": reqid, "data": data}, separators=(",", ":"))


def padded(event: str, reqid: int, data: dict, size: int) -> str:
    """A compact JSON frame of exactly ``size`` bytes: ``data`` and an extra ``pad`` property (ignored) filling up."""
    text = frame_text(event, reqid, {**data, "pad": "x" * (size - len(frame_text(event, reqid, {**data, "pad": ""})))})
    assert len(text.encode()) == size
    return text


def realistic_trades(count: int) -> list[dict]:
    rng = random.Random(6765)
    return [{
        "external_id": f"fill-2026-11-27-binance-ETHUSDT-{uuid.UUID(int=rng.getrandbits(128), version=4)}",
        "market": "ETH/USDT",
        "direction": ("buy", "sell")[i % 2],
        "amount": "12.345678901234567891",
        "price": f"{3400 + rng.randrange(100)}.{rng.randrange(10**18):018d}",
        "executed_at": EXECUTED_AT,
    } for i in range(count)]


@database_sync_to_async  # gives the connection back, so the test database can be dropped at the end
def trades_stored(channel_id: str) -> int:
    return Trade.objects.filter(channel__channel_id=channel_id).count()


async def error_of(client: NetworkClient, reqid: int) -> dict:
    frame = await client.recv(timeout=10)
    assert frame["event"] == "error" and frame["reqid"] == reqid, frame
    return frame["data"]


@pytest.fixture
async def brokers(daphne_server):
    """Alice and Bob, authenticated on a real Daphne, with an opened channel; -> (alice, bob, channel_id)."""
    host, port = daphne_server
    url = f"ws://{host}:{port}/"
    alice = await (await NetworkClient(url).connect()).login()
    bob = await (await NetworkClient(url).connect()).login()
    try:
        channel_id = await alice.open_channel(bob, deposit="1000000000")
        yield alice, bob, channel_id
    finally:
        await alice.close()
        await bob.close()


async def test_the_largest_batch_with_realistic_fields_is_booked(brokers):
    alice, _, channel_id = brokers
    trades = realistic_trades(MAX_BATCH_TRADES)
    text = frame_text("record_trades", 77, {"channel_id": channel_id, "trades": trades})
    assert 1.4 * MIB < len(text.encode()) < settings.MAX_BATCH_FRAME_BYTES  # ~1.47 MB: over Daphne's old 1 MiB

    await alice.send_raw(text=text)
    reply = await alice.reply(77, timeout=BATCH_TIMEOUT)
    assert reply["event"] == "record_trades", reply
    assert reply["data"]["external_ids"] == [t["external_id"] for t in trades]
    assert await trades_stored(channel_id) == MAX_BATCH_TRADES
    assert (await alice.positions(channel_id))["ETH/USDT"]["amount"] == "12.345678901234567891"  # 3383 buys, 3382 sells


async def test_a_batch_just_over_the_batch_limit_is_message_too_large_and_the_connection_stays(brokers):
    alice, _, channel_id = brokers
    data = {"channel_id": channel_id, "trades": realistic_trades(2)}
    await alice.send_raw(text=padded("record_trades", 5, data, settings.MAX_BATCH_FRAME_BYTES + 1))
    assert (await error_of(alice, 0))["code"] == "message_too_large"  # refused unparsed: reqid 0
    assert await alice.positions(channel_id) == {}  # nothing stored, and the connection answers

    await alice.send_raw(text=padded("record_trades", 6, data, settings.MAX_BATCH_FRAME_BYTES))  # at the limit
    assert len((await alice.reply(6, timeout=BATCH_TIMEOUT))["data"]["external_ids"]) == 2
    assert await trades_stored(channel_id) == 2


async def test_other_frames_over_the_frame_limit_are_message_too_large_under_and_over_1_mib(brokers, daphne_server):
    alice, _, channel_id = brokers
    for reqid, size in ((11, settings.MAX_FRAME_BYTES + 1), (12, MIB - 1), (13, MIB + 1), (14, 2 * MIB)):
        await alice.send_raw(text=padded("positions", reqid, {"channel_id": channel_id}, size))
        error = await error_of(alice, reqid)  # an authenticated peer's frame is read for its reqid
        assert error["code"] == "message_too_large", (size, error)
        assert await alice.positions(channel_id) == {}

    host, port = daphne_server  # before authentication nothing big is even parsed
    stranger = await NetworkClient(f"ws://{host}:{port}/").connect()
    try:
        for size in (settings.MAX_FRAME_BYTES + 1, 2 * MIB):
            await stranger.send_raw(text=padded("authenticate", 21, {}, size))
            assert (await error_of(stranger, 0))["code"] == "message_too_large"
        await stranger.login()
        assert (await stranger.ok("channels"))["data"] == {"channels": []}
    finally:
        await stranger.close()


async def test_daphnes_own_cap_comes_from_the_settings_and_past_it_the_connection_is_dropped(brokers):
    alice, _, channel_id = brokers
    cap = settings.DAPHNE_WEBSOCKET_MAX_MESSAGE_SIZE
    assert cap > settings.MAX_BATCH_FRAME_BYTES > MIB
    await alice.send_raw(text=padded("record_trades", 31, {"channel_id": channel_id, "trades": []}, cap))
    assert (await error_of(alice, 0))["code"] == "message_too_large"  # the application's answer, up to the cap
    assert await alice.positions(channel_id) == {}

    with pytest.raises(ConnectionClosed) as closed:  # past it Daphne drops the TCP connection: no close frame
        await alice.send_raw(text=padded("record_trades", 32, {"channel_id": channel_id, "trades": []}, cap + 1))
        await alice.recv(timeout=10)
    assert closed.value.rcvd is None
