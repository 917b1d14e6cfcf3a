"""What positions and margins are worth now: the mark each position is valued at, and each side's balance.

Reads only; the caller decides the transaction. Mark rule (docs/protocol.md section 5): a position in settlement
is valued at the price its settlement froze; otherwise the latest back-office mark, else the last trade price.
"""
from decimal import Decimal

from channels_app import accounting
from channels_app.models import (
    UNSETTLED_POSITION_STATUSES,
    Channel,
    Position,
    PositionStatus,
    marks_for,
)
from channels_app.money import MONEY, ZERO


def position_mark(position: Position, marks: dict[str, Decimal]) -> Decimal:
    if position.settle_price is not None:  # set while in settlement and once settled, cleared if it failed
        return position.settle_price
    return marks.get(position.market, position.last_price)


def unsettled_positions(channel: Channel) -> list[Position]:
    return list(channel.positions.filter(status__in=UNSETTLED_POSITION_STATUSES))


def initiator_pnl(positions: list[Position], marks: dict[str, Decimal]) -> Decimal:
    total = ZERO
    for position in positions:
        if position.status in UNSETTLED_POSITION_STATUSES:
            total = MONEY.add(total, accounting.total_pnl(position.book, position_mark(position, marks)))
    return total


def balances(channel: Channel, positions: list[Position] | None = None, marks=None) -> tuple[Decimal, Decimal]:
    """(initiator, responder) margin balances: deposit plus PnL of every position not yet settled."""
    if positions is None:
        positions = unsettled_positions(channel)
    if marks is None:
        marks = marks_for(p.market for p in positions)
    return accounting.margin_balances(channel.margin_deposit, initiator_pnl(positions, marks))


def sum_closed_pnl(channel: Channel) -> Decimal:
    """Realized PnL of the channel's flat, not yet settled positions (initiator side), summed from the rows."""
    total = ZERO
    for realized in channel.positions.filter(status=PositionStatus.CLOSED).values_list("realized_pnl", flat=True):
        total = MONEY.add(total, realized)
    return total


def refresh_closed_pnl(channel: Channel) -> None:
    """Re-sum ``Channel.closed_pnl`` after positions left or joined the closed ones other than by a trade
    (settlement paid or failed, ledger rebuild). A trade adds to it directly. The caller holds the channel lock."""
    channel.closed_pnl = sum_closed_pnl(channel)
    channel.save(update_fields=["closed_pnl"])
