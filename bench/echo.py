"""The baseline: a bare Channels consumer that sends every text frame straight back.

Served on the same Daphne as the operator (at /bench/echo, only with BENCH_ECHO=1), so the benchmark can say
what share of the stack's own ceiling each operator figure reaches.
"""
from channels.generic.websocket import AsyncWebsocketConsumer


class EchoConsumer(AsyncWebsocketConsumer):
    async def receive(self, text_data=None, bytes_data=None):
        await self.send(text_data=text_data, bytes_data=bytes_data)
