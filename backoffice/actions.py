"""Manual actions of back office and operators: each one audited, each through the domain services.

The admin and the management commands call these; nothing here re-implements a protocol rule.
"""
from decimal import Decimal

from django.db import transaction

from backoffice.audit import record
from channels_app.models import MarkPrice, Peer
from channels_app.money import fmt
from channels_app.notices import notify_peer_disabled
from channels_app.services import marks
from channels_app.services.recompute import Drift, recompute_positions
from settlement import services as settlement_services
from settlement.models import TERMINAL_STATES, Settlement, SettlementState

# Back-office settlement actions that are plain transitions; "retry" proposes anew instead. The payment itself is the
# worker's (settlement/worker.py): accepting records the intent, and a payment under way resumes by itself.
SETTLEMENT_TRANSITION_ACTIONS = {
    "accept": SettlementState.ACCEPTED,
    "reject": SettlementState.REJECTED,
    "fail": SettlementState.FAILED,
}
SETTLEMENT_ACTIONS = (*SETTLEMENT_TRANSITION_ACTIONS, "retry")


def allowed_settlement_actions(settlement: Settlement) -> list[str]:
    """What a clerk may do with this settlement now (the buttons the admin shows)."""
    allowed = [action for action, target in SETTLEMENT_TRANSITION_ACTIONS.items()
               if target in settlement_services.SETTLEMENT_TRANSITIONS.get(settlement.state, ())
               and (action != "fail" or settlement_services.may_fail_by_hand(settlement))]
    if settlement.state == SettlementState.FAILED and not settlement.channel.settlements.exclude(
        state__in=[s.value for s in TERMINAL_STATES]
    ).exists():
        allowed.append("retry")
    return allowed


def set_peer_disabled(*, actor: str, peer_pk: int, disabled: bool, user=None) -> Peer:
    """Disable (its live connections close, it cannot authenticate) or enable a peer."""
    with transaction.atomic():
        peer = Peer.objects.select_for_update().get(pk=peer_pk)
        before = peer.is_disabled
        peer.is_disabled = disabled
        peer.save(update_fields=["is_disabled"])
        record(actor=actor, user=user, action="disable_peer" if disabled else "enable_peer", obj=peer,
               before={"is_disabled": before}, after={"is_disabled": disabled})
        if disabled:
            notify_peer_disabled(peer)  # its live connections close, on every process, after commit
    return peer


def set_mark(*, actor: str, market: str, price: Decimal, user=None, source: str = "") -> MarkPrice:
    """Set a market's mark: positions and margins are revalued and both parties of each channel notified."""
    with transaction.atomic():
        previous = MarkPrice.objects.filter(market=market).values_list("price", flat=True).first()
        mark = marks.set_mark(market=market, price=price, source=source or actor)
        record(actor=actor, user=user, action="set_mark", obj=mark,
               before={"price": fmt(previous)} if previous is not None else None, after={"price": fmt(price)})
    return mark


def act_on_settlement(*, actor: str, settlement_pk: int, action: str, note: str = "", user=None) -> Settlement:
    """accept / reject / fail / retry, audited. An accepted settlement is then paid by the payment worker.

    The clerk's note is kept in both places a clerk looks: the settlement's history (its transition's note) and the
    audit entry (with Django's admin log, when a user acted)."""
    if action not in SETTLEMENT_ACTIONS:
        raise ValueError(f"unknown settlement action {action!r}")
    note = note.strip()[:2000]
    with transaction.atomic():
        before = Settlement.objects.get(pk=settlement_pk).state
        if action == "retry":
            settlement = settlement_services.retry(settlement_pk=settlement_pk, actor=actor, note=note)
        elif action == "fail":
            settlement = settlement_services.fail_by_hand(settlement_pk=settlement_pk, actor=actor, note=note)
        else:
            settlement = settlement_services.transition(
                settlement_pk=settlement_pk, target=SETTLEMENT_TRANSITION_ACTIONS[action], actor=actor, note=note)
        record(actor=actor, user=user, action=f"{action}_settlement", obj=settlement,
               before={"settlement": settlement_pk, "state": before},
               after={"settlement": settlement.pk, "state": settlement.state, "note": note})
    if action == "retry":
        return settlement_services.apply_accept_policy(settlement_pk=settlement.pk)
    return settlement


def propose_settlement(*, actor: str, channel_id: str, markets: list[str], method: str, chain_id: int,
                       user=None) -> Settlement:
    """The operator settles a channel's markets (the ``settle`` command); then the acceptance policy applies."""
    with transaction.atomic():
        settlement = settlement_services.propose_settlement(
            channel_id=channel_id, payment_method=method, chain_id=chain_id, markets=markets, actor=actor)
        record(actor=actor, user=user, action="propose_settlement", obj=settlement, before=None,
               after={"markets": settlement.markets, "ledger": settlement.ledger, "method": method})
    return settlement_services.apply_accept_policy(settlement_pk=settlement.pk)


def fix_positions(*, actor: str, channel_id: str | None = None, fix: bool, progress=None):
    """Rebuild positions from the ledger and each channel's closed-PnL total from its rows; with ``fix``, rewrite
    what drifted, each rewrite audited in its transaction."""
    def audit(drift):
        if isinstance(drift, Drift):
            record(actor=actor, action="fix_position", obj=drift.position, before=_book(drift.stored),
                   after=_book(drift.expected))
        else:
            record(actor=actor, action="fix_closed_pnl", obj=drift.channel, before={"closed_pnl": fmt(drift.stored)},
                   after={"closed_pnl": fmt(drift.expected)})

    return recompute_positions(channel_id=channel_id, fix=fix, progress=progress, on_fix=audit)


def _book(book) -> dict:
    return {"quantity": fmt(book.quantity), "cost": fmt(book.cost), "realized_pnl": fmt(book.realized_pnl)}
