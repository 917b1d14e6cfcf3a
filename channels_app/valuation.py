"""What positions and margins are worth: pure functions on values (no database).

Mark rule (docs/protocol.md section 5): a position in settlement is valued at the price its settlement froze;
otherwise the latest back-office mark, else the last trade price.

Margin balances have one formula, ``margins``, for every caller (trade path, replies, notifications, admin,
commands): deposit plus the initiator's PnL, which is the channel's running total of its closed, unsettled
positions (``Channel.closed_pnl``) plus what its live positions are worth now.
"""
from decimal import Decimal

from channels_app import accounting
from channels_app.money import MONEY, ZERO
from channels_app.values import Margins


def position_mark(position, marks: dict[str, Decimal]) -> Decimal:
    if position.settle_price is not None:  # set while in settlement and once settled, cleared if it failed
        return position.settle_price
    return marks.get(position.market, position.last_price)


def live_pnl(live_positions, marks: dict[str, Decimal]) -> Decimal:
    """The initiator's PnL (realized and unrealized) on positions that are open or in settlement."""
    total = ZERO
    for position in live_positions:
        total = MONEY.add(total, accounting.total_pnl(position.book, position_mark(position, marks)))
    return total


def initiator_pnl(*, closed_pnl: Decimal, live_positions, marks: dict[str, Decimal]) -> Decimal:
    """The initiator's PnL on every unsettled position: the running total of the closed ones plus the live ones."""
    return MONEY.add(closed_pnl, live_pnl(live_positions, marks))


def margins(*, deposit: Decimal, initiator_pnl: Decimal) -> Margins:
    """(initiator, responder) balances: the one way they are computed."""
    return Margins(*accounting.margin_balances(deposit, initiator_pnl))


def sum_realized(realized_pnls) -> Decimal:
    """Exact sum of realized PnLs (the running total ``Channel.closed_pnl`` must equal this over its closed rows)."""
    total = ZERO
    for realized in realized_pnls:
        total = MONEY.add(total, realized)
    return total
