"""The ``mock`` method: every step succeeds at once, for testing a whole settlement without a chain. It goes through
the same worker and the same states as escrow."""
from settlement.payments.base import Funding, PaymentBackend


class MockBackend(PaymentBackend):
    name = "mock"

    def open(self, settlement, *, record) -> bool:
        return True

    def funding(self, settlement, *, record) -> Funding:
        return Funding.FUNDED

    def execute(self, settlement, *, record) -> bool:
        return True

    def confirm(self, settlement, *, record) -> bool:
        return True
