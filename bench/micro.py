"""What each piece of a trade request costs the server process, measured alone (µs per call, best of 5 runs).

The end-to-end benchmark (bench/harness.py) says how fast the whole is; this says where a trade's CPU goes in the
Daphne process, so each candidate change is judged by what it can save before it is made (bench/RESULTS.md):
JSON decoding and encoding (the stdlib as used, and orjson), the validation of a record_trade frame (the pydantic
schema), the request log line, the hop to a database thread and back, rendering a trade's notifications, and
one channel-layer send (in memory, and Redis when REDIS_URL is set).

    .venv/bin/python -m bench.micro     (bench/requirements.txt installed; REDIS_URL for the Redis layer)
"""
import asyncio
import io
import json
import logging
import os
import time
import timeit
from decimal import Decimal

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "operatorapi.settings")
os.environ.setdefault("OPERATOR_DEV_KEYS", "true")

import django  # noqa: E402

django.setup()

from asgiref.sync import SyncToAsync  # noqa: E402
from channels.layers import get_channel_layer  # noqa: E402

from channels_app.accounting import Book  # noqa: E402
from channels_app.notices import ChannelNotice, PositionNotice, StreamAction  # noqa: E402
from channels_app.risk import MarginZone, Zones  # noqa: E402
from channels_app.values import ChannelView, Margins, Party, PositionView  # noqa: E402
from operatorapi import schemas  # noqa: E402
from operatorapi.dbthreads import _executors  # noqa: E402
from operatorapi.events import Event  # noqa: E402
from operatorapi.payloads import notification_frame  # noqa: E402

CHANNEL_ID = "0x" + "ab" * 32
FRAME = {"event": "record_trade", "reqid": 41, "data": {
    "channel_id": CHANNEL_ID, "external_id": "fill-000123", "market": "ETH/USD", "direction": "buy",
    "amount": "12.34", "price": "100.25", "executed_at": int(time.time())}}
TEXT = json.dumps(FRAME)


def per_call(func, number=2000) -> float:
    """µs per call, the best of 5 runs."""
    return min(timeit.repeat(func, number=number, repeat=5)) / number * 1e6


def notices():
    position = PositionView(1, CHANNEL_ID, "ETH/USD", "open", Book(Decimal("12.34"), Decimal("1237.085")),
                            Decimal("100.25"))
    parties = (("0x" + "11" * 20, "Initiator"), ("0x" + "22" * 20, "Responder"))
    channel = ChannelView(CHANNEL_ID, "opened", Party(parties[0][0]), Party(parties[1][0]), Decimal("1000"),
                          Margins(Decimal("1000"), Decimal("1000")), Zones(MarginZone.GREEN, MarginZone.GREEN))
    return [PositionNotice(position, parties), ChannelNotice(StreamAction.MARGIN_UPDATED, channel)]


def render(trade_notices):
    for notice in trade_notices:
        for _, role in notice.recipients:
            notification_frame(notice, role)


async def hop_and_layer(results: dict) -> None:
    hop = SyncToAsync(lambda: None, thread_sensitive=False, executor=_executors()[0])
    for _ in range(200):
        await hop()
    started = time.perf_counter()
    for _ in range(2000):
        await hop()
    results["hop to a database thread and back (no-op)"] = (time.perf_counter() - started) / 2000 * 1e6
    layer = get_channel_layer()
    name = await layer.new_channel()
    await layer.group_add("bench-micro", name)
    message = {"type": "notify", "frames": [notification_frame(n, "Initiator") for n in notices()]}
    started = time.perf_counter()
    for _ in range(500):
        await layer.group_send("bench-micro", message)
        await layer.receive(name)
    results[f"group_send + receive, {type(layer).__name__}"] = (time.perf_counter() - started) / 500 * 1e6


def main():
    import orjson

    results = {}
    results["json.loads of a record_trade frame (parse_float=Decimal)"] = per_call(
        lambda: json.loads(TEXT, parse_float=Decimal))
    results["orjson.loads of the same"] = per_call(lambda: orjson.loads(TEXT))
    frame = json.loads(TEXT)
    results["schemas: reqid, event and data of record_trade (pydantic)"] = per_call(
        lambda: schemas.parse_data(schemas.parse_event(frame), frame))
    data = schemas.parse_data(Event.RECORD_TRADE, frame)
    results["TradeFields.to_domain"] = per_call(data.to_domain)
    trade_notices = notices()
    results["render a trade's 4 notification frames (payloads)"] = per_call(lambda: render(trade_notices))
    rendered = notification_frame(trade_notices[0], "Initiator")
    results["json.dumps of a position_notification (compact, UTF-8)"] = per_call(
        lambda: json.dumps(rendered, separators=(",", ":"), ensure_ascii=False))
    results["orjson.dumps of the same (as the consumer does)"] = per_call(lambda: orjson.dumps(rendered).decode())
    logger = logging.getLogger("operatorapi.requests")
    handler = logging.StreamHandler(io.StringIO())  # the configured formatter, to a string instead of stderr
    handler.setFormatter(logging.getLogger().handlers[0].formatter)
    logger.handlers, logger.propagate = [handler], False
    extra = {"event": "record_trade", "reqid": 41, "peer": "0x" + "11" * 20, "client": "127.0.0.1:5555",
             "outcome": "ok", "ms": 1.234}
    results["the request log line (JSON formatter)"] = per_call(lambda: logger.info("request", extra=extra))
    asyncio.run(hop_and_layer(results))
    width = max(map(len, results))
    for name, micros in results.items():
        print(f"{name:<{width}}  {micros:8.1f} µs")


if __name__ == "__main__":
    main()
