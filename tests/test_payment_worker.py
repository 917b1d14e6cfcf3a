"""The payment worker (settlement/worker.py): requests record intent, one worker at a time drives the payment, a
standby takes over from a dead one, and nothing needs resuming by hand."""
import asyncio

import pytest

from settlement.models import Settlement, WorkerLease
from settlement.worker import LEASE_NAME, PaymentWorker
from tests.conftest import hold_payment_lease

pytestmark = pytest.mark.django_db(transaction=True)


def settle(channel_id):
    return {"channel_id": channel_id, "payment_method": "mock", "chain_id": 1, "markets": ["ETH/USD"]}


async def test_the_request_records_intent_and_the_worker_pays_after_the_reply(pair):
    alice, bob, channel_id = pair
    await alice.record(channel_id, external_id="1", amount="1", price="100")
    await hold_payment_lease(seconds=60)  # no worker of ours may send yet
    reply = await alice.request("request_settlement", settle(channel_id))
    assert reply["event"] == "request_settlement"
    await alice.notification("settlement_notification", state="accepted")
    await asyncio.sleep(0.5)
    assert (await Settlement.objects.aget()).state == "accepted"  # recorded, not paid inside the request

    await WorkerLease.objects.all().adelete()  # the other worker is gone (its lease ended)
    for state in ("initiated", "prepared", "executed", "completed"):
        await bob.notification("settlement_notification", state=state)


async def test_a_standby_takes_over_once_the_holders_lease_expires_and_finishes_what_it_left(pair, settings):
    alice, bob, channel_id = pair
    settings.SETTLEMENT_WORKER_LEASE_SECONDS = 1
    await alice.record(channel_id, external_id="1", amount="1", price="100")
    await hold_payment_lease(seconds=1.5, holder="a-worker-that-died")
    await alice.ok("request_settlement", settle(channel_id))
    await alice.notification("settlement_notification", state="accepted")
    assert (await Settlement.objects.aget()).state == "accepted"
    completed = await alice.notification("settlement_notification", state="completed", timeout=10)
    lease = await WorkerLease.objects.aget(name=LEASE_NAME)
    assert lease.holder != "a-worker-that-died"
    history = [t.to_state async for t in (await Settlement.objects.aget()).transitions.order_by("id")]
    assert history == ["proposed", "accepted", "initiated", "prepared", "executed", "completed"]
    assert completed["data"]["settlement_id"] == (await Settlement.objects.aget()).pk


def test_only_the_lease_holder_works_and_an_idle_worker_writes_nothing(transactional_db):
    first, second = PaymentWorker("first"), PaymentWorker("second")
    assert first.run_once() == 0 and not WorkerLease.objects.exists()  # no work: no lease taken, nothing written
    assert first.hold_lease() and not second.hold_lease()
    assert first.holds_lease() and not second.holds_lease()
    first.release_lease()
    assert second.hold_lease()
