"""Committed notices to the connections that must hear them: the domain's outbox publisher (``NOTICE_PUBLISHER``).

Each peer has a channel-layer group; a connection joins it on ``subscribe_notifications``. A transaction's notices
become one channel-layer message per peer (its frames in order), so a trade's four notifications are two messages;
the loop's one sender sends what is pending together (on Redis one pipelined round trip). ``group_send`` is
at-most-once: the database is the record, and clients re-read it with ``positions`` after a reconnect. A disabled
peer's connections are told one by one, each on its own channel (no group to join at sign-in: that was two Redis
round trips per authentication).
"""
import asyncio
import logging
import weakref

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
        async_to_sync(_send)(list(messages.items()))
        return
    # On the server: hand the messages to the event loop and return, so the database thread is free at once (on
    # the loop itself, the reply goes out before they do). Order holds: a channel's transactions run on one thread,
    # or on the loop one at a time (``dbthreads.in_turn``), so their outboxes arrive in commit order, and the loop's
    # one sender sends them in that order.
    loop.call_soon_threadsafe(_hand_over, messages)


class _Sender:
    """A loop's one sender: what was handed over meanwhile goes out together, in order (``_send``). One send at a
    time per transaction was one Redis round trip per recipient, each behind channels-redis' one lock: at a thousand
    trades a second they fell behind for good (bench/RESULTS.md)."""

    def __init__(self):
        self.pending: list[tuple[tuple[str, str], dict]] = []
        self.task: asyncio.Task | None = None

    def hand_over(self, messages: dict) -> None:
        self.pending.extend(messages.items())
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self.run())

    async def run(self) -> None:
        try:
            while self.pending:
                batch, self.pending = self.pending, []
                await _send(batch)
        finally:
            self.task = None


_senders: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Sender]" = weakref.WeakKeyDictionary()


def _hand_over(messages: dict) -> None:
    loop = asyncio.get_running_loop()
    sender = _senders.get(loop)
    if sender is None:
        sender = _senders[loop] = _Sender()
    sender.hand_over(messages)


async def _send(batch: list[tuple[tuple[str, str], dict]]) -> None:
    """``batch`` ((GROUP or CONNECTION, name), message) sent in order: in one round trip where the layer can
    (``send_many``, operatorapi/compat/redis_pubsub.py), else one by one."""
    layer = get_channel_layer()
    send_many = getattr(layer, "send_many", None)
    failed = 0
    if send_many is not None:
        try:
            await send_many([(kind == GROUP, name, message) for (kind, name), message in batch])
        except Exception:  # the state committed: a layer outage costs notifications, never the request
            failed = sum(len(message.get("frames", ())) or 1 for _, message in batch)
    else:
        for (kind, name), message in batch:
            try:
                await (layer.group_send if kind == GROUP else layer.send)(name, message)
            except Exception:
                failed += len(message.get("frames", ())) or 1
    if failed:
        logger.warning("channel layer unavailable: %d notification(s) not delivered", failed)
