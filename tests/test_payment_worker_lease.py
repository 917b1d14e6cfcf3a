"""A payment worker whose step outlasted its lease (a slow chain) moves nothing: by then another worker may hold the
lease and be driving the same settlement from a fresher read (settlement/worker.py)."""
import pytest
from channels.db import database_sync_to_async

from settlement.models import Settlement, SettlementState, WorkerLease
from settlement.worker import LEASE_NAME, PaymentWorker
from tests.conftest import hold_payment_lease

pytestmark = pytest.mark.django_db(transaction=True)


async def test_a_worker_that_lost_its_lease_during_a_step_does_not_move_the_settlement(pair, monkeypatch):
    alice, bob, channel_id = pair
    await alice.record(channel_id, external_id="1", amount="1", price="100")
    slow = PaymentWorker("slow")
    await hold_payment_lease(seconds=60, holder=slow.name)  # this process's own worker stands by
    await alice.ok("request_settlement", {"channel_id": channel_id, "payment_method": "mock", "chain_id": 1,
                                          "markets": ["ETH/USD"]})
    await alice.notification("settlement_notification", state="accepted")

    def step_outlasting_the_lease(settlement):  # meanwhile its lease expired and another worker took it over
        WorkerLease.objects.filter(name=LEASE_NAME).update(holder="the-next-worker")
        return SettlementState.INITIATED, ""

    monkeypatch.setattr(slow, "step", step_outlasting_the_lease)
    assert await database_sync_to_async(slow.run_once)() == 0
    assert (await Settlement.objects.aget()).state == SettlementState.ACCEPTED
