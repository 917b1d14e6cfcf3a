"""The payment worker: drives every settlement whose payment is under way, one step at a time.

Requests and back-office actions only record intent (a settlement ``accepted``); this worker does the slow outside
work (a chain), never inside a request and never inside a database transaction: for each due settlement it reads,
runs the state's step of the payment backend (which may send one transaction, record its hash, commit, and only
then wait), and moves the state on in a short transaction of its own, with the settlement row locked only then.

- One holder at a time (``WorkerLease``): the operator key has one nonce sequence. A second worker stands by and
  takes over once the lease of a dead holder expires; a holder that lost its lease stops before its next step.
- After a crash or restart nothing needs resuming by hand: every settlement in a payment state is due again.
- A ``PaymentError`` fails the settlement with its reason; any other error leaves it where it is and the step is
  retried with backoff, the reason written to the settlement's log once per distinct error.
"""
import logging
import os
import socket
import uuid
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from channels_app.services import channels
from settlement import margin_calls, services
from settlement.models import Settlement, SettlementLogEntry, SettlementState, WorkerLease
from settlement.payments.base import Funding, PaymentError, get_backend

logger = logging.getLogger(__name__)
S = SettlementState
LEASE_NAME = "settlement-payments"
PAYMENT_STATES = services.PAYMENT_STATES
MAX_BACKOFF_SECONDS = 60


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class LeaseLost(Exception):
    """Another worker holds the lease now: this one must not send anything more."""


class PaymentWorker:
    def __init__(self, name: str | None = None):
        self.name = name or worker_name()

    # --- the lease ------------------------------------------------------------------------------------------
    def hold_lease(self) -> bool:
        """Take or renew the lease; False while another live worker holds it."""
        now = timezone.now()
        expires = now + timedelta(seconds=settings.SETTLEMENT_WORKER_LEASE_SECONDS)
        taken = WorkerLease.objects.filter(Q(holder=self.name) | Q(expires_at__lt=now), name=LEASE_NAME).update(
            holder=self.name, expires_at=expires)
        if taken:
            return True
        try:
            with transaction.atomic():
                WorkerLease.objects.create(name=LEASE_NAME, holder=self.name, expires_at=expires)
        except IntegrityError:
            return False  # someone else holds it
        return True

    def holds_lease(self) -> bool:
        return WorkerLease.objects.filter(name=LEASE_NAME, holder=self.name, expires_at__gt=timezone.now()).exists()

    def release_lease(self) -> None:
        WorkerLease.objects.filter(name=LEASE_NAME, holder=self.name).delete()

    def _still_holding(self) -> None:
        if not self.hold_lease():
            raise LeaseLost(self.name)

    # --- the work -------------------------------------------------------------------------------------------
    def run_once(self) -> int:
        """Drive every due settlement as far as it goes now; the number of state changes made.

        The lease is taken (or renewed) only when there is work, so an idle worker writes nothing. First, the
        round's database-only duties, which need no lease (each is idempotent under row locks): channel proposals
        past their time expire, due margin calls start their forced settlements, and under the ``auto`` policy a
        settlement left proposed is accepted (``services.accept_left_proposed``)."""
        channels.expire_proposals()
        margin_calls.start_due()
        services.accept_left_proposed()
        due = list(Settlement.objects.filter(state__in=PAYMENT_STATES).filter(
            Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=timezone.now())).order_by("id").values_list(
            "pk", flat=True))
        if not due or not self.hold_lease():
            return 0
        moved = 0
        for settlement_pk in due:
            try:
                moved += self.drive(settlement_pk)
            except LeaseLost:
                logger.warning("payment worker %s lost its lease; standing by", self.name)
                break
        return moved

    def drive(self, settlement_pk: int) -> int:
        """Take one settlement through as many steps as are possible now."""
        moved = 0
        while True:
            self._still_holding()
            settlement = Settlement.objects.select_related(
                "channel", "channel__initiator", "channel__responder").get(pk=settlement_pk)
            if settlement.state not in PAYMENT_STATES:
                return moved
            try:
                target, note = self.step(settlement)
            except PaymentError as exc:
                logger.warning("settlement %s fails at %s: %s", settlement.pk, settlement.state, exc)
                target, note = S.FAILED, f"{settlement.state}: {exc}"
            except LeaseLost:
                raise
            except services.StateMoved:
                return moved  # a clerk failed it meanwhile: nothing more is sent for it
            except Exception as exc:  # the chain unreachable, a transaction dropped, ...: try again later
                self.record_error(settlement, exc)
                return moved
            if target is None:  # waiting (for the debtors, for confirmations)
                self.clear_error(settlement)
                return moved
            self._still_holding()  # a slow step may outlast the lease: a worker that lost it moves nothing
            if not services.advance(settlement_pk=settlement.pk, expected=settlement.state, target=target,
                                    note=note):
                return moved  # moved elsewhere meanwhile (a clerk failed it): look again next round
            moved += 1

    def step(self, settlement: Settlement) -> tuple[SettlementState | None, str]:
        """The state's step; what the settlement becomes (None: not yet) and a note for its history."""
        backend = get_backend(settlement.payment_method)

        def record(**changes):
            services.record_payment_progress(settlement_pk=settlement.pk, expected=settlement.state, **changes)

        if settlement.state == S.ACCEPTED:
            return (S.INITIATED, "") if backend.open(settlement, record=record) else (None, "")
        if settlement.state == S.INITIATED:
            funding = backend.funding(settlement, record=record)
            if funding is Funding.FUNDED:
                return S.PREPARED, ""
            if funding is Funding.EXPIRED:
                if not backend.refund(settlement, record=record):
                    return None, ""
                return S.FAILED, "not every leg was funded by the deadline; what was paid in went back to its payer"
            return None, ""
        if settlement.state == S.PREPARED:
            return (S.EXECUTED, "") if backend.execute(settlement, record=record) else (None, "")
        if settlement.state == S.EXECUTED:
            return (S.COMPLETED, "") if backend.confirm(settlement, record=record) else (None, "")
        return None, ""

    # --- errors ---------------------------------------------------------------------------------------------
    def record_error(self, settlement: Settlement, exc: Exception) -> None:
        message = f"{type(exc).__name__}: {exc}"[:2000]
        attempts = settlement.attempts + 1
        delay = min(2 ** min(attempts, 10) * settings.SETTLEMENT_WORKER_POLL_SECONDS, MAX_BACKOFF_SECONDS)
        with transaction.atomic():
            Settlement.objects.filter(pk=settlement.pk).update(
                last_error=message, attempts=attempts, next_attempt_at=timezone.now() + timedelta(seconds=delay))
            if message != settlement.last_error:  # once per distinct error
                SettlementLogEntry.objects.create(settlement=settlement, state=settlement.state, message=message)
        logger.warning("settlement %s at %s: %s (attempt %d, next in %.1f s)", settlement.pk, settlement.state,
                       message, attempts, delay)

    def clear_error(self, settlement: Settlement) -> None:
        if settlement.attempts or settlement.last_error or settlement.next_attempt_at:
            Settlement.objects.filter(pk=settlement.pk).update(last_error="", attempts=0, next_attempt_at=None)
