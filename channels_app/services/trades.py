"""Recording trades: the trade, its position update and the margin check commit together or not at all."""
from dataclasses import dataclass

from django.db import transaction

from channels_app import accounting
from channels_app.errors import ErrorCode, ProtocolError
from channels_app.events import StreamAction
from channels_app.models import (
    INITIATOR,
    LIVE_POSITION_STATUSES,
    POSITION_TRANSITIONS,
    TRADING_STATUSES,
    Channel,
    Peer,
    Position,
    PositionStatus,
    Trade,
    marks_for,
)
from channels_app.notifications import notify_positions, notify_stream
from channels_app.schemas import RecordTradeData, RecordTradesData, TradeFields
from channels_app.services.channels import participant_channel
from channels_app.statemachine import move
from channels_app.accounting import margin_balances, total_pnl
from channels_app.money import MONEY, ZERO
from channels_app.valuation import initiator_pnl, position_mark


@dataclass(frozen=True)
class Recorded:
    channel: Channel
    trade: Trade
    replayed: bool  # True: the same trade was already stored; nothing changed


def _same_trade(stored: Trade, data: TradeFields, initiator_direction: str) -> bool:
    """Content compared from the initiator's side, so either party may report the same execution."""
    return (
        stored.market == data.market
        and stored.initiator_direction == initiator_direction
        and stored.amount == data.amount
        and stored.price == data.price
        and stored.executed_at == data.executed_at
    )


def record_trade(*, peer: Peer, data: RecordTradeData) -> Recorded:
    """One trade: stored with its position update and margin check, or refused with nothing changed."""
    channel, [(trade, replayed)] = _record(peer, data.channel_id, [data], label=lambda index: "")
    return Recorded(channel, trade, replayed)


def record_trades(*, peer: Peer, data: RecordTradesData) -> tuple[Channel, list[Trade]]:
    """A batch of one channel, all or nothing: as if recorded one by one in order, in one transaction.

    Returns the stored trade of every item in order (replayed items give the trade already stored).
    """
    channel, results = _record(peer, data.channel_id, data.trades, label=lambda index: f"data.trades[{index}]: ")
    return channel, [trade for trade, _ in results]


def _record(peer: Peer, channel_id: str, items, *, label) -> tuple[Channel, list[tuple[Trade, bool]]]:
    with transaction.atomic():
        # The channel row lock serializes everything on this channel: idempotency check, position, margin.
        channel = participant_channel(peer, channel_id, lock=True)
        role = channel.role_of(peer.id)
        stored = {t.external_id: t for t in channel.trades.filter(external_id__in=[i.external_id for i in items])}
        fresh = []  # (index, item, initiator_direction) of the items not stored yet
        for index, item in enumerate(items):
            initiator_direction = item.direction if role == INITIATOR else accounting.opposite(item.direction)
            existing = stored.get(item.external_id)
            if existing is None:
                fresh.append((index, item, initiator_direction))
            elif not _same_trade(existing, item, initiator_direction):
                raise ProtocolError(ErrorCode.DUPLICATE_TRADE, f"{label(index)}external_id {item.external_id!r} "
                                    "was already recorded with different content")
        if not fresh:  # a replay: answered from what is stored, nothing changes, nobody is notified
            return channel, [(stored[item.external_id], True) for item in items]
        if channel.status not in TRADING_STATUSES:
            raise ProtocolError(ErrorCode.INVALID_CHANNEL_STATE, f"channel is {channel.status}; trades are recorded "
                                "only on an opened or settling channel")

        # Margins move by the PnL change of the one position each trade touches, so the initiator's PnL is kept
        # as a running sum: live positions loaded, closed ones as the channel's running total (a batch stays
        # linear in its size, and a trade does not read the channel's closed positions).
        positions = list(channel.positions.filter(status__in=LIVE_POSITION_STATUSES))
        marks = marks_for({*(item.market for _, item, _ in fresh), *(p.market for p in positions)})
        pnl = MONEY.add(channel.closed_pnl, initiator_pnl(positions, marks))
        newly_closed = ZERO  # realized PnL of the positions this request closes
        before = after = margin_balances(channel.margin_deposit, pnl)
        open_by_market = {p.market: p for p in positions if p.status == PositionStatus.OPEN}
        touched: dict[int, Position] = {}  # id() -> position changed by this request, in order
        new_trades = []
        for index, item, initiator_direction in fresh:
            position = open_by_market.get(item.market)
            if position is None:  # first trade in this market, or the previous position is flat, frozen or settled
                position = open_by_market[item.market] = Position(
                    channel=channel, market=item.market, last_price=item.price
                )
            pnl = MONEY.subtract(pnl, total_pnl(position.book, position_mark(position, marks)))
            position.set_book(accounting.apply_trade(position.book, initiator_direction, item.amount, item.price))
            position.last_price = item.price
            pnl = MONEY.add(pnl, total_pnl(position.book, position_mark(position, marks)))
            if position.book.is_flat:  # closed for good: its realized PnL joins the channel's closed total
                move(position, PositionStatus.CLOSED, table=POSITION_TRANSITIONS)
                newly_closed = MONEY.add(newly_closed, position.realized_pnl)
                del open_by_market[item.market]
            after = margin_balances(channel.margin_deposit, pnl)
            if min(after) < 0:
                raise ProtocolError(ErrorCode.MARGIN_EXCEEDED, f"{label(index)}this trade would leave a margin "
                                    f"balance below zero (initiator {after[0]}, responder {after[1]})")
            touched[id(position)] = position
            new_trades.append(Trade(
                channel=channel,
                external_id=item.external_id,
                recorded_by=peer,
                market=item.market,
                direction=item.direction,
                initiator_direction=initiator_direction,
                amount=item.amount,
                price=item.price,
                executed_at=item.executed_at,
                position=position,
            ))
        created = [p for p in touched.values() if p.pk is None]
        for position in touched.values():
            if position.pk is not None:
                position.save()
        Position.objects.bulk_create(created)
        Trade.objects.bulk_create(new_trades)  # one INSERT for the lot (assigns the positions' new keys)
        if newly_closed != ZERO:
            channel.closed_pnl = MONEY.add(channel.closed_pnl, newly_closed)
            channel.save(update_fields=["closed_pnl"])
        # A position both opened and closed inside this request was never live outside it: it is not announced
        # (its realized PnL is in the marginUpdated); every other touched position is, once, in its final state.
        created_ids = {id(p) for p in created}
        announced = [p for p in touched.values() if not (id(p) in created_ids and p.status == PositionStatus.CLOSED)]
        notify_positions(channel, announced, marks)
        if after != before:
            notify_stream(channel, StreamAction.MARGIN_UPDATED, after)
    by_external_id = {t.external_id: (t, False) for t in new_trades}
    return channel, [by_external_id.get(item.external_id) or (stored[item.external_id], True) for item in items]
