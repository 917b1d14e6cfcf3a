"""Autobahn's debug line of each new WebSocket connection, formatted only if a debug line is written.

``WebSocketProtocol._connectionMade`` passes ``pformat(<the connection's options>)`` to ``log.debug`` on every
connection, so some forty options are pretty-printed whatever the log level: 6% of a Daphne process's time per
authentication handshake (bench/RESULTS.md). ``install`` gives the module a ``pformat`` that hands that call (the
module's only one with a list) an object formatting itself when the line is written; the module's other calls
(``Timings.__str__``, a client's handshake line: dicts) get pprint's string as before.
"""
import pprint

from autobahn.websocket import protocol

from operatorapi.compat import require

require("autobahn", "26.10")


class _WhenWritten:
    """``pprint.pformat(value)``, computed when the log line is formatted."""

    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value

    def __str__(self) -> str:
        return pprint.pformat(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)


def _pformat(value, *args, **kwargs):
    if isinstance(value, list) and not args and not kwargs:
        return _WhenWritten(value)
    return pprint.pformat(value, *args, **kwargs)


def install() -> None:
    """For the server process (operatorapi/asgi.py); idempotent."""
    protocol.pformat = _pformat
