"""The one place notifications are built and broadcast.

Each peer has a channel-layer group; a connection joins it on ``subscribe_notifications``. Payloads are built
per recipient (every figure from that peer's side) and sent only after the transaction that changed the state
commits, so nobody hears of a change that was rolled back. ``group_send`` is at-most-once: the database is the
record, and clients re-read it with ``positions`` after a reconnect.
"""
import asyncio
import logging
from decimal import Decimal

from asgiref.sync import SyncToAsync, async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

from channels_app import accounting
from channels_app.events import Event, StreamAction
from channels_app.models import INITIATOR, RESPONDER, Channel, Peer, Position
from channels_app.money import fmt
from channels_app.valuation import balances, position_mark

logger = logging.getLogger(__name__)

# The consumer method that receives a notification from the group (Channels maps "type" to a method name).
NOTIFY_TYPE = "notify"


# Consumer method that closes a connection whose peer back office disabled.
DISCONNECT_TYPE = "peer_disabled"


def peer_group(address: str) -> str:
    """A peer's subscribed connections: notifications."""
    return f"peer.{address.lower()}"


def peer_control_group(address: str) -> str:
    """All of a peer's authenticated connections, subscribed or not: control messages."""
    return f"peer-control.{address.lower()}"


def disconnect_peer_on_commit(address: str) -> None:
    """Close every live connection of ``address`` (on any process) once the transaction commits."""
    def send():
        async_to_sync(get_channel_layer().group_send)(peer_control_group(address), {"type": DISCONNECT_TYPE})

    transaction.on_commit(send, robust=True)


class _Outbox:
    """The notifications of one transaction, published once it commits, in one hop to the event loop and one
    channel-layer message per peer (its frames in order): a trade's four notifications are two publishes.
    """

    def __init__(self):
        self.frames: dict[str, list[dict]] = {}  # peer address -> frames, in the order they were queued

    def add(self, address: str, event: Event, data: dict) -> None:
        self.frames.setdefault(address, []).append({"event": str(event), "data": data})

    def __call__(self):
        loop = getattr(SyncToAsync.threadlocal, "main_event_loop", None)
        if loop is None or not loop.is_running():  # admin, commands, tests: no server loop to hand over to
            async_to_sync(_publish)(self.frames)
            return
        # On the server: hand the frames to the event loop and return, so the database thread is free at once.
        # Order holds: a channel's transactions run on one thread, so their outboxes arrive in commit order, and
        # the loop starts them in that order (each peer gets one layer message per outbox).
        loop.call_soon_threadsafe(_start_publishing, self.frames)


_publishing: set[asyncio.Task] = set()  # strong references until done (the loop keeps only weak ones)


def _start_publishing(frames: dict[str, list[dict]]) -> None:
    task = asyncio.get_running_loop().create_task(_publish(frames))
    _publishing.add(task)
    task.add_done_callback(_publishing.discard)


async def _publish(frames: dict[str, list[dict]]) -> None:
    layer = get_channel_layer()
    failed = 0
    for address, peer_frames in frames.items():
        try:
            await layer.group_send(peer_group(address), {"type": NOTIFY_TYPE, "frames": peer_frames})
        except Exception:  # the state committed: a layer outage costs notifications, never the request
            failed += len(peer_frames)
    if failed:
        logger.warning("channel layer unavailable: %d notification(s) not delivered", failed)


def send_on_commit(address: str, event: Event, data: dict) -> None:
    """Queue a notification for ``address``'s subscribed connections; published when the transaction commits.

    Notifications of one (savepoint of a) transaction share one outbox: the last on-commit hook, if it is this
    savepoint's outbox, takes the frame, so order is kept and a rolled-back savepoint drops its own frames.
    """
    connection = transaction.get_connection()
    if not connection.in_atomic_block:
        outbox = _Outbox()
        outbox.add(address, event, data)
        outbox()
        return
    hooks = connection.run_on_commit  # [(savepoint ids, func, robust)], Django's own bookkeeping
    if hooks and isinstance(hooks[-1][1], _Outbox) and hooks[-1][0] == set(connection.savepoint_ids):
        hooks[-1][1].add(address, event, data)
        return
    outbox = _Outbox()
    outbox.add(address, event, data)
    transaction.on_commit(outbox, robust=True)


def parties(channel: Channel) -> tuple[tuple[Peer, str], tuple[Peer, str]]:
    return (channel.initiator, INITIATOR), (channel.responder, RESPONDER)


# --- payload builders (also used for replies, so a figure is formatted one way only) ------------------------
def position_payload(position: Position, role: str, mark: Decimal) -> dict:
    book = position.book if role == INITIATOR else accounting.mirror(position.book)
    return {
        "id": position.id,
        "channel_id": position.channel.channel_id,
        "market": position.market,
        "direction": book.direction,
        "amount": fmt(book.amount),
        "cost": fmt(book.cost),
        "market_value": fmt(accounting.market_value(book, mark)),
        "pnl": fmt(accounting.unrealized_pnl(book, mark)),
        "realized_pnl": fmt(book.realized_pnl),
        "mark_price": fmt(mark),
        "status": position.status,
    }


def counterparty_info(channel: Channel, role: str) -> dict:
    if role == INITIATOR:
        peer, name, url = channel.responder, channel.responder_name, channel.responder_url
    else:
        peer, name, url = channel.initiator, channel.initiator.name, channel.initiator.url
    info = {"address": peer.address}
    if url:
        info["url"] = url
    if name:
        info["name"] = name
    return info


def channel_payload(channel: Channel, role: str, margins: tuple[Decimal, Decimal]) -> dict:
    """A channel as one party sees it (``channels`` replies and every stream notification)."""
    return {
        "channel_id": channel.channel_id,
        "channel_status": channel.status,
        "my_role": role,
        "peer": counterparty_info(channel, role),
        "margin_deposit": fmt(channel.margin_deposit),
        "initiator_margin_balance": fmt(margins[0]),
        "follower_margin_balance": fmt(margins[1]),
    }


def stream_payload(channel: Channel, action: StreamAction, role: str, margins: tuple[Decimal, Decimal]) -> dict:
    return {"action": str(action), **channel_payload(channel, role, margins)}


def settlement_payload(settlement, role: str) -> dict:
    return {
        "channel_id": settlement.channel.channel_id,
        "settlement_id": settlement.id,
        "state": settlement.state,
        "settlement_state": settlement.state,
        "payment_method": settlement.payment_method,
        "chain_id": settlement.chain_id,
        "markets": settlement.markets,
        "ledger": settlement.ledger,
        "my_role": role,
    }


def settlement_history_payload(settlement, role: str) -> dict:
    """A settlement with the times of its states (``settlements`` replies); actors stay internal."""
    return {
        **settlement_payload(settlement, role),
        "created_at": settlement.created_at.isoformat(),
        "history": [{"state": t.to_state, "at": t.at.isoformat()} for t in settlement.transitions.all()],
    }


# --- what services call -------------------------------------------------------------------------------------
def notify_stream(channel: Channel, action: StreamAction, margins: tuple[Decimal, Decimal] | None = None) -> None:
    margins = margins if margins is not None else balances(channel)
    for peer, role in parties(channel):
        send_on_commit(peer.address, Event.STREAM_NOTIFICATION, stream_payload(channel, action, role, margins))


def notify_positions(channel: Channel, positions: list[Position], marks: dict[str, Decimal]) -> None:
    for position in positions:
        mark = position_mark(position, marks)
        for peer, role in parties(channel):
            send_on_commit(peer.address, Event.POSITION_NOTIFICATION, position_payload(position, role, mark))


def notify_settlement(settlement) -> None:
    for peer, role in parties(settlement.channel):
        send_on_commit(peer.address, Event.SETTLEMENT_NOTIFICATION, settlement_payload(settlement, role))
