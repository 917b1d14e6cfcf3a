"""Position accounting by the average-cost method, as pure functions on values (no database).

All arithmetic goes through the ``MONEY`` context: Python's own operators (even unary minus and ``abs``) round to
the thread's default context of 28 digits.

A book is kept from the **initiator's** point of view; the responder's view is its mirror (``mirror``), so the
two sides' PnL sum to zero by construction. Quantities are signed (+ long, - short); ``cost`` is the absolute
amount times the average entry price.
"""
from typing import NamedTuple
from decimal import Decimal

from channels_app.money import MONEY, ZERO, divide

BUY, SELL = "buy", "sell"


def opposite(direction: str) -> str:
    return SELL if direction == BUY else BUY


class Book(NamedTuple):
    """One position's state: signed quantity, cost basis and realized PnL (initiator's view). A named tuple: a
    batch makes several per trade, and a frozen dataclass took almost twice as long to make."""

    quantity: Decimal = ZERO
    cost: Decimal = ZERO
    realized_pnl: Decimal = ZERO

    @property
    def amount(self) -> Decimal:
        return MONEY.abs(self.quantity)

    @property
    def direction(self) -> str:
        return SELL if self.quantity < 0 else BUY

    @property
    def is_flat(self) -> bool:
        return self.quantity == 0


def apply_trade(book: Book, direction: str, amount: Decimal, price: Decimal) -> Book:
    """The book after a trade of ``amount`` at ``price`` in ``direction`` (initiator's view).

    Same direction adds to amount and cost; the opposite direction reduces the position and realizes PnL at the
    average price; a trade larger than the position flips it, the remainder opening at the trade price.
    """
    signed = amount if direction == BUY else MONEY.minus(amount)
    quantity, cost, realized = book.quantity, book.cost, book.realized_pnl
    if quantity == 0 or (quantity > 0) == (signed > 0):
        return Book(MONEY.add(quantity, signed), MONEY.add(cost, MONEY.multiply(amount, price)), realized)
    held = MONEY.abs(quantity)
    closed = min(held, amount)
    released = cost if closed == held else divide(MONEY.multiply(cost, closed), held)
    proceeds = MONEY.multiply(closed, price)
    gain = MONEY.subtract(proceeds, released) if quantity > 0 else MONEY.subtract(released, proceeds)
    realized = MONEY.add(realized, gain)
    remainder = MONEY.subtract(amount, closed)
    if remainder:  # flipped: the rest opens a new position at the trade price
        return Book(quantity=remainder if signed > 0 else MONEY.minus(remainder), cost=MONEY.multiply(remainder, price),
                    realized_pnl=realized)
    return Book(quantity=MONEY.add(quantity, signed), cost=MONEY.subtract(cost, released), realized_pnl=realized)


def replay(trades) -> Book:
    """A book rebuilt from ``(direction, amount, price)`` triples in order: the ledger's truth."""
    book = Book()
    for direction, amount, price in trades:
        book = apply_trade(book, direction, amount, price)
    return book


def market_value(book: Book, mark: Decimal) -> Decimal:
    return MONEY.multiply(book.amount, mark)


def unrealized_pnl(book: Book, mark: Decimal) -> Decimal:
    value = market_value(book, mark)
    return MONEY.subtract(value, book.cost) if book.quantity > 0 else MONEY.subtract(book.cost, value)


def total_pnl(book: Book, mark: Decimal) -> Decimal:
    """Realized plus unrealized at ``mark``: what the position adds to (or takes from) the holder's margin."""
    return MONEY.add(book.realized_pnl, unrealized_pnl(book, mark))


def mirror(book: Book) -> Book:
    """The counterparty's view of the same position: opposite quantity and PnL, same cost."""
    return Book(quantity=MONEY.minus(book.quantity), cost=book.cost, realized_pnl=MONEY.minus(book.realized_pnl))


def margin_balances(deposit: Decimal, initiator_pnl: Decimal) -> tuple[Decimal, Decimal]:
    """(initiator, responder) balances: deposit plus each side's PnL; they always sum to twice the deposit."""
    return MONEY.add(deposit, initiator_pnl), MONEY.subtract(deposit, initiator_pnl)

