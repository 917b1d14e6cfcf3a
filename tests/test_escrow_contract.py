"""SettlementEscrow (contracts/SettlementEscrow.sol, docs/escrow.md section 1) on a real Anvil node.

Each test starts from the freshly deployed development chain (tests/chain_node.py: snapshot before, revert after):
the escrow, whose operator is Anvil's account 9, TestTokens USD / USDT / USDC (6 decimals), a FeeToken and a
ReentrantToken, 1,000,000 of each minted to every default account.
"""
import eth_abi
import pytest
from web3 import Web3
from web3.logs import DISCARD

from settlement.chain.artifacts import abi, bytecode
from tests import chain_node
from tests.chain_node import UNIT, error_name, reverts

anvil, chain = chain_node.anvil, chain_node.chain  # the fixtures: Anvil for the module's session, reverted per test

CHANNEL = bytes.fromhex("c4" * 32)
SETTLEMENT = 7
HOUR = 3600
NONE, OPEN, EXECUTED, REFUNDED = range(4)  # Status
REENTRY = {"fund": 1, "execute": 2, "refund": 3}  # ReentrantToken.Action


@pytest.fixture
def parties(chain):
    """alice, bob, carol, dave, stranger: Anvil's accounts 1 to 5 (the operator is account 9)."""
    return chain.accounts[1:6]


def leg(token, payer, payee, amount):
    return (token.address, payer, payee, amount)


def open_escrow(chain, legs, *, settlement_id=SETTLEMENT, channel=CHANNEL, seconds=HOUR):
    """Open as the operator with a deadline ``seconds`` after the latest block: (escrow id, deadline, receipt)."""
    deadline = chain.block_time() + seconds
    receipt = chain.transact(chain.escrow.functions.open(channel, settlement_id, legs, deadline), chain.operator)
    return chain.escrow.functions.escrowIdOf(channel, settlement_id).call(), deadline, receipt


def fund(chain, payer, escrow_id, *tokens_and_amounts):
    """Approve the escrow for each (token, amount), then fund as ``payer``: the fund receipt."""
    for token, amount in tokens_and_amounts:
        chain.transact(token.functions.approve(chain.escrow.address, amount), payer)
    return chain.transact(chain.escrow.functions.fund(escrow_id), payer)


def balances(chain, tokens, holders):
    """{(token symbol, holder): balance}; the escrow's own balance under the holder "escrow"."""
    found = {}
    for token in tokens:
        symbol = token.functions.symbol().call()
        for holder in holders:
            address = chain.escrow.address if holder == "escrow" else holder
            found[symbol, holder] = token.functions.balanceOf(address).call()
    return found


def swap(chain, parties):
    """The usual settlement: alice owes bob 125.5 USD, bob owes alice 40 USDC."""
    alice, bob = parties[:2]
    usd, usdc = chain.tokens["USD"], chain.tokens["USDC"]
    return [leg(usd, alice, bob, 125_500_000), leg(usdc, bob, alice, 40 * UNIT)], usd, usdc


# -- the interface -------------------------------------------------------------------------------------------------

def signature(entry) -> str:
    def param(item):
        kind = item["type"]
        if kind.startswith("tuple"):
            kind = "(" + ",".join(param(c) for c in item["components"]) + ")" + kind[len("tuple"):]
        return kind + (" indexed" if item.get("indexed") else "") + (f" {item['name']}" if item["name"] else "")

    inputs = ",".join(param(i) for i in entry["inputs"])
    if entry["type"] == "function":
        return (f"{entry['name']}({inputs}) {entry['stateMutability']} returns "
                f"({','.join(param(o) for o in entry['outputs'])})")
    return f"{entry['type']} {entry.get('name', '')}({inputs})"


def test_the_abi_is_exactly_the_interface_of_the_escrow_document():
    entries = abi("SettlementEscrow")
    leg_tuple = "(address token,address from,address to,uint256 amount)"
    assert sorted(signature(e) for e in entries if e["type"] == "function") == sorted([
        "operator() view returns (address)",
        "escrowIdOf(bytes32 channelId,uint256 settlementId) pure returns (bytes32)",
        f"open(bytes32 channelId,uint256 settlementId,{leg_tuple}[] legs,uint64 deadline) nonpayable returns ()",
        "fund(bytes32 escrowId) nonpayable returns ()",
        "execute(bytes32 escrowId) nonpayable returns ()",
        "refund(bytes32 escrowId) nonpayable returns ()",
        "getEscrow(bytes32 escrowId) view returns "
        "(uint8 status,bytes32 channelId,uint64 deadline,uint256 legCount,uint256 fundedCount)",
        f"getLegs(bytes32 escrowId) view returns ({leg_tuple}[] legs,bool[] funded)",
    ])
    assert sorted(signature(e) for e in entries if e["type"] == "event") == sorted([
        "event Opened(bytes32 indexed escrowId,bytes32 indexed channelId,uint256 settlementId,uint64 deadline)",
        "event Funded(bytes32 indexed escrowId,address indexed payer)",
        "event Executed(bytes32 indexed escrowId)",
        "event Refunded(bytes32 indexed escrowId)",
    ])
    [constructor] = [e for e in entries if e["type"] == "constructor"]
    assert [i["type"] for i in constructor["inputs"]] == ["address"]
    get_escrow = next(e for e in entries if e.get("name") == "getEscrow")
    assert get_escrow["outputs"][0]["internalType"] == "enum SettlementEscrow.Status"


def test_escrow_id_is_the_keccak_of_the_abi_encoded_channel_and_settlement_ids(chain):
    expected = Web3.keccak(eth_abi.encode(["bytes32", "uint256"], [CHANNEL, SETTLEMENT]))
    assert chain.escrow.functions.escrowIdOf(CHANNEL, SETTLEMENT).call() == expected


def test_the_operator_is_the_one_given_to_the_constructor_and_never_zero(chain):
    assert chain.escrow.functions.operator().call() == chain.operator
    factory = chain.w3.eth.contract(abi=abi("SettlementEscrow"), bytecode=bytecode("SettlementEscrow"))
    with reverts("ZeroOperator"):
        factory.constructor("0x" + "00" * 20).transact({"from": chain.operator})


# -- open ----------------------------------------------------------------------------------------------------------

def test_only_the_operator_opens(chain, parties):
    legs, _, _ = swap(chain, parties)
    deadline = chain.block_time() + HOUR
    for intruder in (parties[0], parties[4], chain.accounts[0]):
        with reverts("NotOperator"):
            chain.escrow.functions.open(CHANNEL, SETTLEMENT, legs, deadline).transact({"from": intruder})
    chain.transact(chain.escrow.functions.open(CHANNEL, SETTLEMENT, legs, deadline), chain.operator)


def test_an_escrow_id_opens_once(chain, parties):
    legs, _, _ = swap(chain, parties)
    escrow_id, _, _ = open_escrow(chain, legs)
    with reverts("AlreadyOpened"):
        open_escrow(chain, legs)
    with reverts("AlreadyOpened"):  # whatever the legs
        open_escrow(chain, legs[:1])
    assert open_escrow(chain, legs, settlement_id=SETTLEMENT + 1)[0] != escrow_id  # the next settlement opens


@pytest.mark.parametrize("count", [0, 17])
def test_an_escrow_of_no_legs_or_more_than_16_is_refused(chain, parties, count):
    usd = chain.tokens["USD"]
    legs = [leg(usd, parties[0], parties[1], i + 1) for i in range(count)]
    with reverts("BadLegCount"):
        open_escrow(chain, legs)


def test_an_escrow_of_16_legs_opens(chain, parties):
    usd = chain.tokens["USD"]
    escrow_id, _, _ = open_escrow(chain, [leg(usd, parties[0], parties[1], i + 1) for i in range(16)])
    assert chain.escrow.functions.getEscrow(escrow_id).call()[3] == 16


def test_a_zero_amount_is_refused(chain, parties):
    legs, usd, _ = swap(chain, parties)
    with reverts("ZeroAmount"):
        open_escrow(chain, [legs[0], leg(usd, parties[1], parties[0], 0)])


def test_a_leg_from_an_account_to_itself_is_refused(chain, parties):
    legs, usd, _ = swap(chain, parties)
    with reverts("SelfTransfer"):
        open_escrow(chain, [legs[0], leg(usd, parties[1], parties[1], UNIT)])


@pytest.mark.parametrize("seconds", [0, -HOUR])
def test_a_deadline_not_in_the_future_is_refused(chain, parties, seconds):
    legs, _, _ = swap(chain, parties)
    with reverts("DeadlineNotInFuture"):
        open_escrow(chain, legs, seconds=seconds)


def test_a_zero_address_or_a_token_that_is_no_contract_is_refused(chain, parties):
    alice, bob = parties[:2]
    usd, zero = chain.tokens["USD"], "0x" + "00" * 20
    with reverts("ZeroAddress"):
        open_escrow(chain, [(usd.address, alice, zero, UNIT)])
    with reverts("ZeroAddress"):
        open_escrow(chain, [(zero, alice, bob, UNIT)])
    with reverts("TokenNotAContract"):
        open_escrow(chain, [(parties[4], alice, bob, UNIT)])


# -- fund ----------------------------------------------------------------------------------------------------------

def test_fund_by_an_account_that_owes_nothing_reverts(chain, parties):
    legs, usd, _ = swap(chain, parties)
    escrow_id, _, _ = open_escrow(chain, legs)
    stranger = parties[4]
    chain.transact(usd.functions.approve(chain.escrow.address, 10**12), stranger)
    with reverts("NothingToFund"):
        chain.escrow.functions.fund(escrow_id).transact({"from": stranger})
    with reverts("NothingToFund"):  # the operator owes nothing either
        chain.escrow.functions.fund(escrow_id).transact({"from": chain.operator})


def test_fund_twice_reverts(chain, parties):
    legs, usd, _ = swap(chain, parties)
    alice = parties[0]
    escrow_id, _, _ = open_escrow(chain, legs)
    fund(chain, alice, escrow_id, (usd, 2 * legs[0][3]))  # allowance enough for twice
    with reverts("NothingToFund"):
        chain.escrow.functions.fund(escrow_id).transact({"from": alice})
    assert usd.functions.balanceOf(chain.escrow.address).call() == legs[0][3]


def test_fund_after_the_deadline_reverts(chain, parties):
    legs, usd, _ = swap(chain, parties)
    alice = parties[0]
    escrow_id, _, _ = open_escrow(chain, legs)
    chain.transact(usd.functions.approve(chain.escrow.address, legs[0][3]), alice)
    chain.advance(HOUR + 1)
    with reverts("DeadlinePassed"):
        chain.escrow.functions.fund(escrow_id).transact({"from": alice})


def test_fund_in_the_block_at_the_deadline_is_still_in_time(chain, parties):
    legs, usd, _ = swap(chain, parties)
    alice = parties[0]
    escrow_id, deadline, _ = open_escrow(chain, legs)
    chain.transact(usd.functions.approve(chain.escrow.address, legs[0][3]), alice)
    chain.w3.provider.make_request("evm_setNextBlockTimestamp", [deadline])
    receipt = chain.transact(chain.escrow.functions.fund(escrow_id), alice)
    assert chain.w3.eth.get_block(receipt["blockNumber"])["timestamp"] == deadline


def test_fund_without_approval_reverts(chain, parties):
    legs, usd, _ = swap(chain, parties)
    alice = parties[0]
    escrow_id, _, _ = open_escrow(chain, legs)
    with reverts("ERC20InsufficientAllowance"):
        chain.escrow.functions.fund(escrow_id).transact({"from": alice})
    chain.transact(usd.functions.approve(chain.escrow.address, legs[0][3] - 1), alice)  # one unit short
    with reverts("ERC20InsufficientAllowance"):
        chain.escrow.functions.fund(escrow_id).transact({"from": alice})


def test_fund_of_an_escrow_never_opened_reverts(chain, parties):
    with reverts("NotOpen"):
        chain.escrow.functions.fund(chain.escrow.functions.escrowIdOf(CHANNEL, 99).call()).transact(
            {"from": parties[0]})


def test_fund_pays_in_every_leg_of_the_payer_at_once(chain, parties):
    alice, bob, carol = parties[:3]
    usd, usdt = chain.tokens["USD"], chain.tokens["USDT"]
    legs = [leg(usd, alice, bob, 3 * UNIT), leg(usdt, bob, carol, 2 * UNIT), leg(usdt, alice, carol, 5 * UNIT)]
    escrow_id, _, _ = open_escrow(chain, legs)
    before = balances(chain, [usd, usdt], [alice, "escrow"])
    fund(chain, alice, escrow_id, (usd, 3 * UNIT), (usdt, 5 * UNIT))
    after = balances(chain, [usd, usdt], [alice, "escrow"])
    assert after["USD", alice] == before["USD", alice] - 3 * UNIT
    assert after["USDT", alice] == before["USDT", alice] - 5 * UNIT
    assert after["USD", "escrow"] == 3 * UNIT and after["USDT", "escrow"] == 5 * UNIT
    assert chain.escrow.functions.getLegs(escrow_id).call()[1] == [True, False, True]
    assert chain.escrow.functions.getEscrow(escrow_id).call()[4] == 2


def test_a_token_that_delivers_less_than_asked_is_refused(chain, parties):
    alice, bob = parties[:2]
    fee_token = chain.fee_token
    escrow_id, _, _ = open_escrow(chain, [leg(fee_token, alice, bob, 100 * UNIT)])
    chain.transact(fee_token.functions.approve(chain.escrow.address, 100 * UNIT), alice)
    before = balances(chain, [fee_token], [alice, "escrow"])
    with reverts("ShortDelivery"):
        chain.escrow.functions.fund(escrow_id).transact({"from": alice})
    assert balances(chain, [fee_token], [alice, "escrow"]) == before
    assert chain.escrow.functions.getLegs(escrow_id).call()[1] == [False]


def test_the_short_delivery_says_what_arrived(chain, parties):
    alice, bob = parties[:2]
    fee_token = chain.fee_token
    escrow_id, _, _ = open_escrow(chain, [leg(fee_token, alice, bob, 100 * UNIT)])
    chain.transact(fee_token.functions.approve(chain.escrow.address, 100 * UNIT), alice)
    try:
        chain.escrow.functions.fund(escrow_id).transact({"from": alice})
    except Exception as exc:  # noqa: BLE001 - ContractCustomError, checked below
        data = bytes.fromhex(exc.data[2:])
    assert error_name(data) == "ShortDelivery"
    assert eth_abi.decode(["uint256", "address", "uint256", "uint256"], data[4:]) == (
        0, fee_token.address.lower(), 100 * UNIT, 99 * UNIT)


# -- execute -------------------------------------------------------------------------------------------------------

def test_execute_before_every_leg_is_funded_reverts(chain, parties):
    legs, usd, _ = swap(chain, parties)
    escrow_id, _, _ = open_escrow(chain, legs)
    with reverts("NotFullyFunded"):
        chain.escrow.functions.execute(escrow_id).transact({"from": parties[4]})
    fund(chain, parties[0], escrow_id, (usd, legs[0][3]))
    with reverts("NotFullyFunded"):
        chain.escrow.functions.execute(escrow_id).transact({"from": parties[4]})


def test_execute_pays_each_creditor_exactly(chain, parties):
    legs, usd, usdc = swap(chain, parties)
    alice, bob, stranger = parties[0], parties[1], parties[4]
    escrow_id, _, _ = open_escrow(chain, legs)
    before = balances(chain, [usd, usdc], [alice, bob, stranger, "escrow"])
    fund(chain, alice, escrow_id, (usd, 125_500_000))
    fund(chain, bob, escrow_id, (usdc, 40 * UNIT))
    chain.transact(chain.escrow.functions.execute(escrow_id), stranger)  # anyone may
    after = balances(chain, [usd, usdc], [alice, bob, stranger, "escrow"])
    assert {key: after[key] - before[key] for key in before if after[key] != before[key]} == {
        ("USD", alice): -125_500_000, ("USD", bob): 125_500_000, ("USDC", bob): -40 * UNIT, ("USDC", alice): 40 * UNIT}
    assert chain.escrow.functions.getEscrow(escrow_id).call()[0] == EXECUTED


def test_a_fully_funded_escrow_executes_after_the_deadline(chain, parties):
    legs, usd, usdc = swap(chain, parties)
    escrow_id, _, _ = open_escrow(chain, legs)
    fund(chain, parties[0], escrow_id, (usd, legs[0][3]))
    fund(chain, parties[1], escrow_id, (usdc, legs[1][3]))
    chain.advance(2 * HOUR)
    chain.transact(chain.escrow.functions.execute(escrow_id), parties[4])
    assert chain.escrow.functions.getEscrow(escrow_id).call()[0] == EXECUTED


def test_execute_twice_reverts(chain, parties):
    legs, usd, usdc = swap(chain, parties)
    escrow_id, _, _ = open_escrow(chain, legs)
    fund(chain, parties[0], escrow_id, (usd, legs[0][3]))
    fund(chain, parties[1], escrow_id, (usdc, legs[1][3]))
    chain.transact(chain.escrow.functions.execute(escrow_id), parties[0])
    with reverts("NotOpen"):
        chain.escrow.functions.execute(escrow_id).transact({"from": parties[0]})


# -- refund --------------------------------------------------------------------------------------------------------

def test_refund_before_the_deadline_reverts(chain, parties):
    legs, usd, _ = swap(chain, parties)
    escrow_id, deadline, _ = open_escrow(chain, legs)
    fund(chain, parties[0], escrow_id, (usd, legs[0][3]))
    with reverts("DeadlineNotPassed"):
        chain.escrow.functions.refund(escrow_id).transact({"from": parties[0]})
    chain.w3.provider.make_request("evm_setNextBlockTimestamp", [deadline])  # at the deadline: still too early
    chain.w3.provider.make_request("evm_mine", [])
    with reverts("DeadlineNotPassed"):
        chain.escrow.functions.refund(escrow_id).transact({"from": parties[0]})


def test_refund_of_a_fully_funded_escrow_reverts(chain, parties):
    legs, usd, usdc = swap(chain, parties)
    escrow_id, _, _ = open_escrow(chain, legs)
    fund(chain, parties[0], escrow_id, (usd, legs[0][3]))
    fund(chain, parties[1], escrow_id, (usdc, legs[1][3]))
    chain.advance(2 * HOUR)
    with reverts("FullyFunded"):
        chain.escrow.functions.refund(escrow_id).transact({"from": parties[0]})


def test_refund_after_the_deadline_returns_exactly_what_was_paid(chain, parties):
    alice, bob, carol, _, stranger = parties
    usd, usdc = chain.tokens["USD"], chain.tokens["USDC"]
    legs = [leg(usd, alice, bob, 125_500_000), leg(usdc, alice, carol, 3 * UNIT), leg(usdc, bob, alice, 40 * UNIT)]
    escrow_id, _, _ = open_escrow(chain, legs)
    before = balances(chain, [usd, usdc], [alice, bob, carol, stranger, "escrow"])
    fund(chain, alice, escrow_id, (usd, 125_500_000), (usdc, 3 * UNIT))  # bob never pays
    chain.advance(HOUR + 1)
    chain.transact(chain.escrow.functions.refund(escrow_id), stranger)  # anyone may
    assert balances(chain, [usd, usdc], [alice, bob, carol, stranger, "escrow"]) == before
    assert chain.escrow.functions.getEscrow(escrow_id).call()[0] == REFUNDED
    for step in ("fund", "execute", "refund"):
        with reverts("NotOpen"):
            getattr(chain.escrow.functions, step)(escrow_id).transact({"from": bob})


def test_refund_of_an_escrow_nobody_funded_only_closes_it(chain, parties):
    legs, _, _ = swap(chain, parties)
    escrow_id, _, _ = open_escrow(chain, legs)
    chain.advance(HOUR + 1)
    receipt = chain.transact(chain.escrow.functions.refund(escrow_id), parties[4])
    assert [log["address"] for log in receipt["logs"]] == [chain.escrow.address]  # Refunded, no transfer
    assert chain.escrow.functions.getEscrow(escrow_id).call()[0] == REFUNDED


# -- re-entrancy ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("step, reentered", [
    ("fund", "fund"), ("fund", "execute"), ("execute", "execute"), ("execute", "refund"), ("refund", "refund"),
    ("refund", "execute"),
])
def test_a_token_that_reenters_the_escrow_during_a_transfer_gets_nothing_twice(chain, parties, step, reentered):
    """The ReentrantToken calls back into the escrow from inside the escrow's transfer / transferFrom. Another
    escrow holds the same token, so a call back that went through could pay out of its money: it must not."""
    alice, bob, carol, dave, stranger = parties
    token, usd = chain.reentrant_token, chain.tokens["USD"]
    other, _, _ = open_escrow(chain, [leg(token, carol, dave, 500 * UNIT), leg(usd, dave, carol, UNIT)],
                              settlement_id=1000)
    fund(chain, carol, other, (token, 500 * UNIT))  # 500 of the token sit in the escrow for another settlement
    escrow_id, _, _ = open_escrow(chain, [leg(token, alice, bob, 80 * UNIT), leg(usd, bob, alice, 10 * UNIT)])
    before = balances(chain, [token, usd], [alice, bob, "escrow"])

    chain.transact(token.functions.approve(chain.escrow.address, 80 * UNIT), alice)
    if step == "fund":
        fund(chain, bob, escrow_id, (usd, 10 * UNIT))  # alice's payment completes the escrow
        chain.transact(token.functions.arm(chain.escrow.address, REENTRY[reentered], escrow_id), stranger)
        chain.transact(chain.escrow.functions.fund(escrow_id), alice)
        chain.transact(chain.escrow.functions.execute(escrow_id), stranger)
        expected = {("REE", alice): -80 * UNIT, ("REE", bob): 80 * UNIT, ("USD", alice): 10 * UNIT,
                    ("USD", bob): -10 * UNIT}
    elif step == "execute":
        chain.transact(chain.escrow.functions.fund(escrow_id), alice)
        fund(chain, bob, escrow_id, (usd, 10 * UNIT))
        chain.transact(token.functions.arm(chain.escrow.address, REENTRY[reentered], escrow_id), stranger)
        chain.transact(chain.escrow.functions.execute(escrow_id), stranger)
        expected = {("REE", alice): -80 * UNIT, ("REE", bob): 80 * UNIT, ("USD", alice): 10 * UNIT,
                    ("USD", bob): -10 * UNIT}
    else:
        chain.transact(chain.escrow.functions.fund(escrow_id), alice)  # bob never pays
        chain.advance(HOUR + 1)
        chain.transact(token.functions.arm(chain.escrow.address, REENTRY[reentered], escrow_id), stranger)
        chain.transact(chain.escrow.functions.refund(escrow_id), stranger)
        expected = {}

    assert token.functions.attempts().call() == 1  # the token did call back, during the escrow's transfer
    assert token.functions.lastSucceeded().call() is False
    assert error_name(token.functions.lastRevertData().call()) == "ReentrancyGuardReentrantCall"
    after = balances(chain, [token, usd], [alice, bob, "escrow"])
    assert {key: after[key] - before[key] for key in before if after[key] != before[key]} == expected
    assert after["REE", "escrow"] == 500 * UNIT  # the other settlement's money is all still there
    assert chain.escrow.functions.getEscrow(escrow_id).call()[0] == (REFUNDED if step == "refund" else EXECUTED)


# -- events --------------------------------------------------------------------------------------------------------

def transfers(chain, receipt) -> list[tuple]:
    """The ERC-20 Transfer logs of a receipt: (token address, from, to, value), in log order."""
    found = []
    for log in receipt["logs"]:
        if log["topics"][0] == Web3.keccak(text="Transfer(address,address,uint256)"):
            event = chain.tokens["USD"].events.Transfer().process_log(log)  # every ERC-20's Transfer is the same
            found.append((log["address"], event["args"]["from"], event["args"]["to"], event["args"]["value"]))
    return found


def topic(value) -> bytes:
    return bytes(value).rjust(32, b"\0") if isinstance(value, bytes) else bytes.fromhex(value[2:]).rjust(32, b"\0")


def test_opened_is_emitted_with_its_fields(chain, parties):
    legs, _, _ = swap(chain, parties)
    escrow_id, deadline, receipt = open_escrow(chain, legs)
    [event] = chain.escrow.events.Opened().process_receipt(receipt, errors=DISCARD)
    assert dict(event["args"]) == {"escrowId": escrow_id, "channelId": CHANNEL, "settlementId": SETTLEMENT,
                                   "deadline": deadline}
    [log] = receipt["logs"]
    assert log["topics"][1:] == [escrow_id, CHANNEL]  # both indexed
    assert eth_abi.decode(["uint256", "uint64"], log["data"]) == (SETTLEMENT, deadline)


def test_funded_is_emitted_with_its_fields(chain, parties):
    legs, usd, _ = swap(chain, parties)
    alice = parties[0]
    escrow_id, _, _ = open_escrow(chain, legs)
    receipt = fund(chain, alice, escrow_id, (usd, legs[0][3]))
    [event] = chain.escrow.events.Funded().process_receipt(receipt, errors=DISCARD)
    assert dict(event["args"]) == {"escrowId": escrow_id, "payer": alice}
    [log] = [log for log in receipt["logs"] if log["address"] == chain.escrow.address]
    assert log["topics"][1:] == [escrow_id, topic(alice)] and log["data"] == b""


def test_executed_is_emitted_with_its_fields(chain, parties):
    legs, usd, usdc = swap(chain, parties)
    escrow_id, _, _ = open_escrow(chain, legs)
    fund(chain, parties[0], escrow_id, (usd, legs[0][3]))
    fund(chain, parties[1], escrow_id, (usdc, legs[1][3]))
    receipt = chain.transact(chain.escrow.functions.execute(escrow_id), parties[4])
    [event] = chain.escrow.events.Executed().process_receipt(receipt, errors=DISCARD)
    assert dict(event["args"]) == {"escrowId": escrow_id}
    [log] = [log for log in receipt["logs"] if log["address"] == chain.escrow.address]
    assert log["topics"][1:] == [escrow_id]
    assert transfers(chain, receipt) == [(usd.address, chain.escrow.address, parties[1], legs[0][3]),
                                         (usdc.address, chain.escrow.address, parties[0], legs[1][3])]


def test_refunded_is_emitted_with_its_fields(chain, parties):
    legs, usd, _ = swap(chain, parties)
    escrow_id, _, _ = open_escrow(chain, legs)
    fund(chain, parties[0], escrow_id, (usd, legs[0][3]))
    chain.advance(HOUR + 1)
    receipt = chain.transact(chain.escrow.functions.refund(escrow_id), parties[4])
    [event] = chain.escrow.events.Refunded().process_receipt(receipt, errors=DISCARD)
    assert dict(event["args"]) == {"escrowId": escrow_id}
    assert transfers(chain, receipt) == [(usd.address, chain.escrow.address, parties[0], legs[0][3])]


# -- getEscrow / getLegs -------------------------------------------------------------------------------------------

def test_get_escrow_and_get_legs_report_the_state(chain, parties):
    legs, usd, usdc = swap(chain, parties)
    escrow_id = chain.escrow.functions.escrowIdOf(CHANNEL, SETTLEMENT).call()
    assert chain.escrow.functions.getEscrow(escrow_id).call() == [NONE, b"\0" * 32, 0, 0, 0]
    assert chain.escrow.functions.getLegs(escrow_id).call() == [[], []]

    _, deadline, _ = open_escrow(chain, legs)
    assert chain.escrow.functions.getEscrow(escrow_id).call() == [OPEN, CHANNEL, deadline, 2, 0]
    assert chain.escrow.functions.getLegs(escrow_id).call() == [[tuple(leg) for leg in legs], [False, False]]

    fund(chain, parties[1], escrow_id, (usdc, legs[1][3]))
    assert chain.escrow.functions.getEscrow(escrow_id).call() == [OPEN, CHANNEL, deadline, 2, 1]
    assert chain.escrow.functions.getLegs(escrow_id).call()[1] == [False, True]

    fund(chain, parties[0], escrow_id, (usd, legs[0][3]))
    chain.transact(chain.escrow.functions.execute(escrow_id), parties[0])
    assert chain.escrow.functions.getEscrow(escrow_id).call() == [EXECUTED, CHANNEL, deadline, 2, 2]
    assert chain.escrow.functions.getLegs(escrow_id).call() == [[tuple(leg) for leg in legs], [True, True]]
