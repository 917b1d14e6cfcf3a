"""Settlement writes: requesting a settlement, its state machine, and driving a payment through it.

``transition`` is the one function that changes a settlement's state: it checks the table, records who did it
and when, applies the side effects on positions and channel, and queues the notifications. The protocol path,
the admin and management commands all go through it.
"""
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from channels_app import accounting, selectors
from channels_app.errors import Code, DomainError, channel_not_found
from channels_app.models import POSITION_TRANSITIONS, Channel, ChannelStatus, Peer, Position, PositionStatus
from channels_app.money import MONEY, ZERO
from channels_app.notices import StreamAction, notify_channel, notify_positions
from channels_app.services import zones
from channels_app.services.channels import transition_channel
from channels_app.services.recompute import refresh_closed_pnl
from channels_app.statemachine import InvalidTransition, check_transition, move
from channels_app.valuation import position_mark
from settlement.ledger import build_ledger
from settlement.models import Settlement, SettlementState, SettlementTransition
from settlement.payments.base import get_backend
from settlement.values import notify_settlement

S = SettlementState

SETTLEMENT_TRANSITIONS = {
    S.PROPOSED: frozenset({S.ACCEPTED, S.REJECTED}),
    S.ACCEPTED: frozenset({S.INITIATED, S.FAILED}),  # failed: the escrow contract refuses to open it
    S.INITIATED: frozenset({S.PREPARED, S.FAILED}),
    S.PREPARED: frozenset({S.EXECUTED, S.FAILED}),
    S.EXECUTED: frozenset({S.COMPLETED, S.FAILED}),
}
OPERATOR_ACTOR = "operator"


def peer_actor(peer: Peer) -> str:
    return f"peer:{peer.address}"


def request_settlement(*, peer: Peer, channel_id: str, payment_method: str, chain_id: int,
                       markets: list[str]) -> Settlement:
    """A party asks to settle ``markets`` of its channel (the protocol path)."""
    with transaction.atomic():
        channel = selectors.participant_channel(peer=peer, channel_id=channel_id, lock=True)
        return _propose(channel, payment_method=payment_method, chain_id=chain_id, markets=markets,
                        requested_by=peer, actor=peer_actor(peer))


def propose_settlement(*, channel_id: str, payment_method: str, chain_id: int, markets: list[str], actor: str,
                       note: str = "") -> Settlement:
    """The operator proposes a settlement (management command, back office): no party membership to check."""
    with transaction.atomic():
        channel = Channel.objects.select_for_update(of=("self",)).select_related("initiator", "responder").filter(
            channel_id=channel_id.lower()).first()
        if channel is None:
            raise channel_not_found()
        return _propose(channel, payment_method=payment_method, chain_id=chain_id, markets=markets,
                        requested_by=None, actor=actor, note=note)


def propose_forced(channel: Channel, *, payment_method: str, chain_id: int, markets: list[str],
                   note: str) -> Settlement:
    """The operator's forced settlement of a channel in red (settlement/margin_calls.py; caller holds the lock).
    A market may be one with only flat, unsettled positions: their realized losses are what put it in red."""
    return _propose(channel, payment_method=payment_method, chain_id=chain_id, markets=markets, requested_by=None,
                    actor=OPERATOR_ACTOR, note=note, flat_markets=True)


def _propose(channel: Channel, *, payment_method: str, chain_id: int, markets: list[str], requested_by,
             actor: str, note: str = "", flat_markets: bool = False) -> Settlement:
    """Freeze the markets' open positions at the mark and compute the ledger (caller holds the channel lock).
    ``flat_markets``: a market without an open position is settled for its flat ones (else it is refused)."""
    if len(set(markets)) != len(markets) or not markets:
        raise DomainError(Code.INVALID_INPUT, "markets: name each market once, at least one")
    backend = get_backend(payment_method)
    if channel.settlements.exclude(state__in=[S.COMPLETED, S.FAILED, S.REJECTED]).exists():
        raise DomainError(Code.SETTLEMENT_IN_PROGRESS, "this channel already has a settlement in progress")
    if channel.status != ChannelStatus.OPENED:
        raise DomainError(Code.INVALID_CHANNEL_STATE, f"channel is {channel.status}; only an opened "
                          "channel can be settled")
    backend.check_available(chain_id=chain_id, markets=list(markets))

    positions = list(channel.positions.filter(status__in=(PositionStatus.OPEN, PositionStatus.CLOSED)))
    open_by_market = {p.market: p for p in positions if p.status == PositionStatus.OPEN}
    settleable = set(open_by_market)
    if flat_markets:
        settleable |= {p.market for p in positions}
    missing = [m for m in markets if m not in settleable]
    if missing:
        raise DomainError(Code.INVALID_MARKET, "no open position in " + ", ".join(missing))
    marks = selectors.marks_for(markets)
    frozen = [open_by_market[m] for m in markets if m in open_by_market]
    for position in frozen:
        position.settle_price = position_mark(position, marks)
        move(position, PositionStatus.IN_SETTLEMENT, table=POSITION_TRANSITIONS)
        position.save(update_fields=["status", "settle_price", "updated_at"])
    # Flat positions of those markets carry realized PnL not yet paid: the settlement pays it too.
    flat = [p for p in positions if p.market in markets and p.status == PositionStatus.CLOSED]
    pnl_by_market = {}
    for position in frozen + flat:
        pnl = accounting.total_pnl(position.book, position_mark(position, marks))
        pnl_by_market[position.market] = MONEY.add(pnl_by_market.get(position.market, ZERO), pnl)

    settlement = Settlement.objects.create(
        channel=channel,
        requested_by=requested_by,
        payment_method=payment_method,
        chain_id=chain_id,
        markets=list(markets),
        ledger=build_ledger(pnl_by_market),
        accept_by_policy=settings.SETTLEMENT_ACCEPT_POLICY == "auto",  # the intent, kept for the worker
    )
    settlement.positions.set(frozen + flat)
    SettlementTransition.objects.create(settlement=settlement, to_state=S.PROPOSED, actor=actor, note=note)
    transition_channel(channel, ChannelStatus.SETTLING)
    notify_positions(channel, frozen, marks)
    notify_settlement(settlement)
    return settlement


def retry(*, settlement_pk: int, actor: str, note: str = "") -> Settlement:
    """A failed settlement is tried again as a new proposal of the same markets and method; ``note`` (a clerk's)
    follows the history's "retry of settlement N"."""
    failed = Settlement.objects.select_related("channel").get(pk=settlement_pk)
    if failed.state != S.FAILED:
        raise DomainError(Code.INVALID_SETTLEMENT_STATE, f"settlement is {failed.state}; only a failed one is "
                          "retried")
    return propose_settlement(channel_id=failed.channel.channel_id, payment_method=failed.payment_method,
                              chain_id=failed.chain_id, markets=failed.markets, actor=actor,
                              note=f"retry of settlement {failed.pk}" + (f": {note}" if note else ""))


def transition(*, settlement_pk: int, target: SettlementState, actor: str, note: str = "") -> Settlement:
    """Move a settlement to ``target`` (one transaction, rows locked) and apply what that state means."""
    with transaction.atomic():
        settlement = Settlement.objects.select_for_update().select_related(
            "channel", "channel__initiator", "channel__responder"
        ).get(pk=settlement_pk)
        _apply(settlement, target, actor=actor, note=note)
    return settlement


def _apply(settlement: Settlement, target: SettlementState, *, actor: str, note: str = "") -> None:
    previous = settlement.state
    try:
        check_transition(SETTLEMENT_TRANSITIONS, "settlement", previous, target)
    except InvalidTransition:
        raise DomainError(Code.INVALID_SETTLEMENT_STATE, f"settlement is {previous}; it cannot become {target}") \
            from None
    settlement.state = target
    settlement.save(update_fields=["state", "updated_at"])
    SettlementTransition.objects.create(
        settlement=settlement, from_state=previous, to_state=target, actor=actor, note=note[:2000]
    )
    notify_settlement(settlement)  # first, so clients hear the state before its consequences
    if target == S.COMPLETED:
        _complete(settlement)
    elif target in (S.FAILED, S.REJECTED):
        _unfreeze(settlement)


def _lock_channel(settlement: Settlement):
    channel = settlement.channel
    type(channel).objects.select_for_update(of=("self",)).filter(pk=channel.pk).first()
    channel.refresh_from_db(fields=["status", "closed_pnl", "initiator_zone", "responder_zone", "margin_call_due_at",
                                    "margin_call_error"])
    return channel


def _complete(settlement: Settlement) -> None:
    """Paid: the frozen positions leave the live book, their PnL leaves the margins, the channel trades on."""
    channel = _lock_channel(settlement)
    settled = list(settlement.positions.select_related("channel"))
    for position in settled:  # in settlement, or flat with realized PnL that this settlement paid
        move(position, PositionStatus.SETTLED, table=POSITION_TRANSITIONS)
        position.save(update_fields=["status", "updated_at"])
    refresh_closed_pnl(channel)  # the flat ones it paid are no longer closed-and-unsettled
    transition_channel(channel, ChannelStatus.OPENED)
    notify_positions(channel, [p for p in settled if p.settle_price is not None], {})
    balances = selectors.margins(channel)
    zones.track(channel, balances)  # paid: the PnL left the balances (out of red, a new entry calls again)
    notify_channel(channel, StreamAction.CHANNEL_SETTLED, balances)


def _unfreeze(settlement: Settlement) -> None:
    """Failed or rejected: frozen positions return to open.

    A position opened in the same market meanwhile is folded in by replaying its trades onto the returning one,
    in the order they were recorded, exactly as if the freeze had never happened; it closes empty, marked
    ``merged_into`` so the ledger rebuild (``recompute_positions``) follows the same path.
    """
    channel = _lock_channel(settlement)
    changed: list[Position] = []
    for position in settlement.positions.filter(status=PositionStatus.IN_SETTLEMENT):
        position.settle_price = None
        move(position, PositionStatus.OPEN, table=POSITION_TRANSITIONS)
        newer = channel.positions.filter(market=position.market, status=PositionStatus.OPEN).first()
        if newer is not None:  # one open position per market: the newer one's trades move over
            book = position.book
            for trade in newer.trades.order_by("id"):
                book = accounting.apply_trade(book, trade.initiator_direction, trade.amount, trade.price)
            position.set_book(book)
            position.last_price = newer.last_price
            newer.set_book(accounting.Book())
            newer.merged_into = position
            move(newer, PositionStatus.CLOSED, table=POSITION_TRANSITIONS)
            newer.save()
            changed.append(newer)
        if position.book.is_flat:
            move(position, PositionStatus.CLOSED, table=POSITION_TRANSITIONS)
        position.save()
        changed.append(position)
    settlement.positions.remove(*settlement.positions.exclude(status=PositionStatus.SETTLED))
    refresh_closed_pnl(channel)  # returning positions that are flat, and merged ones, are closed now
    transition_channel(channel, ChannelStatus.OPENED)
    live = selectors.live_positions_of(channel)
    marks = selectors.marks_for({*(p.market for p in live), *(p.market for p in changed)})
    notify_positions(channel, changed, marks)
    balances = selectors.margins(channel, live_positions=live, marks=marks)
    zones.track(channel, balances)
    notify_channel(channel, StreamAction.MARGIN_UPDATED, balances)


# --- the payment: recorded here, driven by the payment worker (settlement/worker.py) --------------------------
PAYMENT_STATES = frozenset({S.ACCEPTED, S.INITIATED, S.PREPARED, S.EXECUTED})


POLICY_NOTE = "accepted by the operator's policy"
POLICY_BACKSTOP_SECONDS = 2  # a proposal the ``auto`` policy has not accepted this long after: the worker accepts it


def apply_accept_policy(*, settlement_pk: int) -> Settlement:
    """The counterparty's acceptance: given at once to a settlement proposed under the ``auto`` policy
    (``accept_by_policy``), else left to back office. Acceptance only records the intent: the payment worker takes
    an accepted settlement from there. A settlement no longer proposed (the worker's round accepted it, a clerk
    rejected it) is left as it is."""
    settlement = Settlement.objects.get(pk=settlement_pk)
    if settlement.accept_by_policy and settlement.state == S.PROPOSED:
        _accept_by_policy(settlement_pk)
        settlement.refresh_from_db()
    return settlement


def accept_left_proposed() -> int:
    """(the payment worker's round) The settlements proposed under the ``auto`` policy and not accepted
    ``POLICY_BACKSTOP_SECONDS`` after their last change, accepted now; how many.

    The policy's acceptance is a transaction of its own after the proposal's (the reply to ``request_settlement``
    goes between them; a margin call's, a retry's, a ``settle`` command's follow theirs). A process that stopped in
    between, or an acceptance that failed, left the settlement proposed, its positions frozen and its channel
    settling, until a clerk came. The proposal records the policy it was made under (``accept_by_policy``): one made
    while the policy was ``manual`` waits for its clerk whatever the policy is later (its ledger is at the marks of
    its day, for the clerk to judge).
    """
    since = timezone.now() - timedelta(seconds=POLICY_BACKSTOP_SECONDS)
    left = Settlement.objects.filter(state=S.PROPOSED, accept_by_policy=True, updated_at__lte=since).order_by(
        "pk").values_list("pk", flat=True)
    return sum(_accept_by_policy(pk) for pk in left)


def _accept_by_policy(settlement_pk: int) -> bool:
    return advance(settlement_pk=settlement_pk, expected=S.PROPOSED, target=S.ACCEPTED, note=POLICY_NOTE)


def advance(*, settlement_pk: int, expected: SettlementState, target: SettlementState, note: str = "") -> bool:
    """The operator's move (the payment worker's, the acceptance policy's): ``expected`` -> ``target`` if the
    settlement is still ``expected`` (a clerk may have failed it meanwhile); False if it was not. Clears the
    worker's retry bookkeeping."""
    with transaction.atomic():
        settlement = Settlement.objects.select_for_update().select_related(
            "channel", "channel__initiator", "channel__responder").get(pk=settlement_pk)
        if settlement.state != expected:
            return False
        settlement.last_error, settlement.attempts, settlement.next_attempt_at = "", 0, None
        settlement.save(update_fields=["last_error", "attempts", "next_attempt_at"])
        _apply(settlement, target, actor=OPERATOR_ACTOR, note=note)
    return True


class StateMoved(Exception):
    """The settlement left the state a payment step was working for (a clerk failed it): the step stops."""


def may_fail_by_hand(settlement: Settlement) -> bool:
    """A clerk may fail a settlement only while no money can move for it: a ``mock`` one in any payment state, an
    escrow one only before anything was recorded for its escrow (nothing can have been sent to the chain). An escrow
    opened on chain fails by itself if it is not funded by its deadline, and cannot be undone once funded."""
    if S.FAILED not in SETTLEMENT_TRANSITIONS.get(settlement.state, ()):
        return False
    if settlement.payment_method != "escrow":
        return True
    return settlement.state == S.ACCEPTED and not settlement.escrow and not settlement.payment_state


def fail_by_hand(*, settlement_pk: int, actor: str, note: str = "") -> Settlement:
    with transaction.atomic():
        settlement = Settlement.objects.select_for_update().select_related(
            "channel", "channel__initiator", "channel__responder").get(pk=settlement_pk)
        if not may_fail_by_hand(settlement):
            raise DomainError(Code.INVALID_SETTLEMENT_STATE, f"settlement {settlement.pk} is {settlement.state}"
                              + (" and its escrow is on chain: it fails by itself if not every leg is funded by the "
                                 "deadline, and a funded escrow cannot be undone" if settlement.escrow else
                                 ": it cannot fail"))
        _apply(settlement, S.FAILED, actor=actor, note=note)
    return settlement


def record_payment_progress(*, settlement_pk: int, expected: SettlementState, escrow: dict | None = None,
                            payment_state: dict | None = None, transaction_seen: dict | None = None,
                            funded: list[bool] | None = None, announce: bool = True) -> None:
    """What a payment step established, committed at once (before the step waits on anything outside).

    ``expected`` is the state the step works for: if the settlement left it, ``StateMoved`` is raised and nothing is
    recorded. ``escrow`` replaces the escrow object; ``transaction_seen`` (``{"step", "hash", ["from"]}``) is added to its
    transactions once; ``funded`` sets the legs' funded flags. Brokers hear of a change they can see (the escrow
    object) with a settlement_notification in the same state, unless ``announce`` is False.
    """
    with transaction.atomic():
        settlement = Settlement.objects.select_for_update().select_related(
            "channel", "channel__initiator", "channel__responder").get(pk=settlement_pk)
        if settlement.state != expected:  # recorded before anything is sent: a failed one sends nothing more
            raise StateMoved(f"settlement {settlement_pk} is {settlement.state}, no longer {expected}")
        before = settlement.escrow
        current = dict(escrow) if escrow is not None else (dict(before) if before is not None else None)
        if current is not None and transaction_seen is not None:
            seen = current.setdefault("transactions", [])
            if not any(t["hash"] == transaction_seen["hash"] for t in seen):
                current["transactions"] = [*seen, transaction_seen]
        if current is not None and funded is not None:
            current["legs"] = [{**leg, "funded": bool(flag)} for leg, flag in zip(current["legs"], funded)]
        fields = []
        if current != before:
            settlement.escrow = current
            fields.append("escrow")
        if payment_state is not None:
            settlement.payment_state = payment_state
            fields.append("payment_state")
        if fields:
            settlement.save(update_fields=[*fields, "updated_at"])
        if "escrow" in fields and announce and settlement.state not in (S.PROPOSED, S.ACCEPTED):
            notify_settlement(settlement)
