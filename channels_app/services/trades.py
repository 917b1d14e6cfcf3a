"""Recording trades: the trade, its position update and the margin check commit together or not at all.

The margin check follows the zones (channels_app.risk): a trade that reduces its position is always accepted; any
other is refused with ``margin_call`` while either party is in orange or red, and with ``margin_exceeded`` when it
would leave a balance below zero.
"""
from dataclasses import dataclass
from decimal import Decimal

from django.db import transaction

from channels_app import accounting, risk, selectors, valuation
from channels_app.errors import Code, DomainError
from channels_app.models import (
    INITIATOR,
    POSITION_TRANSITIONS,
    TRADING_STATUSES,
    Channel,
    Peer,
    Position,
    PositionStatus,
    Trade,
)
from channels_app.money import MONEY, ZERO, fmt
from channels_app.notices import StreamAction, notify_channel, notify_positions
from channels_app.services import zones
from channels_app.statemachine import move


@dataclass(frozen=True)
class TradeInput:
    """One execution as the reporting party saw it (``direction`` from its own side); amounts already exact."""

    external_id: str
    market: str
    direction: str  # "buy" | "sell"
    amount: Decimal
    price: Decimal
    executed_at: int  # unix seconds


@dataclass(frozen=True)
class Recorded:
    channel: Channel
    trades: list[Trade]  # the stored trade of every item, in order (a replayed item gives the one already stored)
    replayed: list[bool]  # per item: True when it was already stored (nothing changed for it)


def _same_trade(stored: Trade, item: TradeInput, initiator_direction: str) -> bool:
    """Content compared from the initiator's side, so either party may report the same execution."""
    return (
        stored.market == item.market
        and stored.initiator_direction == initiator_direction
        and stored.amount == item.amount
        and stored.price == item.price
        and stored.executed_at == item.executed_at
    )


def _margin_call_sentence(zones_now: risk.Zones, balances) -> str:
    parties = [f"the {name}'s margin balance {fmt(balance)} is in {zone} ({risk.DESCRIPTION[zone]})"
               for name, zone, balance in zip(("initiator", "responder"), zones_now, balances)
               if zone != risk.MarginZone.GREEN]
    return "margin call: " + " and ".join(parties) + "; only a trade that reduces the position is accepted"


def record_trades(*, peer: Peer, channel_id: str, trades: list[TradeInput]) -> Recorded:
    """Trades of one channel, all or nothing: as if recorded one by one in order, in one transaction.

    A refusal names the refused item by its index (``DomainError.item``).
    """
    with transaction.atomic():
        # The channel row lock serializes everything on this channel: idempotency check, position, margin.
        channel = selectors.participant_channel(peer=peer, channel_id=channel_id, lock=True)
        role = channel.role_of(peer.id)
        stored = {t.external_id: t for t in channel.trades.filter(external_id__in=[i.external_id for i in trades])}
        fresh = []  # (index, item, initiator_direction) of the items not stored yet
        for index, item in enumerate(trades):
            initiator_direction = item.direction if role == INITIATOR else accounting.opposite(item.direction)
            existing = stored.get(item.external_id)
            if existing is None:
                fresh.append((index, item, initiator_direction))
            elif not _same_trade(existing, item, initiator_direction):
                raise DomainError(Code.DUPLICATE_TRADE, f"external_id {item.external_id!r} was already recorded "
                                  "with different content", item=index)
        if not fresh:  # a replay: answered from what is stored, nothing changes, nobody is notified
            return Recorded(channel, [stored[item.external_id] for item in trades], [True] * len(trades))
        if channel.status not in TRADING_STATUSES:
            raise DomainError(Code.INVALID_CHANNEL_STATE, f"channel is {channel.status}; trades are recorded "
                              "only on an opened or settling channel")

        # Margins move by the PnL change of the one position each trade touches, so the initiator's PnL is kept
        # as a running sum from the same formula every reader uses (selectors.margins): the channel's running
        # total of closed positions plus its live positions (a batch stays linear in its size).
        positions = selectors.live_positions_of(channel)
        marks = selectors.marks_for({*(item.market for _, item, _ in fresh), *(p.market for p in positions)})
        pnl = valuation.initiator_pnl(closed_pnl=channel.closed_pnl, live_positions=positions, marks=marks)
        newly_closed = ZERO  # realized PnL of the positions this request closes
        before = after = valuation.margins(deposit=channel.margin_deposit, initiator_pnl=pnl)
        rate = risk.maintenance_rate()
        open_by_market = {p.market: p for p in positions if p.status == PositionStatus.OPEN}
        touched: dict[int, Position] = {}  # id() -> position changed by this request, in order
        new_trades = []
        for index, item, initiator_direction in fresh:
            position = open_by_market.get(item.market)
            if position is None:  # first trade in this market, or the previous position is flat, frozen or settled
                position = open_by_market[item.market] = Position(
                    channel=channel, market=item.market, last_price=item.price
                )
            balances_before = after  # the rules apply as if the items were recorded one by one
            zones_before = risk.zones(balances_before, channel.margin_deposit, rate)
            quantity_before = position.quantity
            pnl = MONEY.subtract(pnl, accounting.total_pnl(position.book, valuation.position_mark(position, marks)))
            position.set_book(accounting.apply_trade(position.book, initiator_direction, item.amount, item.price))
            position.last_price = item.price
            pnl = MONEY.add(pnl, accounting.total_pnl(position.book, valuation.position_mark(position, marks)))
            if position.book.is_flat:  # closed for good: its realized PnL joins the channel's closed total
                move(position, PositionStatus.CLOSED, table=POSITION_TRANSITIONS)
                newly_closed = MONEY.add(newly_closed, position.realized_pnl)
                del open_by_market[item.market]
            after = valuation.margins(deposit=channel.margin_deposit, initiator_pnl=pnl)
            if not risk.reduces(quantity_before, position.quantity):
                if zones_before.worst != risk.MarginZone.GREEN:
                    raise DomainError(Code.MARGIN_CALL, _margin_call_sentence(zones_before, balances_before),
                                      item=index)
                if min(after) < 0:
                    raise DomainError(Code.MARGIN_EXCEEDED, "this trade would leave a margin balance below zero "
                                      f"(initiator {after.initiator}, responder {after.responder})",
                                      item=index)
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
        zones.track(channel, after)
        notify_positions(channel, announced, marks)
        if after != before:
            notify_channel(channel, StreamAction.MARGIN_UPDATED, after)
    by_external_id = {t.external_id: t for t in new_trades}
    return Recorded(
        channel,
        [by_external_id.get(item.external_id) or stored[item.external_id] for item in trades],
        [item.external_id not in by_external_id for item in trades],
    )


def record_trade(*, peer: Peer, channel_id: str, trade: TradeInput) -> Recorded:
    """One trade: stored with its position update and margin check, or refused with nothing changed."""
    return record_trades(peer=peer, channel_id=channel_id, trades=[trade])
