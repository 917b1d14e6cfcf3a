"""What the channels domain hands out: immutable values, never model rows or wire dictionaries.

Selectors return them, notifications carry them (taken when the change happens, so a later change in the same
transaction cannot alter what an earlier notification says), and each entry point formats them its own way: the
transport as wire payloads (operatorapi.payloads), the admin and the commands as text.
"""
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import NamedTuple

from channels_app import accounting
from channels_app.accounting import Book
from channels_app.risk import Zones

INITIATOR, RESPONDER = "Initiator", "Responder"
ROLES = (INITIATOR, RESPONDER)


class Margins(NamedTuple):
    """Each party's margin balance: its deposit plus its PnL on every position not yet settled."""

    initiator: Decimal
    responder: Decimal


class Side(NamedTuple):
    """A position as one party sees it: every figure from that party's side."""

    direction: str
    amount: Decimal
    cost: Decimal
    market_value: Decimal
    pnl: Decimal  # unrealized, at the mark
    realized_pnl: Decimal


@dataclass(frozen=True)
class PositionView:
    id: int
    channel_id: str
    market: str
    status: str
    book: Book  # the initiator's side
    mark: Decimal  # the price it is valued at (docs/protocol.md section 5)

    def side(self, role: str) -> Side:
        book = self.book if role == INITIATOR else accounting.mirror(self.book)
        return Side(
            direction=book.direction,
            amount=book.amount,
            cost=book.cost,
            market_value=accounting.market_value(book, self.mark),
            pnl=accounting.unrealized_pnl(book, self.mark),
            realized_pnl=book.realized_pnl,
        )


@dataclass(frozen=True)
class Party:
    address: str
    name: str = ""
    url: str = ""


@dataclass(frozen=True)
class ChannelView:
    channel_id: str
    status: str
    initiator: Party  # name and url as the initiator gave them for itself
    responder: Party  # name and url as the initiator gave them for its counterparty
    margin_deposit: Decimal
    margins: Margins
    zones: Zones  # of ``margins`` (channels_app.risk)
    created_at: datetime | None = None

    def counterparty(self, role: str) -> Party:
        return self.responder if role == INITIATOR else self.initiator

    @property
    def parties(self) -> tuple[tuple[str, str], tuple[str, str]]:
        """(address, role) of both parties: who hears of this channel."""
        return (self.initiator.address, INITIATOR), (self.responder.address, RESPONDER)
