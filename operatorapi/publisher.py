"""Committed notices to the connections that must hear them: the domain's outbox publisher (``NOTICE_PUBLISHER``).

Each peer has a channel-layer group; a connection joins it on ``subscribe_notifications``. A transaction's notices
become one channel-layer message per peer (its frames in order), so a trade's four notifications are two
publishes. ``group_send`` is at-most-once: the database is the record, and clients re-read it with ``positions``
after a reconnect.
"""
import asyncio
import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from channels_app.notices import PeerDisabledNotice
from operatorapi.compat.event_loop import server_loop
from operatorapi.payloads import notification_frame

logger = logging.getLogger(__name__)

# The consumer methods that receive a group's messages (Channels maps "type" to a method name).
NOTIFY_TYPE = "notify"
DISCONNECT_TYPE = "peer_disabled"


def peer_group(address: str) -> str:
    """A peer's subscribed connections: notifications."""
    return f"peer.{address.lower()}"


def peer_control_group(address: str) -> str:
    """All of a peer's authenticated connections, subscribed or not: control messages."""
    return f"peer-control.{address.lower()}"


def publish(notices: list) -> None:
    """Render ``notices`` for their recipients and send them, in order (called after commit)."""
    messages: dict[str, dict] = {}  # group -> message, in the order first needed
    for notice in notices:
        if isinstance(notice, PeerDisabledNotice):
            messages.setdefault(peer_control_group(notice.address), {"type": DISCONNECT_TYPE})
            continue
        for address, role in notice.recipients:
            message = messages.setdefault(peer_group(address), {"type": NOTIFY_TYPE, "frames": []})
            message["frames"].append(notification_frame(notice, role))
    loop = server_loop()
    if loop is None:  # admin, commands, tests: no server loop to hand over to
        async_to_sync(_send)(messages)
        return
    # On the server: hand the messages to the event loop and return, so the database thread is free at once (on
    # the loop itself, the reply goes out before they do). Order holds: a channel's transactions run on one thread,
    # or on the loop one at a time (``dbthreads.in_turn``), so their outboxes arrive in commit order, and the loop
    # starts them in that order.
    loop.call_soon_threadsafe(_start_sending, messages)


_sending: set[asyncio.Task] = set()  # strong references until done (the loop keeps only weak ones)


def _start_sending(messages: dict[str, dict]) -> None:
    task = asyncio.get_running_loop().create_task(_send(messages))
    _sending.add(task)
    task.add_done_callback(_sending.discard)


async def _send(messages: dict[str, dict]) -> None:
    layer = get_channel_layer()
    failed = 0
    for group, message in messages.items():
        try:
            await layer.group_send(group, message)
        except Exception:  # the state committed: a layer outage costs notifications, never the request
            failed += len(message.get("frames", ())) or 1
    if failed:
        logger.warning("channel layer unavailable: %d notification(s) not delivered", failed)
