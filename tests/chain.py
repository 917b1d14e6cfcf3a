"""A chain client for tests of the escrow payment method (no chain is reachable from CI).

It keeps what it was asked in memory; ``fail_at`` makes one step raise, as a reverted transaction would.
"""
from settlement.payments.base import PaymentError


class RecordingChain:
    calls: list[tuple] = []
    fail_at: str | None = None

    def supports_chain(self, chain_id: int) -> bool:
        return chain_id == 1

    def _step(self, name, *args):
        type(self).calls.append((name, *args))
        if type(self).fail_at == name:
            raise PaymentError(f"{name} reverted")

    def open_escrow(self, *, chain_id, channel_id, ledger):
        self._step("open_escrow", chain_id, channel_id)
        return f"escrow:{channel_id[:10]}"

    def fund_escrow(self, reference):
        self._step("fund_escrow", reference)

    def release_escrow(self, reference):
        self._step("release_escrow", reference)

    def wait_confirmed(self, reference):
        self._step("wait_confirmed", reference)
