"""The payment backend interface: how a settlement's money actually moves.

The engine calls the steps in order (initiate -> prepare -> execute -> confirm), one transaction each, and moves
the settlement to the matching state after each returns; a ``PaymentError`` moves it to ``failed``.
"""
from django.conf import settings
from django.utils.module_loading import import_string

from channels_app.errors import Code, DomainError


class PaymentError(Exception):
    """The payment could not go on; the settlement fails and its positions return to open."""


class PaymentBackend:
    name = ""

    def check_available(self, *, chain_id: int) -> None:
        """Raise DomainError(payment_method_unavailable) when this method cannot settle on ``chain_id`` now."""

    def initiate(self, settlement) -> str:
        """Start the payment; returns a reference (kept on the settlement)."""
        raise PaymentError(f"{self.name} cannot initiate")

    def prepare(self, settlement) -> None:
        raise PaymentError(f"{self.name} cannot prepare")

    def execute(self, settlement) -> None:
        raise PaymentError(f"{self.name} cannot execute")

    def confirm(self, settlement) -> None:
        raise PaymentError(f"{self.name} cannot confirm")


def get_backend(method: str) -> PaymentBackend:
    from settlement.payments.escrow import EscrowBackend
    from settlement.payments.mock import MockBackend

    if method == MockBackend.name:
        return MockBackend()
    if method == EscrowBackend.name:
        client = import_string(settings.ESCROW_CHAIN_CLIENT)() if settings.ESCROW_CHAIN_CLIENT else None
        return EscrowBackend(client)
    raise DomainError(Code.PAYMENT_METHOD_UNAVAILABLE, f"unknown payment method {method!r}")
