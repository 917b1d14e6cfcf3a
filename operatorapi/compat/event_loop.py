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
    """The running event loop that this thread is doing work for (or runs: the trade path on the loop,
    channels_app/aiodb.py), or None (admin, commands, tests)."""
    loop = getattr(SyncToAsync.threadlocal, "main_event_loop", None)
    if loop is not None and loop.is_running():
        return loop
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
