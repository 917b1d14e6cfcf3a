"""The development chain (scripts/devchain, settlement.chain.devchain) and ``manage.py deploy_escrow``, on real Anvil
nodes (contracts/node_modules, ``npm ci`` there first when missing)."""
import io
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from eth_account import Account
from web3 import Web3

from channels_app.identity import operator_keys
from settlement.chain.deploy import contract
from settlement.chain.devchain import DEV_KEYS, ensure_node_modules, start_anvil, stop_anvil
from tests.chain_node import free_port

ROOT = Path(__file__).resolve().parents[1]


def test_the_development_chain_prints_its_settings_and_runs_until_interrupted():
    ensure_node_modules()  # so that the timeout below is not spent in npm ci
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "settlement.chain.devchain", str(port)], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        lines = [process.stdout.readline().strip() for _ in range(5)]
        settings = dict(line.split("=", 1) for line in lines)
        assert list(settings) == ["ESCROW_RPC_URL", "ESCROW_CONTRACT", "ESCROW_TOKENS", "ESCROW_CONFIRMATIONS",
                                  "OPERATOR_PRIVATE_KEY"], lines
        assert settings["ESCROW_RPC_URL"] == f"http://127.0.0.1:{port}"
        w3 = Web3(Web3.HTTPProvider(settings["ESCROW_RPC_URL"]))
        assert w3.eth.chain_id == 31337
        operator = Account.from_key(settings["OPERATOR_PRIVATE_KEY"]).address
        assert operator == w3.eth.accounts[9] and w3.eth.get_balance(operator) > 10**21  # Anvil funded it
        assert contract(w3, "SettlementEscrow", settings["ESCROW_CONTRACT"]).functions.operator().call() == operator
        tokens = dict(pair.split("=") for pair in settings["ESCROW_TOKENS"].split(","))
        assert list(tokens) == ["USD", "USDT", "USDC"]
        for asset, address in tokens.items():
            token = contract(w3, "TestToken", address)
            assert token.functions.symbol().call() == asset and token.functions.decimals().call() == 6
            assert {token.functions.balanceOf(holder).call() for holder in w3.eth.accounts} == {10**12}
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 0
        with pytest.raises(Exception):  # Anvil stopped with it
            Web3(Web3.HTTPProvider(settings["ESCROW_RPC_URL"], request_kwargs={"timeout": 2})).eth.chain_id
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def bare_anvil():
    """Anvil with nothing deployed (the default accounts, funded)."""
    process = start_anvil(free_port())
    yield process
    stop_anvil(process)


def deploy_escrow(*args) -> str:
    out = io.StringIO()
    call_command("deploy_escrow", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def test_deploy_escrow_deploys_with_the_operator_identity_as_operator(bare_anvil, monkeypatch):
    monkeypatch.setenv("TEST_DEPLOYER_KEY", DEV_KEYS[0])
    output = deploy_escrow("--rpc-url", bare_anvil.rpc_url, "--deployer-key-env", "TEST_DEPLOYER_KEY")
    lines = dict(line.split("=", 1) for line in output.splitlines() if "=" in line)
    operator = operator_keys().address
    assert f"operator address: {operator}" in output
    w3 = Web3(Web3.HTTPProvider(bare_anvil.rpc_url))
    assert contract(w3, "SettlementEscrow", lines["ESCROW_CONTRACT"]).functions.operator().call() == operator


def test_deploy_escrow_pays_with_the_operator_key_by_default(bare_anvil):
    w3 = Web3(Web3.HTTPProvider(bare_anvil.rpc_url))
    operator = operator_keys().address
    w3.provider.make_request("anvil_setBalance", [operator, hex(10**18)])
    output = deploy_escrow("--rpc-url", bare_anvil.rpc_url)
    address = output.splitlines()[0].removeprefix("ESCROW_CONTRACT=")
    assert contract(w3, "SettlementEscrow", address).functions.operator().call() == operator
    assert w3.eth.get_balance(operator) < 10**18


def test_deploy_escrow_with_an_unfunded_deployer_is_a_clear_error(bare_anvil, monkeypatch):
    monkeypatch.setenv("TEST_DEPLOYER_KEY", Account.create().key.to_0x_hex())
    with pytest.raises(CommandError, match="deploy failed: .*(insufficient funds|Insufficient funds)"):
        deploy_escrow("--rpc-url", bare_anvil.rpc_url, "--deployer-key-env", "TEST_DEPLOYER_KEY")


def test_deploy_escrow_on_an_unreachable_chain_is_a_clear_error():
    with pytest.raises(CommandError, match=r"deploy failed: the chain at http://127.0.0.1:\d+ does not answer"):
        deploy_escrow("--rpc-url", f"http://127.0.0.1:{free_port()}")
    with pytest.raises(CommandError, match="not a JSON-RPC URL"):
        deploy_escrow("--rpc-url", "127.0.0.1:8545")


def test_deploy_escrow_with_an_unset_deployer_variable_is_a_clear_error(bare_anvil, monkeypatch):
    monkeypatch.delenv("TEST_DEPLOYER_KEY", raising=False)
    with pytest.raises(CommandError, match="TEST_DEPLOYER_KEY .* is not set"):
        deploy_escrow("--rpc-url", bare_anvil.rpc_url, "--deployer-key-env", "TEST_DEPLOYER_KEY")
