"""The ``escrow`` method: on-chain escrow through a chain client that the operator configures.

``ESCROW_CHAIN_CLIENT`` names a class with the ``ChainClient`` methods. Until one is configured the method answers
``payment_method_unavailable`` at request time, so no settlement is ever proposed that could not be paid.
"""
from typing import Protocol

from channels_app.errors import Code, DomainError
from settlement.payments.base import PaymentBackend


class ChainClient(Protocol):
    def supports_chain(self, chain_id: int) -> bool: ...

    def open_escrow(self, *, chain_id: int, channel_id: str, ledger: list[dict]) -> str: ...

    def fund_escrow(self, reference: str) -> None: ...

    def release_escrow(self, reference: str) -> None: ...

    def wait_confirmed(self, reference: str) -> None: ...


class EscrowBackend(PaymentBackend):
    name = "escrow"

    def __init__(self, client: ChainClient | None):
        self.client = client

    def check_available(self, *, chain_id: int) -> None:
        if self.client is None:
            raise DomainError(Code.PAYMENT_METHOD_UNAVAILABLE, "escrow is not available: no chain is "
                                "configured on this operator (use payment_method \"mock\" for testing)")
        if not self.client.supports_chain(chain_id):
            raise DomainError(Code.PAYMENT_METHOD_UNAVAILABLE, f"escrow is not available on chain {chain_id}")

    def initiate(self, settlement) -> str:
        return self.client.open_escrow(
            chain_id=settlement.chain_id, channel_id=settlement.channel.channel_id, ledger=settlement.ledger
        )

    def prepare(self, settlement) -> None:
        self.client.fund_escrow(settlement.payment_reference)

    def execute(self, settlement) -> None:
        self.client.release_escrow(settlement.payment_reference)

    def confirm(self, settlement) -> None:
        self.client.wait_confirmed(settlement.payment_reference)
