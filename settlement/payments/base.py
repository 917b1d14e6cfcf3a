"""The payment backend interface: how a settlement's money actually moves.

The payment worker (settlement/worker.py) calls one step per settlement state, outside any database transaction,
and moves the settlement on when the step says so:

| state     | step       | the settlement moves on when                                   | to        |
|-----------|------------|----------------------------------------------------------------|-----------|
| accepted  | ``open``    | it returns True                                               | initiated |
| initiated | ``funding`` | it returns ``FUNDED``; ``EXPIRED``: once ``refund`` returns True | prepared; failed |
| prepared  | ``execute`` | it returns True                                               | executed  |
| executed  | ``confirm`` | it returns True                                               | completed |

False (``WAITING``) means "not yet": the worker asks again on its next round. A step never blocks waiting for the
outside system: it sends at most one transaction, records it, and returns; a later call finds it again.

Every step is idempotent against the outside system (it reads before it acts, and adopts what it finds), so a
worker killed at any point and restarted repeats no payment. A step records what brokers must see (the escrow
object, each transaction hash before it is sent) through ``record``, which commits at once. A ``PaymentError`` is
final: the settlement fails with its reason. Any other exception is transient: the worker retries the step later,
with the reason in the settlement's log.
"""
import enum
from collections.abc import Callable

from django.conf import settings
from django.utils.module_loading import import_string

from channels_app.errors import Code, DomainError


class PaymentError(Exception):
    """The payment can never go on (e.g. the contract refuses the escrow as computed): the settlement fails."""


class Funding(enum.Enum):
    WAITING = "waiting"  # not every leg paid yet, and still time
    FUNDED = "funded"  # every leg paid (and confirmed)
    EXPIRED = "expired"  # the deadline passed without every leg paid: refund, then fail


# record(...): persist (and announce) what the step established, committed at once
# (settlement.services.record_payment_progress takes its keyword arguments).
Recorder = Callable[..., None]


class PaymentBackend:
    name = ""

    def check_available(self, *, chain_id: int, markets: list[str]) -> None:
        """Raise DomainError(payment_method_unavailable) when this method cannot settle these markets on
        ``chain_id`` now (checked when a settlement is requested)."""

    def operator_chain_id(self) -> int:
        """The chain of a settlement the operator starts itself (a margin call): no chain for a method that moves
        no money on one (1, as the spec's examples use); a chain method answers the chain it serves."""
        return 1

    def open(self, settlement, *, record: Recorder) -> bool:
        raise PaymentError(f"{self.name} cannot open a payment")

    def funding(self, settlement, *, record: Recorder) -> Funding:
        raise PaymentError(f"{self.name} cannot check funding")

    def refund(self, settlement, *, record: Recorder) -> bool:
        raise PaymentError(f"{self.name} cannot refund")

    def execute(self, settlement, *, record: Recorder) -> bool:
        raise PaymentError(f"{self.name} cannot execute")

    def confirm(self, settlement, *, record: Recorder) -> bool:
        raise PaymentError(f"{self.name} cannot confirm")


def get_backend(method: str) -> PaymentBackend:
    backends = settings.PAYMENT_BACKENDS
    if method not in backends:
        raise DomainError(Code.PAYMENT_METHOD_UNAVAILABLE, f"unknown payment method {method!r}")
    return _backend(backends[method])


_instances: dict[str, PaymentBackend] = {}


def _backend(path: str) -> PaymentBackend:
    if path not in _instances:
        _instances[path] = import_string(path)()
    return _instances[path]
