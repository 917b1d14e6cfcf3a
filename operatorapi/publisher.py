"""Committed notices to the connections that must hear them: the domain's outbox publisher (``NOTICE_PUBLISHER``).

Each peer has a channel-layer group; a connection joins it on ``subscribe_notifications``. A transaction's notices
become one channel-layer message per peer (its frames in order), so a trade's four notifications are two
publishes. ``group_send`` is at-most-once: the database is the record, and clients re-read it with ``positions``
after a reconnect. A disabled peer's connections are told one by one, each on its own channel (no group to join at
sign-in: that was two Redis round trips per authentication).
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
GROUP, CONNECTION = "group", "connection"  # whom a message goes to: a group, or one connection's channel


def peer_group(address: str) -> str:
    """A peer's subscribed connections: notifications."""
    return f"peer.{address.lower()}"


def publish(notices: list) -> None:
    """Render ``notices`` for their recipients and send them, in order (called after commit)."""
    # (GROUP or CONNECTION, its name) -> message, in the order first needed
    messages: dict[tuple[str, str], dict] = {}
    for notice in notices:
        if isinstance(notice, PeerDisabledNotice):  # to each connection itself: no group to join at sign-in
            for name in notice.channel_names:
                messages.setdefault((CONNECTION, name), {"type": DISCONNECT_TYPE})
            continue
        for address, role in notice.recipients:
            message = messages.setdefault((GROUP, peer_group(address)), {"type": NOTIFY_TYPE, "frames": []})
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


def _start_sending(messages: dict[tuple[str, str], dict]) -> None:
    task = asyncio.get_running_loop().create_task(_send(messages))
    _sending.add(task)
    task.add_done_callback(_sending.discard)


async def _send(messages: dict[tuple[str, str], dict]) -> None:
    layer = get_channel_layer()
    failed = 0
    for (kind, name), message in messages.items():
        try:
            await (layer.group_send if kind == GROUP else layer.send)(name, message)
        except Exception:  # the state committed: a layer outage costs notifications, never the request
            failed += len(message.get("frames", ())) or 1
    if failed:
        logger.warning("channel layer unavailable: %d notification(s) not delivered", failed)
