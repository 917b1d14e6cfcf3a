"""The ``mock`` method: every step succeeds at once, for testing a whole settlement without a chain."""
from settlement.payments.base import PaymentBackend


class MockBackend(PaymentBackend):
    name = "mock"

    def initiate(self, settlement) -> str:
        return f"mock-{settlement.pk}"

    def prepare(self, settlement) -> None:
        pass

    def execute(self, settlement) -> None:
        pass

    def confirm(self, settlement) -> None:
        pass
