"""A consumer's dispatch without Channels' database hop.

Channels' ``AsyncConsumer.dispatch`` closes Django's old database connections before every message it handles
(``aclose_old_connections``: a hop to asgiref's one sync thread, shared by every consumer of the process). A trade is
three such messages (the request, then each party's notifications), so three hops of about 0.12 ms each, one at a
time for the whole process (bench/RESULTS.md). The operator's consumers never use a database connection on the event
loop: every database call runs on ``operatorapi.dbthreads``, which gives its connections back itself. So they skip
it. (Channels still closes them once when a connection ends, in ``websocket_disconnect``.)
"""
from channels.consumer import get_handler_name


class NoDatabaseDispatchMixin:
    async def dispatch(self, message):
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)
