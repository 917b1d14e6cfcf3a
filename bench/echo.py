"""The baselines: a bare Channels consumer that sends every text frame straight back (/bench/echo), the same without
Channels' per-message database hop (/bench/echo-direct), and one that sends a trade's frames with no database work
(/bench/ceiling/<pair>/<side>).

Served on the same Daphne as the operator (only with BENCH_ECHO=1), so the benchmark can say what share of the
stack's own ceiling each operator figure reaches.
"""
import json

from channels.generic.websocket import AsyncWebsocketConsumer

from operatorapi.dispatch import NoDatabaseDispatchMixin


class EchoConsumer(AsyncWebsocketConsumer):
    async def receive(self, text_data=None, bytes_data=None):
        await self.send(text_data=text_data, bytes_data=bytes_data)


class DirectEchoConsumer(NoDatabaseDispatchMixin, EchoConsumer):
    """The echo without Channels' hop to asgiref's thread before every message (``aclose_old_connections`` in
    ``AsyncConsumer.dispatch``), which the operator's consumers skip: the bare echo's cost less that hop. About 0.15 of
    its 0.26 ms of CPU a message on this machine (bench/RESULTS.md), and the part that varies most with the host."""


class CeilingConsumer(NoDatabaseDispatchMixin, AsyncWebsocketConsumer):
    """A trade's frames with no database at all: the reply, then one channel-layer message to each party of the
    pair carrying its two notifications (a position_notification and a marginUpdated), as the operator sends them
    (operatorapi/publisher.py), dispatched as the operator's consumer dispatches (operatorapi/dispatch.py). What the
    trade path could reach if its database work cost nothing. The echo stays Channels' bare consumer."""

    async def connect(self):
        kwargs = self.scope["url_route"]["kwargs"]
        self.pair, self.side = kwargs["pair"], kwargs["side"]
        await self.channel_layer.group_add(f"bench-ceiling.{self.pair}.{self.side}", self.channel_name)
        await self.accept()

    async def receive(self, text_data=None, bytes_data=None):
        frame = json.loads(text_data)
        data = frame["data"]
        await self.send(text_data=json.dumps({"event": "record_trade", "reqid": frame["reqid"], "data": {
            "channel_id": data["channel_id"], "external_id": data["external_id"]}}))
        position = {"event": "position_notification", "data": {
            "id": 1, "channel_id": data["channel_id"], "market": data["market"], "direction": data["direction"],
            "amount": data["amount"], "cost": data["price"], "market_value": data["price"], "pnl": "0",
            "realized_pnl": "0", "mark_price": data["price"], "status": "open"}}
        margin = {"event": "stream_notification", "data": {
            "action": "marginUpdated", "channel_id": data["channel_id"], "channel_status": "opened",
            "my_role": "Initiator", "peer": {"address": "0x" + "00" * 20}, "margin_deposit": "1000",
            "initiator_margin_balance": "1000", "follower_margin_balance": "1000",
            "initiator_margin_zone": "green", "follower_margin_zone": "green"}}
        for side in ("0", "1"):
            await self.channel_layer.group_send(f"bench-ceiling.{self.pair}.{side}",
                                                {"type": "notify", "frames": [position, margin]})

    async def notify(self, message):
        for frame in message["frames"]:
            await self.send(text_data=json.dumps({**frame, "reqid": 9000}))
