"""Escrow settlement through the protocol (docs/escrow.md), on a real Anvil node: brokers fund from their own keys,
the payment worker (running in this process, as on the embedded default) drives every step."""
import asyncio
from decimal import Decimal

import pytest
from eth_account import Account

from channels.db import database_sync_to_async

from channels_app.identity import operator_keys
from channels_app.services.marks import set_mark
from settlement.chain.devchain import CHAIN_ID, DEV_KEYS
from settlement.models import Settlement, SettlementLogEntry
from settlement.payments import base as payment_backends
from tests import chain_node

anvil, chain = chain_node.anvil, chain_node.chain
pytestmark = pytest.mark.django_db(transaction=True)
UNIT = 10**6


@pytest.fixture
def escrow_env(chain, settings):
    """The server configured for the session's chain, signing as the escrow's operator."""
    for key, value in chain.env.items():
        setattr(settings, key, int(value) if key == "ESCROW_CONFIRMATIONS" else value)
    settings.ESCROW_FUNDING_SECONDS = 600
    settings.SETTLEMENT_WORKER_POLL_SECONDS = 0.05
    operator_keys.cache_clear()
    payment_backends._instances.clear()
    assert payment_backends.get_backend("escrow").ensure_verified()  # what each process does in the background
    yield chain
    operator_keys.cache_clear()
    payment_backends._instances.clear()


@pytest.fixture
async def brokers(connect, escrow_env):
    """Alice and Bob on two of Anvil's funded accounts, subscribed, with a channel (deposit 100000)."""
    alice = await (await connect(Account.from_key(DEV_KEYS[0]))).subscribe()
    bob = await (await connect(Account.from_key(DEV_KEYS[1]))).subscribe()
    channel_id = await alice.open_channel(bob, deposit="100000")
    for client in (alice, bob):
        await client.notification("stream_notification", action="channelOpened", channel_status="opened")
    return alice, bob, channel_id


async def mark(market: str, price: str) -> None:
    await database_sync_to_async(set_mark)(market=market, price=Decimal(price))


def escrow_request(channel_id, markets, chain_id=CHAIN_ID):
    return {"channel_id": channel_id, "payment_method": "escrow", "chain_id": chain_id, "markets": list(markets)}


async def settlement_state(client, state, timeout=10) -> dict:
    return (await client.notification("settlement_notification", timeout=timeout, state=state))["data"]


def fund(chain, escrow: dict, payer: str) -> None:
    """A broker's wallet: approve the escrow for its legs, then fund (docs/escrow.md section 3, initiated)."""
    for leg in escrow["legs"]:
        if leg["from"] == payer:
            token = chain.w3.eth.contract(address=leg["token"], abi=chain.tokens["USD"].abi)
            chain.transact(token.functions.approve(escrow["contract"], int(leg["units"])), payer)
    chain.transact(chain.escrow.functions.fund(escrow["escrow_id"]), payer)


def balances(chain, holders) -> dict:
    return {(asset, holder): token.functions.balanceOf(holder).call()
            for asset, token in chain.tokens.items() for holder in holders}


async def test_an_escrow_settlement_funded_by_both_brokers_completes_and_moves_exactly_the_legs(brokers, chain):
    alice, bob, channel_id = brokers
    # ETH/USD: alice buys 2 @ 100, marked by a sell @ 90.125 -> alice owes 20 - 0.125... realized: -19.75 USD
    await alice.record(channel_id, external_id="1", market="ETH/USD", direction="buy", amount="2", price="100")
    await alice.record(channel_id, external_id="2", market="ETH/USD", direction="sell", amount="2", price="90.125")
    # BTC/USDT: alice buys 1 @ 100 and sells @ 130.0000005 -> bob owes 30.0000005 USDT (half a unit: rounds up)
    await alice.record(channel_id, external_id="3", market="BTC/USDT", direction="buy", amount="1", price="100")
    await alice.record(channel_id, external_id="4", market="BTC/USDT", direction="sell", amount="1",
                       price="130.0000005")
    await alice.record(channel_id, external_id="5", market="ETH/USD", direction="buy", amount="1", price="90")
    await alice.record(channel_id, external_id="6", market="BTC/USDT", direction="buy", amount="1", price="130")
    before = balances(chain, [alice.address, bob.address, chain.escrow.address])

    await alice.ok("request_settlement", escrow_request(channel_id, ["BTC/USDT", "ETH/USD"]))
    initiated = await settlement_state(bob, "initiated")
    escrow = initiated["escrow"]
    assert escrow["chain_id"] == CHAIN_ID and escrow["contract"] == chain.escrow.address
    assert escrow["escrow_id"] == "0x" + chain.escrow.functions.escrowIdOf(
        bytes.fromhex(channel_id[2:]), initiated["settlement_id"]).call().hex()
    assert escrow["deadline"] > chain.block_time()
    assert escrow["legs"] == [
        {"asset": "USD", "token": chain.tokens["USD"].address, "decimals": 6, "from": alice.address,
         "to": bob.address, "amount": "19.75", "units": "19750000", "funded": False},
        {"asset": "USDT", "token": chain.tokens["USDT"].address, "decimals": 6, "from": bob.address,
         "to": alice.address, "amount": "30.0000005", "units": "30000001", "funded": False},
    ]
    assert [t["step"] for t in escrow["transactions"]] == ["open"]

    fund(chain, escrow, alice.address)
    funded = await settlement_state(bob, "initiated")  # alice's payment lands: same state, leg funded
    assert [leg["funded"] for leg in funded["escrow"]["legs"]] == [True, False]
    assert {"step": "fund", "hash": funded["escrow"]["transactions"][1]["hash"], "from": alice.address} in \
        funded["escrow"]["transactions"]
    fund(chain, escrow, bob.address)
    for state in ("prepared", "executed", "completed"):
        last = await settlement_state(alice, state)
    assert [t["step"] for t in last["escrow"]["transactions"]] == ["open", "fund", "fund", "execute"]
    assert all(leg["funded"] for leg in last["escrow"]["legs"])

    after = balances(chain, [alice.address, bob.address, chain.escrow.address])
    assert after[("USD", alice.address)] == before[("USD", alice.address)] - 19_750_000
    assert after[("USD", bob.address)] == before[("USD", bob.address)] + 19_750_000
    assert after[("USDT", bob.address)] == before[("USDT", bob.address)] - 30_000_001
    assert after[("USDT", alice.address)] == before[("USDT", alice.address)] + 30_000_001
    assert after[("USD", chain.escrow.address)] == after[("USDT", chain.escrow.address)] == 0
    listed = (await alice.ok("settlements", {"channel_id": channel_id}))["data"]["settlements"][0]
    assert listed["state"] == "completed" and listed["escrow"] == last["escrow"]


async def test_a_settlement_with_nothing_to_pay_passes_every_state_without_a_transaction(brokers, chain):
    alice, bob, channel_id = brokers
    await alice.record(channel_id, external_id="1", market="ETH/USD", direction="buy", amount="1", price="100")
    block = chain.w3.eth.block_number
    await alice.ok("request_settlement", escrow_request(channel_id, ["ETH/USD"]))  # marked at 100: no PnL
    completed = await settlement_state(alice, "completed")
    assert completed["escrow"] == {"chain_id": CHAIN_ID, "legs": [], "transactions": []}
    assert chain.w3.eth.block_number == block


@pytest.mark.parametrize("request_data, sentence", [
    ({"chain_id": 1}, f"on chain {CHAIN_ID} only"),
    ({"markets": ["ETH/EUR"]}, "no token for EUR"),
])
async def test_escrow_is_unavailable_for_another_chain_or_an_asset_without_a_token(brokers, request_data, sentence):
    alice, bob, channel_id = brokers
    await alice.record(channel_id, external_id="1", market="ETH/EUR", direction="buy", amount="1", price="100")
    data = {**escrow_request(channel_id, ["ETH/EUR"]), **request_data}
    error = await alice.error("request_settlement", data, code="payment_method_unavailable")
    assert sentence in error["error"]
    assert not await Settlement.objects.aexists()


async def test_one_debtor_never_funds_after_the_deadline_the_payment_goes_back_and_the_settlement_fails(
        brokers, chain, settings):
    alice, bob, channel_id = brokers
    await alice.record(channel_id, external_id="1", market="ETH/USD", direction="buy", amount="1", price="100")
    await alice.record(channel_id, external_id="2", market="BTC/USDT", direction="buy", amount="1", price="100")
    await mark("ETH/USD", "90")  # alice long ETH 1 @100 marked 90: she owes 10 USD
    await mark("BTC/USDT", "105")  # alice long BTC 1 @100 marked 105: bob owes 5 USDT
    before = balances(chain, [alice.address, bob.address])
    await alice.ok("request_settlement", escrow_request(channel_id, ["ETH/USD", "BTC/USDT"]))
    escrow = (await settlement_state(alice, "initiated"))["escrow"]
    fund(chain, escrow, alice.address)  # bob never pays
    await settlement_state(alice, "initiated")
    chain.advance(escrow["deadline"] - chain.block_time() + 1)  # past the deadline, on the chain's clock
    failed = await settlement_state(alice, "failed", timeout=15)
    assert [t["step"] for t in failed["escrow"]["transactions"]] == ["open", "fund", "refund"]
    assert balances(chain, [alice.address, bob.address]) == before  # alice's 10 USD are back in her wallet
    positions = await alice.positions(channel_id)
    assert {p["status"] for p in positions.values()} == {"open"}


async def test_the_contract_refusing_the_escrow_fails_the_settlement_with_the_reason(brokers, chain, settings):
    """17 quote assets make 17 legs: the contract opens 1 to 16 (BadLegCount), so the settlement can never be paid."""
    alice, bob, channel_id = brokers
    assets = [f"Q{i}" for i in range(17)]
    settings.ESCROW_TOKENS = ",".join(f"{asset}={chain.tokens['USD'].address}" for asset in assets)
    markets = [f"ETH/{asset}" for asset in assets]
    for i, market in enumerate(markets):
        await alice.record(channel_id, external_id=f"a{i}", market=market, direction="buy", amount="1", price="100")
        await mark(market, "101")
    await alice.ok("request_settlement", escrow_request(channel_id, markets))
    await settlement_state(alice, "failed", timeout=15)
    settlement = await Settlement.objects.aget()
    note = (await settlement.transitions.order_by("id").alast()).note
    assert note.startswith("accepted: the escrow contract refuses open") and "BadLegCount" in note, note
    positions = await alice.positions(channel_id)
    assert {p["status"] for p in positions.values()} == {"open"}


async def test_the_chain_going_away_leaves_the_settlement_where_it_is_and_logs_the_reason_once(
        brokers, chain, settings):
    alice, bob, channel_id = brokers
    settings.ESCROW_RPC_URL = "http://127.0.0.1:9"  # nothing listens there
    settings.SETTLEMENT_WORKER_POLL_SECONDS = 0.02
    await alice.record(channel_id, external_id="1", market="ETH/USD", direction="buy", amount="1", price="100")
    await mark("ETH/USD", "90")
    backend = payment_backends.get_backend("escrow")
    backend._verified[settings.ESCROW_RPC_URL, settings.ESCROW_CONTRACT] = CHAIN_ID  # verified, then it went away
    await alice.ok("request_settlement", escrow_request(channel_id, ["ETH/USD"]))
    await settlement_state(alice, "accepted")
    await asyncio.sleep(1.5)  # many rounds of the worker
    settlement = await Settlement.objects.aget()
    assert settlement.state == "accepted" and settlement.attempts >= 2 and settlement.last_error
    assert await SettlementLogEntry.objects.acount() == 1  # once per distinct error
    settings.ESCROW_RPC_URL = chain.env["ESCROW_RPC_URL"]
    await Settlement.objects.aupdate(next_attempt_at=None)  # no need to wait out the backoff in a test
    await settlement_state(alice, "initiated", timeout=10)
    settlement = await Settlement.objects.aget()
    assert (settlement.attempts, settlement.last_error) == (0, "")
    assert Decimal(settlement.escrow["legs"][0]["amount"]) == 10
