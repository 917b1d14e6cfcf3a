"""The presence heartbeat: one task per server process renews the lease of all its connections' presence rows.

Every ``PRESENCE_HEARTBEAT_SECONDS`` it calls ``presence.renew(server=presence.SERVER)`` (one UPDATE, and now and
then the sweep of expired rows) on a database thread. A failed renewal (database away) is a warning and the task goes
on: the rows stay live for ``PRESENCE_LEASE_SECONDS`` after the last renewal that worked, so a short outage loses
nothing. If this process dies, nothing renews its rows and they stop counting within the lease.

Started by the consumer on each connection (``ensure_running``), once per event loop: Daphne has one loop per
process; tests (one loop per test) get a task each, cancelled with their loop when it closes.
"""
import asyncio
import logging

from django.conf import settings

from channels_app.services import presence
from operatorapi import background
from operatorapi.dbthreads import on_thread_of

logger = logging.getLogger(__name__)


def ensure_running() -> asyncio.Task:
    """Start the heartbeat on the running loop unless it runs already; the task."""
    return background.ensure("presence-heartbeat", _beat)


async def _beat() -> None:
    while True:
        await asyncio.sleep(settings.PRESENCE_HEARTBEAT_SECONDS)
        try:
            await on_thread_of(presence.SERVER, presence.renew)(server=presence.SERVER)
        except Exception:  # never dies: the next beat tries again
            logger.warning("presence heartbeat: renewing the leases failed; next try in %g s",
                           settings.PRESENCE_HEARTBEAT_SECONDS, exc_info=True)
