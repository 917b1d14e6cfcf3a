"""A real chain for the contract's tests: Anvil from contracts/node_modules (``npm ci`` there first when it is
missing: settlement.chain.devchain.ensure_node_modules), on a free port, once per session, with the development
chain deployed on it (settlement.chain.devchain.deploy_dev_chain) plus a FeeToken and a ReentrantToken.

``chain`` is function-scoped: an ``evm_snapshot`` before each test and ``evm_revert`` after it, so every test starts
from the same state. Anvil's accounts are unlocked, so tests send with ``transact({"from": address})``.
A test module takes the fixtures with ``anvil, chain = chain_node.anvil, chain_node.chain``.
"""
import contextlib
import socket
from dataclasses import dataclass

import pytest
from eth_account import Account
from web3 import Web3
from web3.exceptions import ContractCustomError, ContractLogicError

from settlement.chain import reverts as revert_data
from settlement.chain.artifacts import abi, bytecode
from settlement.chain.deploy import contract
from settlement.chain.devchain import DEV_KEYS, OPERATOR_KEY, deploy_dev_chain, start_anvil, stop_anvil

DECIMALS = 6
UNIT = 10**DECIMALS
FEE_BASIS_POINTS = 100  # the FeeToken keeps 1%


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def error_name(revert) -> str:
    """The custom error's name of a revert (an exception, or its data as hex or bytes): ``BadLegCount``."""
    described = revert_data.describe(revert) if isinstance(revert, Exception) else revert_data.decode_error(revert)
    return (described or "unknown error").split("(", 1)[0]


@contextlib.contextmanager
def reverts(name: str):
    """The block must revert with the custom error ``name`` (checked by its selector)."""
    try:
        yield
    except ContractCustomError as exc:
        assert error_name(exc) == name, f"reverted with {revert_data.describe(exc)}, not {name}"
    except ContractLogicError as exc:  # a revert string or a panic
        raise AssertionError(f"reverted with {exc}, not {name}") from None
    else:
        raise AssertionError(f"did not revert (expected {name})")


@dataclass
class Chain:
    w3: Web3
    escrow: object  # the SettlementEscrow contract
    tokens: dict  # asset -> TestToken contract (6 decimals, USD / USDT / USDC)
    fee_token: object
    reentrant_token: object
    operator: str
    accounts: list  # Anvil's ten default accounts (checksummed); accounts[9] is the operator
    env: dict  # what scripts/devchain prints: ESCROW_RPC_URL, ESCROW_CONTRACT, ESCROW_TOKENS, OPERATOR_PRIVATE_KEY, ...

    def transact(self, function, sender: str) -> dict:
        """Send ``function`` from ``sender``; the receipt (a reverting call raises before it is sent)."""
        tx_hash = function.transact({"from": sender})
        receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash, poll_latency=0.01)
        assert receipt["status"] == 1
        return receipt

    def block_time(self) -> int:
        return self.w3.eth.get_block("latest")["timestamp"]

    def advance(self, seconds: int) -> None:
        """Move the chain's clock on by ``seconds`` and mine a block at the new time."""
        self.w3.provider.make_request("evm_increaseTime", [seconds])
        self.w3.provider.make_request("evm_mine", [])


@pytest.fixture(scope="session")
def anvil():
    """Anvil on a free port with the development chain, for the whole session: a Chain (state: just deployed)."""
    process = start_anvil(free_port())
    try:
        settings = deploy_dev_chain(process.rpc_url, OPERATOR_KEY)
        w3 = Web3(Web3.HTTPProvider(process.rpc_url, cache_allowed_requests=True,
                                    cacheable_requests={"eth_chainId"}))  # web3 asks it before every call
        operator = Account.from_key(OPERATOR_KEY).address
        accounts = [Account.from_key(key).address for key in DEV_KEYS]
        assert accounts == w3.eth.accounts, "the development keys are not Anvil's default accounts"
        tokens = {}
        for pair in settings["ESCROW_TOKENS"].split(","):
            asset, address = pair.split("=")
            tokens[asset] = contract(w3, "TestToken", address)
        extra = {}
        for name, args in (("FeeToken", ("Fee token", "FEE", DECIMALS, FEE_BASIS_POINTS)),
                           ("ReentrantToken", ("Reentrant token", "REE", DECIMALS))):
            factory = w3.eth.contract(abi=abi(name), bytecode=bytecode(name))
            receipt = w3.eth.wait_for_transaction_receipt(factory.constructor(*args).transact({"from": operator}))
            extra[name] = contract(w3, name, receipt["contractAddress"])
            for holder in accounts:
                extra[name].functions.mint(holder, 1_000_000 * UNIT).transact({"from": operator})
        yield Chain(w3=w3, escrow=contract(w3, "SettlementEscrow", settings["ESCROW_CONTRACT"]), tokens=tokens,
                    fee_token=extra["FeeToken"], reentrant_token=extra["ReentrantToken"], operator=operator,
                    accounts=accounts, env=settings)
    finally:
        stop_anvil(process)


@pytest.fixture
def chain(anvil):
    """The session's chain, reverted after the test to the state it had before it."""
    snapshot = anvil.w3.provider.make_request("evm_snapshot", [])["result"]
    yield anvil
    assert anvil.w3.provider.make_request("evm_revert", [snapshot])["result"] is True
