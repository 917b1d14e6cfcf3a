"""End to end: escrow settlement (docs/escrow.md) with every part a real process.

Anvil with the development chain (one per module; each test has its own channel, settlement and escrow), one Daphne
with no worker of its own (``SETTLEMENT_WORKER_IN_PROCESS=false``) and ``manage.py settlement_worker`` processes,
all on the test run's database (SQLite file, or PostgreSQL + Redis when DATABASE_URL / REDIS_URL are set). Brokers
are Anvil's accounts 0 (alice) and 1 (bob), speaking the protocol over real sockets (every frame they receive is
checked against the spec) and paying from their own keys.

Without Redis each process has its own in-memory channel layer, so the worker's notifications cannot reach the
brokers (docs/escrow.md section 5 runs the worker inside the server there): brokers then learn the state by asking
(``settlements``), which is also what examples/fund_escrow.py falls back on. With Redis they hear every state.
"""
import asyncio
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from channels.db import database_sync_to_async
from eth_account import Account
from web3 import Web3

from examples import fund_escrow
from settlement.chain.deploy import contract, send
from settlement.chain.devchain import CHAIN_ID, DEV_KEYS, deploy_dev_chain, start_anvil, stop_anvil
from settlement.models import Settlement, SettlementLogEntry, WorkerLease
from tests.client import NetworkClient
from tests.e2e.servers import REPO, DaphneProcess, free_port

pytestmark = pytest.mark.e2e
STEP_TIMEOUT = 30  # seconds for any one thing to happen
ALICE, BOB = DEV_KEYS[0], DEV_KEYS[1]
ENDED = ("completed", "failed", "rejected")
WITH_REDIS = bool(os.environ.get("REDIS_URL"))


# --- the chain ------------------------------------------------------------------------------------------------
@dataclass
class DevChain:
    process: subprocess.Popen
    env: dict  # ESCROW_RPC_URL, ESCROW_CONTRACT, ESCROW_TOKENS, ESCROW_CONFIRMATIONS, OPERATOR_PRIVATE_KEY
    w3: Web3
    escrow: object
    tokens: dict  # asset -> TestToken contract

    @property
    def rpc_url(self) -> str:
        return self.env["ESCROW_RPC_URL"]

    def balances(self, *holders) -> dict:
        return {(asset, holder): token.functions.balanceOf(holder).call()
                for asset, token in self.tokens.items() for holder in holders}

    def events(self, name: str, escrow_id: str) -> list:
        return getattr(self.escrow.events, name)().get_logs(argument_filters={"escrowId": escrow_id}, from_block=0)

    def advance_past(self, deadline: int) -> None:
        """Move the chain's clock past ``deadline`` and mine a block there."""
        now = self.w3.eth.get_block("latest")["timestamp"]
        self.w3.provider.make_request("evm_increaseTime", [max(deadline - now + 1, 1)])
        self.w3.provider.make_request("evm_mine", [])

    def pause(self) -> None:  # the node hangs: connections are accepted, nothing is answered
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.process.send_signal(signal.SIGCONT)


@pytest.fixture(scope="module")
def chain():
    process = start_anvil(free_port())
    try:
        env = deploy_dev_chain(process.rpc_url)
        w3 = Web3(Web3.HTTPProvider(process.rpc_url))
        tokens = {asset: contract(w3, "TestToken", address)
                  for asset, address in (pair.split("=") for pair in env["ESCROW_TOKENS"].split(","))}
        yield DevChain(process, env, w3, contract(w3, "SettlementEscrow", env["ESCROW_CONTRACT"]), tokens)
    finally:
        process.send_signal(signal.SIGCONT)  # never leave it stopped
        stop_anvil(process)


# --- the operator: one Daphne, workers as their own processes ---------------------------------------------------
class Worker:
    """``manage.py settlement_worker`` with the server's environment plus ``extra``; its output in a file."""

    def __init__(self, env: dict, label: str, **extra: str):
        self.label = label
        self.log_path = Path(env["VAR_DIR"]).parent / f"worker-{label}.log"
        with open(self.log_path, "w") as log:
            self.process = subprocess.Popen([sys.executable, "manage.py", "settlement_worker"], cwd=REPO,
                                            env={**env, **extra}, stdout=log, stderr=subprocess.STDOUT)

    @property
    def output(self) -> str:
        return self.log_path.read_text()

    @property
    def name(self) -> str:
        """Its lease holder name, from its start line ``payment worker NAME: polling every ...``."""
        line = next(line for line in self.output.splitlines() if line.startswith("payment worker "))
        return line.removeprefix("payment worker ").split(": polling")[0]

    async def printed(self, text: str, timeout: float = STEP_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output:
            assert self.process.poll() is None, f"worker {self.label} exited:\n{self.output[-3000:]}"
            assert time.monotonic() < deadline, f"worker {self.label} never printed {text!r}:\n{self.output[-3000:]}"
            await asyncio.sleep(0.1)

    async def exited(self, timeout: float = STEP_TIMEOUT) -> int:
        deadline = time.monotonic() + timeout
        while self.process.poll() is None:
            assert time.monotonic() < deadline, f"worker {self.label} still running:\n{self.output[-3000:]}"
            await asyncio.sleep(0.1)
        return self.process.returncode

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


class Operator:
    def __init__(self, env: dict):
        self.env, self.workers, self.clients, self.server = env, [], [], DaphneProcess(env)

    def worker(self, label: str, **extra: str) -> Worker:
        self.workers.append(Worker(self.env, label, **extra))
        return self.workers[-1]

    @property
    def url(self) -> str:
        return self.server.url


@pytest.fixture
async def operator(daphne_env, chain):
    """A Daphne that checks escrow availability on the chain but drives nothing; ``operator.worker(...)`` starts
    workers (before ``operator.server.start()`` if they should come up meanwhile)."""
    env = {**daphne_env, **chain.env, "SETTLEMENT_WORKER_IN_PROCESS": "false", "ESCROW_FUNDING_SECONDS": "600",
           "SETTLEMENT_WORKER_POLL_SECONDS": "0.1", "SETTLEMENT_WORKER_LEASE_SECONDS": "2"}
    running = Operator(env)
    try:
        yield running
    finally:
        for client in running.clients:
            await drain(client, quiet=0.2)  # unread frames would hold up the close handshake (and are checked too)
            await client.close()
        for worker in running.workers:
            worker.stop()
        running.server.stop()


async def start(operator: Operator, **workers: dict) -> list[Worker]:
    """Start the named workers (each with its extra environment) and the server, at the same time."""
    started = [operator.worker(label, **extra) for label, extra in workers.items()]
    await asyncio.to_thread(operator.server.start)
    return started


# --- brokers --------------------------------------------------------------------------------------------------
async def broker(operator: Operator, key: str) -> NetworkClient:
    client = await (await NetworkClient(operator.url, account=Account.from_key(key)).connect()).login()
    operator.clients.append(client)
    return await client.subscribe()


async def channel_with_pnl(alice, bob) -> str:
    """A channel where alice owes 19.75 USD and bob owes 30.0000005 USDT (30000001 units: half a unit rounds up),
    each market with an open position (marked at its last trade: no unrealized PnL)."""
    channel_id = await alice.open_channel(bob, deposit="100000")
    for client in (alice, bob):
        await client.notification("stream_notification", action="channelOpened", channel_status="opened",
                                  timeout=STEP_TIMEOUT)
    for n, (market, direction, amount, price) in enumerate([
            ("ETH/USD", "buy", "2", "100"), ("ETH/USD", "sell", "2", "90.125"), ("ETH/USD", "buy", "1", "90"),
            ("BTC/USDT", "buy", "1", "100"), ("BTC/USDT", "sell", "1", "130.0000005"),
            ("BTC/USDT", "buy", "1", "130")]):
        await alice.record(channel_id, external_id=f"t{n}", market=market, direction=direction, amount=amount,
                           price=price)
    return channel_id


async def request_escrow(client, channel_id, markets=("ETH/USD", "BTC/USDT")) -> None:
    """Request it; while the server has not yet checked the chain (it does so in the background once it serves,
    docs/escrow.md) it answers ``payment_method_unavailable`` "not available yet", and a broker asks again."""
    deadline = time.monotonic() + STEP_TIMEOUT
    while True:
        frame = await client.request("request_settlement", {"channel_id": channel_id, "payment_method": "escrow",
                                                            "chain_id": CHAIN_ID, "markets": list(markets)})
        if frame["event"] == "request_settlement":
            return
        assert "not available yet" in frame["data"]["error"] and time.monotonic() < deadline, frame
        await asyncio.sleep(0.2)


async def newest_settlement(client, channel_id) -> dict:
    return (await client.ok("settlements", {"channel_id": channel_id}, timeout=STEP_TIMEOUT))["data"]["settlements"][0]


async def reach(client, channel_id, state, until=None, timeout=STEP_TIMEOUT) -> dict:
    """The channel's newest settlement once it is in ``state`` (and ``until(settlement)`` holds), as the broker
    reads it with ``settlements``; fails at once if it ends in another state."""
    deadline = time.monotonic() + timeout
    while True:
        settlement = await newest_settlement(client, channel_id)
        if settlement["state"] == state and (until is None or until(settlement)):
            return settlement
        assert settlement["state"] not in ENDED, f"settlement {settlement['state']}, not {state}: {settlement}"
        assert time.monotonic() < deadline, f"not {state} within {timeout} s: {settlement}"
        await asyncio.sleep(0.2)


def fund(chain, escrow: dict, key: str) -> None:
    """A broker's wallet pays its legs in, as examples/fund_escrow.py does (its checks included)."""
    operator_address = Account.from_key(chain.env["OPERATOR_PRIVATE_KEY"]).address
    fund_escrow.fund(chain.w3, Account.from_key(key), escrow, operator_address)


async def run_fund_escrow(url: str, rpc_url: str, key: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "examples/fund_escrow.py", url, "--key-env", "BROKER_KEY", "--rpc-url", rpc_url,
        "--timeout", str(STEP_TIMEOUT * 2), cwd=REPO, env={**os.environ, "BROKER_KEY": key},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)


async def finished(process: asyncio.subprocess.Process) -> tuple[int, str, str]:
    stdout, stderr = await asyncio.wait_for(process.communicate(), STEP_TIMEOUT * 3)
    return process.returncode, stdout.decode(), stderr.decode()


async def drain(client, quiet: float = 0.5) -> None:
    """Receive (and so check against the spec) whatever is still on its way to the broker."""
    while True:
        try:
            client.notes.append(await client.recv(timeout=quiet))
        except TimeoutError:
            return


async def heard_states(client) -> list[str]:
    """The settlement states the broker was notified of, in order (same-state updates folded)."""
    await drain(client)
    states = []
    for frame in client.notes:
        if frame["event"] == "settlement_notification" and frame["data"]["state"] not in states[-1:]:
            states.append(frame["data"]["state"])
    return states


def check_heard(states: list[str], *after_accepted: str) -> None:
    """With Redis the worker's notifications cross processes: the broker hears every state; without, only what
    the server itself did (proposed, accepted)."""
    assert states == ["proposed", "accepted", *(after_accepted if WITH_REDIS else ())], states


@database_sync_to_async
def stored(settlement_id: int) -> Settlement:
    return Settlement.objects.get(pk=settlement_id)


@database_sync_to_async
def lease() -> WorkerLease:
    return WorkerLease.objects.get()


@database_sync_to_async
def reached_at(settlement_id: int, state: str):
    return Settlement.objects.get(pk=settlement_id).transitions.get(to_state=state).at


@database_sync_to_async
def log_of(settlement_id: int) -> list[tuple[str, str]]:
    return list(SettlementLogEntry.objects.filter(settlement_id=settlement_id).values_list("state", "message"))


# --- the tests ------------------------------------------------------------------------------------------------
async def test_both_brokers_fund_from_their_own_keys_with_the_example_and_the_settlement_completes(operator, chain):
    await start(operator, worker={})
    alice, bob = await broker(operator, ALICE), await broker(operator, BOB)
    channel_id = await channel_with_pnl(alice, bob)
    before = chain.balances(alice.address, bob.address, chain.escrow.address)

    await request_escrow(alice, channel_id)
    scripts = [await run_fund_escrow(operator.url, chain.rpc_url, key) for key in (ALICE, BOB)]
    (alice_rc, alice_out, alice_err), (bob_rc, bob_out, bob_err) = [await finished(s) for s in scripts]
    assert (alice_rc, bob_rc) == (0, 0), alice_out + alice_err + bob_out + bob_err
    completed = await reach(alice, channel_id, "completed")

    escrow = completed["escrow"]
    assert [(leg["asset"], leg["from"], leg["to"], leg["units"], leg["funded"]) for leg in escrow["legs"]] == [
        ("USD", alice.address, bob.address, "19750000", True), ("USDT", bob.address, alice.address, "30000001", True)]
    steps = [(t["step"], t.get("from")) for t in escrow["transactions"]]
    assert steps[0] == ("open", None) and steps[-1] == ("execute", None)
    assert sorted(steps[1:3]) == sorted([("fund", alice.address), ("fund", bob.address)]), steps
    for out, payer in ((alice_out, alice.address), (bob_out, bob.address)):  # what each broker printed
        printed = [line.split()[:2] for line in out.splitlines() if line.startswith(("approve 0x", "fund 0x"))]
        assert [step for step, _ in printed] == ["approve", "fund"], out
        assert {"step": "fund", "hash": printed[1][1], "from": payer} in escrow["transactions"]
        assert f"settlement {completed['settlement_id']} completed" in out

    after = chain.balances(alice.address, bob.address, chain.escrow.address)
    assert after[("USD", alice.address)] == before[("USD", alice.address)] - 19_750_000
    assert after[("USD", bob.address)] == before[("USD", bob.address)] + 19_750_000
    assert after[("USDT", bob.address)] == before[("USDT", bob.address)] - 30_000_001
    assert after[("USDT", alice.address)] == before[("USDT", alice.address)] + 30_000_001
    assert after[("USDC", alice.address)] == before[("USDC", alice.address)]
    assert after[("USD", chain.escrow.address)] == before[("USD", chain.escrow.address)]
    assert after[("USDT", chain.escrow.address)] == before[("USDT", chain.escrow.address)]
    for client in (alice, bob):
        check_heard(await heard_states(client), "initiated", "prepared", "executed", "completed")


async def test_a_debtor_that_never_funds_fails_the_settlement_after_the_deadline_and_the_other_is_refunded(
        operator, chain):
    await start(operator, worker={})
    alice, bob = await broker(operator, ALICE), await broker(operator, BOB)
    channel_id = await channel_with_pnl(alice, bob)
    before = chain.balances(alice.address, bob.address)

    await request_escrow(alice, channel_id)
    script = await run_fund_escrow(operator.url, chain.rpc_url, ALICE)  # bob never pays
    initiated = await reach(alice, channel_id, "initiated", until=lambda s: s["escrow"]["legs"][0]["funded"])
    escrow = initiated["escrow"]
    assert [leg["funded"] for leg in escrow["legs"]] == [True, False]
    assert chain.balances(alice.address)[("USD", alice.address)] == before[("USD", alice.address)] - 19_750_000

    chain.advance_past(escrow["deadline"])  # on the chain's clock, which is the one that counts
    failed = await reach(alice, channel_id, "failed")
    assert [t["step"] for t in failed["escrow"]["transactions"]] == ["open", "fund", "refund"]
    assert len(chain.events("Refunded", escrow["escrow_id"])) == 1
    assert chain.balances(alice.address, bob.address) == before  # alice's 19.75 USD are back in her wallet
    for client in (alice, bob):
        assert {p["status"] for p in (await client.positions(channel_id)).values()} == {"open"}

    returncode, out, err = await finished(script)  # the example stops with exit 1 and one line
    assert returncode == 1 and err.strip().splitlines() == [
        f"fund_escrow: settlement {failed['settlement_id']} is failed"], out + err
    assert "fund 0x" in out
    check_heard(await heard_states(alice), "initiated", "failed")


async def test_a_worker_killed_after_sending_open_and_after_sending_execute_repeats_nothing(operator, chain):
    """FAILPOINTS end a worker right after it sent a transaction, before it saw the receipt; a worker started
    after the dead one's lease expired finishes from what is on chain and in the database."""
    lease_env = {"SETTLEMENT_WORKER_LEASE_SECONDS": "3"}
    [first] = await start(operator, first={**lease_env, "FAILPOINTS": "after-send:open"})
    alice, bob = await broker(operator, ALICE), await broker(operator, BOB)
    channel_id = await channel_with_pnl(alice, bob)
    await request_escrow(alice, channel_id)

    assert await first.exited() == 137, first.output
    assert "failpoint after-send:open reached" in first.output
    dead = await lease()
    assert dead.holder == first.name  # the dead worker's lease: it outlives the worker by up to 3 s
    accepted = await reach(alice, channel_id, "accepted")
    settlement_id = accepted["settlement_id"]
    open_hash = (await stored(settlement_id)).payment_state["pending"]["hash"]
    assert [(t["step"], t["hash"]) for t in accepted["escrow"]["transactions"]] == [("open", open_hash)]
    assert chain.w3.eth.get_transaction_receipt(open_hash)["status"] == 1  # it was sent, and mined

    second = operator.worker("second", **lease_env, FAILPOINTS="after-send:execute")
    escrow = (await reach(alice, channel_id, "initiated"))["escrow"]
    assert await reached_at(settlement_id, "initiated") >= dead.expires_at  # not before the lease expired
    for key in (ALICE, BOB):
        fund(chain, escrow, key)
    assert await second.exited() == 137, second.output
    assert "failpoint after-send:execute reached" in second.output
    prepared = await reach(alice, channel_id, "prepared")
    execute_hash = (await stored(settlement_id)).payment_state["pending"]["hash"]
    assert prepared["escrow"]["transactions"][-1] == {"step": "execute", "hash": execute_hash}
    assert chain.w3.eth.get_transaction_receipt(execute_hash)["status"] == 1

    third = operator.worker("third", **lease_env)
    completed = await reach(alice, channel_id, "completed")
    assert third.process.poll() is None, third.output
    assert [t["hash"] for t in completed["escrow"]["transactions"] if t["step"] in ("open", "execute")] == [
        open_hash, execute_hash]
    assert [log["transactionHash"].to_0x_hex() for log in chain.events("Opened", escrow["escrow_id"])] == [open_hash]
    assert [log["transactionHash"].to_0x_hex() for log in chain.events("Executed", escrow["escrow_id"])] == [
        execute_hash]
    assert (await stored(settlement_id)).payment_state == {}  # nothing awaited any more


async def test_the_node_hanging_for_ten_seconds_holds_the_settlement_logs_why_and_it_completes_after(
        operator, chain):
    """SIGSTOP, not a restart: Anvil keeps its chain in memory only, so a restarted node would be another chain (the
    escrow gone); a stopped node still accepts connections and answers nothing, so every call times out, which is
    what a hung node or a partitioned network does and the harder case for the worker (no quick refusal)."""
    await start(operator, worker={"ESCROW_RPC_TIMEOUT_SECONDS": "1"})
    alice, bob = await broker(operator, ALICE), await broker(operator, BOB)
    channel_id = await channel_with_pnl(alice, bob)
    await request_escrow(alice, channel_id)
    initiated = await reach(alice, channel_id, "initiated")
    settlement_id = initiated["settlement_id"]

    chain.pause()
    paused_at = time.monotonic()
    try:
        while not await log_of(settlement_id):  # noticed within the RPC timeout, not after web3's hidden retries
            assert time.monotonic() - paused_at < 5, "the hung node is not in the settlement's log after 5 s"
            await asyncio.sleep(0.1)
        await asyncio.sleep(10 - (time.monotonic() - paused_at))
        during = await newest_settlement(alice, channel_id)  # the server answers: it never waits on the chain
        log = await log_of(settlement_id)
        row = await stored(settlement_id)
    finally:
        chain.resume()
    assert during["state"] == "initiated", during  # the chain down fails nothing
    assert log and all(state == "initiated" for state, _ in log), log
    assert any("timed out" in message.lower() or "timeout" in message.lower() for _, message in log), log
    assert row.attempts >= 1 and row.last_error
    assert all(a != b for a, b in zip(log, log[1:])), log  # once per distinct error, not once per attempt

    for key in (ALICE, BOB):
        fund(chain, initiated["escrow"], key)
    await reach(alice, channel_id, "completed")
    row = await stored(settlement_id)
    assert (row.attempts, row.last_error, row.next_attempt_at) == (0, "", None)
    assert (await log_of(settlement_id))[:len(log)] == log  # the reason stays in the settlement's history


async def test_of_two_workers_one_sends_and_the_other_takes_over_when_it_is_killed(operator, chain):
    lease_env = {"SETTLEMENT_WORKER_LEASE_SECONDS": "4"}
    workers = await start(operator, a=lease_env, b=lease_env)
    for worker in workers:
        await worker.printed("standing by")  # both up, neither holding (nothing to do yet)
    alice, bob = await broker(operator, ALICE), await broker(operator, BOB)
    channel_id = await channel_with_pnl(alice, bob)
    await request_escrow(alice, channel_id)
    escrow = (await reach(alice, channel_id, "initiated"))["escrow"]
    for key in (ALICE, BOB):
        fund(chain, escrow, key)
    await reach(alice, channel_id, "completed")

    senders = [w for w in workers if "holding the lease: sending" in w.output]
    assert len(senders) == 1, [w.output for w in workers]
    [holder], [standby] = senders, [w for w in workers if w is not senders[0]]
    assert "state change(s)" in holder.output and "state change(s)" not in standby.output
    assert len(chain.events("Opened", escrow["escrow_id"])) == len(chain.events("Executed", escrow["escrow_id"])) == 1

    holder.kill()
    dead = await lease()
    assert dead.holder == holder.name
    for n, (direction, price) in enumerate([("buy", "100"), ("sell", "95"), ("buy", "95")]):  # alice owes 5 USD
        await alice.record(channel_id, external_id=f"second-{n}", market="ETH/USD", direction=direction,
                           amount="1", price=price)
    await request_escrow(alice, channel_id, ["ETH/USD"])
    second = await reach(alice, channel_id, "initiated")
    assert await reached_at(second["settlement_id"], "initiated") >= dead.expires_at
    assert [(leg["from"], leg["units"]) for leg in second["escrow"]["legs"]] == [(alice.address, "5000000")]
    fund(chain, second["escrow"], ALICE)
    await reach(alice, channel_id, "completed")
    assert "holding the lease: sending" in standby.output and "state change(s)" in standby.output
    escrow_id = second["escrow"]["escrow_id"]
    assert len(chain.events("Opened", escrow_id)) == len(chain.events("Executed", escrow_id)) == 1


def test_the_example_refuses_an_escrow_it_cannot_trust_and_sends_nothing(chain):
    """examples/fund_escrow.py checks on chain before it pays: the escrow belongs to the operator it talks to, on the
    chain its node serves, with the legs announced, before the deadline; otherwise it stops and sends nothing."""
    operator_account, alice = Account.from_key(chain.env["OPERATOR_PRIVATE_KEY"]), Account.from_key(ALICE)
    channel_id = "0x" + secrets.token_hex(32)
    deadline = chain.w3.eth.get_block("latest")["timestamp"] + 600
    token, bob = chain.tokens["USD"].address, Account.from_key(BOB).address
    send(chain.w3, operator_account, chain.escrow.functions.open(
        channel_id, 1, [(token, alice.address, bob, 1_000_000)], deadline).build_transaction(
        {"from": operator_account.address}))
    leg = {"asset": "USD", "token": token, "decimals": 6, "from": alice.address, "to": bob, "amount": "1",
           "units": "1000000", "funded": False}
    announced = {"chain_id": CHAIN_ID, "contract": chain.escrow.address, "deadline": deadline, "legs": [leg],
                 "escrow_id": "0x" + chain.escrow.functions.escrowIdOf(channel_id, 1).call().hex(), "transactions": []}
    nonce = chain.w3.eth.get_transaction_count(alice.address)
    for escrow, identity, sentence in [
            (announced, bob, f"belongs to operator {operator_account.address}, not to {bob}"),
            ({**announced, "chain_id": 1}, operator_account.address, "is on chain 1"),
            ({**announced, "legs": [{**leg, "units": "100"}]}, operator_account.address, "differ from the ones"),
            ({**announced, "legs": [{**leg, "to": alice.address}]}, operator_account.address, "differ from the ones")]:
        with pytest.raises(fund_escrow.FundError, match=sentence):
            fund_escrow.fund(chain.w3, alice, escrow, identity)
    chain.advance_past(deadline)
    with pytest.raises(fund_escrow.FundError, match="deadline .* has passed"):
        fund_escrow.fund(chain.w3, alice, announced, operator_account.address)
    assert chain.w3.eth.get_transaction_count(alice.address) == nonce  # not one transaction sent
