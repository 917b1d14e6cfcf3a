"""The escrow backend when the chain moved behind the worker's back (settlement/payments/escrow.py), in process on a
real Anvil: a broker executes between the worker's read and its send; a recorded transaction is lost on its way and
its nonce goes to another transaction. Both must end `completed` with only real transactions listed."""
import pytest
from web3.exceptions import TransactionNotFound

from settlement.models import Settlement, SettlementLogEntry
from settlement.payments import base as payment_backends
from settlement.payments import escrow as escrow_backend
from tests.conftest import hold_payment_lease
from tests.test_escrow_settlement import (  # noqa: F401 - fixtures
    anvil, brokers, chain, escrow_env, escrow_request, fund, mark, settlement_state)

pytestmark = pytest.mark.django_db(transaction=True)


async def funded_escrow_held_back(brokers, chain) -> dict:
    """An initiated escrow (alice owes 10 USD), funded by alice while another worker holds the lease: the worker
    here has not looked at it since."""
    alice, bob, channel_id = brokers
    await alice.record(channel_id, external_id="1", market="ETH/USD", direction="buy", amount="1", price="100")
    await mark("ETH/USD", "90")
    await alice.ok("request_settlement", escrow_request(channel_id, ["ETH/USD"]))
    escrow = (await settlement_state(alice, "initiated"))["escrow"]
    await hold_payment_lease(seconds=60)
    fund(chain, escrow, alice.address)
    return escrow


async def release_lease() -> None:
    from settlement.models import WorkerLease

    await WorkerLease.objects.all().adelete()


async def test_a_broker_executing_between_the_workers_read_and_its_send_is_adopted_not_failed(
        brokers, chain, monkeypatch):
    alice, bob, channel_id = brokers
    escrow = await funded_escrow_held_back(brokers, chain)
    executed_by_alice = chain.transact(chain.escrow.functions.execute(escrow["escrow_id"]), alice.address)
    real_status = escrow_backend.EscrowBackend._status
    stale = []

    def status_read_just_before_alice_executed(self, escrow_id, block="latest"):
        found = real_status(self, escrow_id, block)
        if block == "latest" and found[0] == escrow_backend.EXECUTED and not stale:
            stale.append(found)  # once: execute() reads "open", then its send meets the executed escrow
            return (escrow_backend.OPEN, *found[1:])
        return found

    monkeypatch.setattr(escrow_backend.EscrowBackend, "_status", status_read_just_before_alice_executed)
    await release_lease()
    completed = await settlement_state(alice, "completed", timeout=15)
    assert stale, "the worker never read the escrow as open"
    executes = [t["hash"] for t in completed["escrow"]["transactions"] if t["step"] == "execute"]
    assert executes == [executed_by_alice["transactionHash"].to_0x_hex()]  # hers, adopted
    settlement = await Settlement.objects.aget()
    messages = [entry.message async for entry in SettlementLogEntry.objects.filter(settlement=settlement)]
    assert any("refuses execute now" in message for message in messages), messages


async def test_a_transaction_lost_on_its_way_whose_nonce_another_took_is_signed_again(brokers, chain, monkeypatch):
    alice, bob, channel_id = brokers
    escrow = await funded_escrow_held_back(brokers, chain)
    backend = payment_backends.get_backend("escrow")
    eth = backend.w3.eth
    real_send = eth.send_raw_transaction
    lost = []

    def lost_then_nonce_taken(raw):
        if lost:
            return real_send(raw)
        lost.append(raw)  # never reaches the node; the operator's next transaction (anything) takes its nonce
        tx = chain.w3.eth.send_transaction({"from": chain.operator, "to": chain.operator, "value": 0})
        chain.w3.eth.wait_for_transaction_receipt(tx)
        raise ConnectionError("connection reset while sending")

    monkeypatch.setattr(eth, "send_raw_transaction", lost_then_nonce_taken)
    await release_lease()
    completed = await settlement_state(alice, "completed", timeout=15)
    assert lost, "nothing was sent"
    [execute] = [t["hash"] for t in completed["escrow"]["transactions"] if t["step"] == "execute"]
    assert chain.w3.eth.get_transaction_receipt(execute)["status"] == 1
    dead = chain.w3.keccak(hexstr=lost[0]).to_0x_hex()
    assert dead != execute and dead not in {t["hash"] for t in completed["escrow"]["transactions"]}
    with pytest.raises(TransactionNotFound):
        chain.w3.eth.get_transaction(dead)
    assert len(chain.escrow.events.Executed().get_logs(argument_filters={"escrowId": escrow["escrow_id"]},
                                                        from_block=0)) == 1
    assert (await Settlement.objects.aget()).payment_state == {}
