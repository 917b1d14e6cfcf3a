"""Graceful shutdown: SIGTERM drains a Daphne process instead of cutting it off.

Daphne's own handling stops the reactor at once and cancels every consumer: a request whose transaction was
running still commits (its database thread runs to the end) but its reply is lost, and every connection drops
without a close frame. Here the first SIGTERM (or SIGINT):

1. marks the process as draining: ``/healthz`` answers 503 (load balancers stop sending), a new WebSocket is closed
   at once;
2. closes every connection as soon as it has answered the request it is handling; a frame arriving after that
   close is not processed, so no request is half done: answered, or not done at all;
3. stops the reactor when every connection is gone, or after ``SHUTDOWN_GRACE_SECONDS``; a second signal stops it
   at once.

Both closes are 4503 (Autobahn lets an application close only with 1000 or 3000-4999, so not 1001 / 1012; 4503
follows this server's 4403 / 4408 / 4429; Daphne sends no close reason).

Only in a Daphne process (Twisted's reactor running on the main thread): tests and other servers keep their own
signal handling.
"""
import asyncio
import logging
import signal
import sys
import threading
import weakref

from django.conf import settings

logger = logging.getLogger(__name__)

CLOSE_CODE = 4503  # shutting down: reconnect (to another process)

_connections = weakref.WeakSet()  # this process's live consumers
_state = {"installed": False, "draining": False}


def draining() -> bool:
    return _state["draining"]


def register(consumer) -> None:
    _connections.add(consumer)


def unregister(consumer) -> None:
    _connections.discard(consumer)


def install_once() -> None:
    """Take SIGTERM and SIGINT over from Twisted (called on the first request, when the reactor runs)."""
    if _state["installed"]:
        return
    _state["installed"] = True
    reactor = sys.modules.get("twisted.internet.reactor")
    if reactor is None or not reactor.running or threading.current_thread() is not threading.main_thread():
        return
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, _on_signal, reactor, loop)


def _on_signal(reactor, loop) -> None:
    if _state["draining"]:
        logger.warning("second stop signal: stopping now")
        reactor.stop()
        return
    _state["draining"] = True
    logger.info("stop signal: draining %d connection(s), up to %g s", len(_connections),
                settings.SHUTDOWN_GRACE_SECONDS)
    for consumer in list(_connections):
        consumer.drain()
    loop.create_task(_stop_when_drained(reactor, loop))


async def _stop_when_drained(reactor, loop) -> None:
    deadline = loop.time() + settings.SHUTDOWN_GRACE_SECONDS
    while _connections and loop.time() < deadline:
        await asyncio.sleep(0.05)
    if _connections:
        logger.warning("grace period over: stopping with %d connection(s) open", len(_connections))
    else:
        logger.info("drained: stopping")
    reactor.stop()


class ShutdownMiddleware:
    """ASGI middleware: installs the signal handlers on the first request (HTTP or WebSocket)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        install_once()
        return await self.app(scope, receive, send)
