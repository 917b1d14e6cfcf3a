"""What the settlement domain hands out: immutable values (selectors return them, notices carry them)."""
from dataclasses import dataclass
from datetime import datetime

from channels_app import outbox, selectors
from settlement.ledger import shortfall


@dataclass(frozen=True)
class LedgerLine:
    """Per QUOTE asset, net: what each side owes the other (decimal strings, as stored; one of the two is "0"), and
    the part of it the debtor's deposit does not cover (``shortfall``, "0" when covered)."""

    asset: str
    initiator_owes: str
    responder_owes: str
    shortfall: str = "0"


@dataclass(frozen=True)
class SettlementView:
    id: int
    channel_id: str
    state: str
    payment_method: str
    chain_id: int
    markets: tuple[str, ...]
    ledger: tuple[LedgerLine, ...]
    created_at: datetime
    history: tuple[tuple[str, datetime], ...] = ()  # (state, when), oldest first; filled by the selectors
    escrow: dict | None = None  # the escrow object brokers see (docs/escrow.md section 4), from ``initiated`` on


@dataclass(frozen=True)
class SettlementNotice:
    settlement: SettlementView
    recipients: tuple[tuple[str, str], ...]  # (address, role)


def settlement_view(settlement, *, with_history: bool = False) -> SettlementView:
    return SettlementView(
        id=settlement.id,
        channel_id=settlement.channel.channel_id,
        state=settlement.state,
        payment_method=settlement.payment_method,
        chain_id=settlement.chain_id,
        markets=tuple(settlement.markets),
        ledger=tuple(LedgerLine(**line, shortfall=shortfall(line, settlement.channel.margin_deposit))
                     for line in settlement.ledger),
        created_at=settlement.created_at,
        history=tuple((t.to_state, t.at) for t in settlement.transitions.all()) if with_history else (),
        escrow=settlement.escrow,
    )


def notify_settlement(settlement) -> None:
    """Both parties hear the settlement's state as it is now."""
    outbox.queue(SettlementNotice(settlement_view(settlement), selectors.parties(settlement.channel)))
