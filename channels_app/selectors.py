"""Reads of the channels domain: keyword arguments in, domain values out (channels_app.values).

Called alike by the transport, the admin and the commands; the caller decides the transaction. Margin balances
come from ``margins`` alone, whoever asks.
"""
from collections import defaultdict
from decimal import Decimal

from django.db.models import Q
from django.db.models.functions import Now

from channels_app import risk, valuation
from channels_app.errors import channel_not_found
from channels_app.models import (
    LIVE_POSITION_STATUSES,
    Channel,
    ChannelStatus,
    MarkPrice,
    Peer,
    PeerConnection,
    Position,
    PositionStatus,
)
from channels_app.values import INITIATOR, RESPONDER, ChannelView, Margins, Party, PositionView


def marks_for(markets) -> dict[str, Decimal]:
    """The back-office mark of each of ``markets`` that has one."""
    return dict(MarkPrice.objects.filter(market__in=set(markets)).values_list("market", "price"))


def participant_channel(*, peer: Peer, channel_id: str, lock: bool = False) -> Channel:
    """The channel if ``peer`` is one of its two parties; otherwise channel_not_found, exactly as if absent.

    ``lock``: the channel row is locked until the transaction ends (every write on a channel takes it first).
    """
    qs = Channel.objects.select_related("initiator", "responder")
    if lock:
        qs = qs.select_for_update(of=("self",))
    channel = qs.filter(channel_id=channel_id).first()
    if channel is None or channel.role_of(peer.id) is None:
        raise channel_not_found()
    return channel


def live_positions_of(channel: Channel) -> list[Position]:
    return list(channel.positions.filter(status__in=LIVE_POSITION_STATUSES).order_by("market", "id"))


def margins(channel: Channel, *, live_positions=None, marks=None) -> Margins:
    """The channel's margin balances now: the one function every caller uses (valuation.margins)."""
    if live_positions is None:
        live_positions = live_positions_of(channel)
    if marks is None:
        marks = marks_for(p.market for p in live_positions)
    return valuation.margins(deposit=channel.margin_deposit, initiator_pnl=valuation.initiator_pnl(
        closed_pnl=channel.closed_pnl, live_positions=live_positions, marks=marks))


def closed_pnl_from_rows(channel: Channel) -> Decimal:
    """What ``Channel.closed_pnl`` must equal: the realized PnL of its closed, unsettled rows, summed."""
    return valuation.sum_realized(
        channel.positions.filter(status=PositionStatus.CLOSED).values_list("realized_pnl", flat=True))


def parties(channel: Channel) -> tuple[tuple[str, str], tuple[str, str]]:
    return (channel.initiator.address, INITIATOR), (channel.responder.address, RESPONDER)


def position_view(position: Position, marks: dict[str, Decimal]) -> PositionView:
    return PositionView(
        id=position.id,
        channel_id=position.channel.channel_id,
        market=position.market,
        status=position.status,
        book=position.book,
        mark=valuation.position_mark(position, marks),
    )


def channel_view(channel: Channel, *, balances: Margins | None = None) -> ChannelView:
    """The channel with its balances (read now unless given) and their zones."""
    balances = balances if balances is not None else margins(channel)
    return ChannelView(
        channel_id=channel.channel_id,
        status=channel.status,
        initiator=Party(channel.initiator.address, channel.initiator.name, channel.initiator.url),
        responder=Party(channel.responder.address, channel.responder_name, channel.responder_url),
        margin_deposit=channel.margin_deposit,
        margins=balances,
        zones=risk.zones(balances, channel.margin_deposit),
        created_at=channel.created_at,
    )


def live_positions(*, peer: Peer, channel_id: str) -> tuple[str, list[PositionView]]:
    """``peer``'s role and the live book (open and in settlement) of its channel."""
    channel = participant_channel(peer=peer, channel_id=channel_id)
    positions = live_positions_of(channel)
    marks = marks_for(p.market for p in positions)
    return channel.role_of(peer.id), [position_view(p, marks) for p in positions]


def peer_channels(*, peer: Peer, status: ChannelStatus | None = None) -> list[tuple[str, ChannelView]]:
    """Every channel of ``peer`` (optionally in one status) with its role and both balances, in three queries."""
    channels = Channel.objects.filter(Q(initiator=peer) | Q(responder=peer)).select_related("initiator", "responder")
    if status is not None:
        channels = channels.filter(status=status)
    channels = list(channels.order_by("id"))
    live_of = defaultdict(list)
    for position in Position.objects.filter(channel__in=channels, status__in=LIVE_POSITION_STATUSES):
        live_of[position.channel_id].append(position)
    marks = marks_for({p.market for ps in live_of.values() for p in ps})
    return [
        (c.role_of(peer.id), channel_view(c, balances=margins(c, live_positions=live_of[c.id], marks=marks)))
        for c in channels
    ]


def live(via: str = "") -> Q:
    """Presence rows whose lease has not ended, by the database's clock; ``via`` reaches them through a relation
    (``live("connections__")`` from a peer). Every count of connections goes through this."""
    return Q(**{f"{via}expires_at__gt": Now()})


LIVE = live()


def live_connections():
    """The presence rows that count: ``PeerConnection``s whose lease runs."""
    return PeerConnection.objects.filter(LIVE)


def connection_names(*, peer: Peer) -> tuple[str, ...]:
    """The channel-layer names of ``peer``'s connections (lease ended or not: a name nobody listens on costs
    nothing)."""
    return tuple(PeerConnection.objects.filter(peer=peer).order_by("pk").values_list("channel_name", flat=True))


def online_peer_count() -> int:
    return live_connections().values("peer").distinct().count()
