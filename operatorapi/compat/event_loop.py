"""asgiref's reference to the server's event loop, as seen from a thread that ``SyncToAsync`` runs.

Notifications are published after commit on the database thread; handing them to the event loop lets that thread
go back to work at once. asgiref keeps the loop in ``SyncToAsync.threadlocal.main_event_loop`` (set for the thread
while it runs a call) and has no public accessor.
"""
import asyncio

from asgiref.sync import SyncToAsync

from operatorapi.compat import require

require("asgiref", "3.13")


def server_loop() -> asyncio.AbstractEventLoop | None:
    """The running event loop that this thread is doing work for, or None (admin, commands, tests)."""
    loop = getattr(SyncToAsync.threadlocal, "main_event_loop", None)
    return loop if loop is not None and loop.is_running() else None
