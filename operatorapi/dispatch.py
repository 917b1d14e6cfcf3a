"""A consumer's dispatch and disconnect without Channels' database hops.

Channels' ``AsyncConsumer.dispatch`` closes Django's old database connections before every message it handles
(``aclose_old_connections``: a hop to asgiref's one sync thread, shared by every consumer of the process). A trade is
three such messages (the request, then each party's notifications), so three hops of about 0.12 ms each, one at a
time for the whole process (bench/RESULTS.md). The operator's consumers never use a database connection on the event
loop: every database call runs on ``operatorapi.dbthreads``, which gives its connections back itself. So they skip
it, and the hop Channels makes once more when a connection ends (``websocket_disconnect``): 3% of the process's
time in an authentication handshake (bench/RESULTS.md).
"""
from channels.consumer import get_handler_name
from channels.exceptions import StopConsumer


class NoDatabaseDispatchMixin:
    async def dispatch(self, message):
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def websocket_disconnect(self, message):
        """Channels' own (leave the consumer's groups, ``disconnect``, stop) without its ``aclose_old_connections``."""
        for group in self.groups:
            await self.channel_layer.group_discard(group, self.channel_name)
        await self.disconnect(message["code"])
        raise StopConsumer()
