"""The development chain: Anvil (from contracts/node_modules) with SettlementEscrow and test tokens deployed.

    python -m settlement.chain.devchain [PORT]      (what scripts/devchain runs)

starts Anvil on 127.0.0.1:PORT (default 8545), deploys the escrow with the development operator (Anvil's default
account 9, funded with ETH by Anvil) as its ``operator()``, a mintable 6-decimal TestToken per quote asset (USD,
USDT, USDC), mints 1,000,000 of each to Anvil's ten default accounts, prints the server's settings as KEY=VALUE
lines on stdout (Anvil's own output goes to stderr), and keeps Anvil running until interrupted.

``start_anvil`` and ``deploy_dev_chain`` are what the tests use too (tests/chain_node.py).
"""
import contextlib
import fcntl
import hashlib
import json
import platform
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from eth_account import Account

from settlement.chain.deploy import connect, contract, deploy

CONTRACTS_DIR = Path(__file__).resolve().parents[2] / "contracts"
NODE_MODULES = CONTRACTS_DIR / "node_modules"
# Written by scripts/build-contracts too: the sha256 of the package-lock.json node_modules was installed from.
LOCK_STAMP = NODE_MODULES / ".operatorapi-lock.sha256"

HOST = "127.0.0.1"
DEFAULT_PORT = 8545
CHAIN_ID = 31337
# Anvil's default mnemonic, passed explicitly so that the keys below are its accounts 0..9 whatever its defaults.
MNEMONIC = "test test test test test test test test test test test junk"
DEV_KEYS = (  # publicly known development keys: never use them on a real chain
    "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
    "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
    "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
    "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6",
    "0x47e179ec197488593b187f80a00eb0da91f1b9d0b13f8733639f19c30a34926a",
    "0x8b3a350cf5c34c9194ca85829a2df0ec3153be0318b5e2d3348e872092edffba",
    "0x92db14e403b83dfe3df233f83dfa3a0d7096f21ca9b0d6d6b8d88b2b4ec1564e",
    "0x4bbbf85ce3377467afe5d46f804f221813b2bb87f24d81f60f1fcdbf7cbf4356",
    "0xdbda1821b80551c9d65939329250298aa3472ba22feea921c0cf5d620ea67b97",
    "0x2a871d0798f97d79848a013d4936a73bf4cc922c825d33c1cf7073dff6d409c6",
)
OPERATOR_KEY = DEV_KEYS[9]  # the development operator: deploys everything and is the escrow's operator()
QUOTE_ASSETS = ("USD", "USDT", "USDC")
TOKEN_DECIMALS = 6
MINT_WHOLE_TOKENS = 1_000_000


def _lock_hash() -> str:
    return hashlib.sha256((CONTRACTS_DIR / "package-lock.json").read_bytes()).hexdigest()


def ensure_node_modules() -> None:
    """``npm ci`` in contracts/ when node_modules is missing or was installed from another package-lock.json.

    The same check as scripts/build-contracts (same stamp); serialised between processes by a file lock.
    """
    wanted = _lock_hash()
    with open(CONTRACTS_DIR / ".npm-ci.lock", "w") as lock:  # scripts/build-contracts takes it too
        fcntl.flock(lock, fcntl.LOCK_EX)
        if NODE_MODULES.is_dir() and LOCK_STAMP.exists() and LOCK_STAMP.read_text().strip() == wanted:
            return
        print("npm ci in contracts/", file=sys.stderr, flush=True)
        result = subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=CONTRACTS_DIR,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"npm ci in {CONTRACTS_DIR} failed:\n{result.stdout[-3000:]}")
        LOCK_STAMP.write_text(wanted + "\n")


def anvil_binary() -> Path:
    """Anvil's native binary from the platform package @foundry-rs/anvil installed (run directly, not through the
    package's node wrapper, so that signals reach Anvil itself); the wrapper when the platform is not known."""
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(platform.machine().lower())
    native = NODE_MODULES / "@foundry-rs" / f"anvil-{sys.platform}-{arch}" / "bin" / "anvil"
    if native.exists():
        return native
    wrapper = NODE_MODULES / ".bin" / "anvil"
    if wrapper.exists():
        return wrapper
    raise FileNotFoundError(f"no Anvil in {NODE_MODULES} (run npm ci in contracts/, or scripts/build-contracts)")


def _answers(rpc_url: str) -> bool:
    request = urllib.request.Request(rpc_url, data=json.dumps(
        {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}).encode(),
        headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=1) as response:
            return "result" in json.load(response)
    except OSError:
        return False


def start_anvil(port: int = DEFAULT_PORT, *, output=subprocess.DEVNULL, timeout: float = 30,
                extra_args: tuple = ()) -> subprocess.Popen:
    """Start Anvil on 127.0.0.1:``port`` (chain id 31337, the default accounts, 10,000 ETH each) and return the
    process once its JSON-RPC answers. ``output``: where Anvil's stdout and stderr go. Stop it with ``stop_anvil``.
    """
    ensure_node_modules()
    command = [str(anvil_binary()), "--host", HOST, "--port", str(port), "--chain-id", str(CHAIN_ID),
               "--mnemonic", MNEMONIC, "--accounts", str(len(DEV_KEYS)), "--balance", "10000", *extra_args]
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=output, stderr=output)
    rpc_url = f"http://{HOST}:{port}"
    deadline = time.monotonic() + timeout
    while not _answers(rpc_url):
        if process.poll() is not None:
            raise RuntimeError(f"Anvil exited with status {process.returncode} (port {port} in use?)")
        if time.monotonic() > deadline:
            stop_anvil(process)
            raise RuntimeError(f"Anvil did not answer on {rpc_url} within {timeout:g} s")
        time.sleep(0.05)
    process.rpc_url = rpc_url
    return process


def stop_anvil(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def deploy_dev_chain(rpc_url: str, operator_key: str = OPERATOR_KEY) -> dict:
    """Deploy SettlementEscrow (operator = ``operator_key``'s account, which also pays for everything) and a
    6-decimal TestToken per quote asset, mint 1,000,000 of each to Anvil's ten default accounts, and return the
    server's settings: ESCROW_RPC_URL, ESCROW_CONTRACT, ESCROW_TOKENS, ESCROW_CONFIRMATIONS, OPERATOR_PRIVATE_KEY.
    """
    w3 = connect(rpc_url)
    operator = Account.from_key(operator_key)
    escrow, _ = deploy(w3, operator, "SettlementEscrow", operator.address)
    tokens = {}
    for asset in QUOTE_ASSETS:
        tokens[asset], _ = deploy(w3, operator, "TestToken", f"Test {asset}", asset, TOKEN_DECIMALS)
    # The mints are sent at once (own nonces, fixed gas and fees: no estimate per mint), then their receipts read.
    amount = MINT_WHOLE_TOKENS * 10**TOKEN_DECIMALS
    nonce = w3.eth.get_transaction_count(operator.address, "pending")
    tip = w3.to_wei(1, "gwei")
    fees = {"maxPriorityFeePerGas": tip, "maxFeePerGas": 2 * w3.eth.get_block("latest")["baseFeePerGas"] + tip}
    sent = []
    for address in tokens.values():
        token = contract(w3, "TestToken", address)
        for key in DEV_KEYS:
            transaction = token.functions.mint(Account.from_key(key).address, amount).build_transaction(
                {"from": operator.address, "nonce": nonce, "gas": 100_000, "chainId": w3.eth.chain_id, **fees})
            sent.append(w3.eth.send_raw_transaction(operator.sign_transaction(transaction).raw_transaction))
            nonce += 1
    for tx_hash in sent:
        if w3.eth.wait_for_transaction_receipt(tx_hash, poll_latency=0.01)["status"] != 1:
            raise RuntimeError(f"mint {tx_hash.to_0x_hex()} reverted")
    return {
        "ESCROW_RPC_URL": rpc_url,
        "ESCROW_CONTRACT": escrow,
        "ESCROW_TOKENS": ",".join(f"{asset}={address}" for asset, address in tokens.items()),
        "ESCROW_CONFIRMATIONS": "0",
        "OPERATOR_PRIVATE_KEY": operator_key,
    }


def main(argv: list[str]) -> int:
    if len(argv) > 1 or (argv and not argv[0].isdigit()):
        print("usage: scripts/devchain [PORT]", file=sys.stderr)
        return 2
    port = int(argv[0]) if argv else DEFAULT_PORT
    process = start_anvil(port, output=sys.stderr)
    stopping = []

    def stop(signum, frame):
        stopping.append(signum)
        raise KeyboardInterrupt

    # Both, explicitly: a process started in the background by a non-interactive shell inherits SIGINT ignored, and
    # Python then leaves it ignored (Ctrl-C, or a test's SIGINT, would do nothing).
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        settings = deploy_dev_chain(process.rpc_url)
        for key, value in settings.items():
            print(f"{key}={value}", flush=True)
        print(f"development chain ready on {process.rpc_url} (chain id {CHAIN_ID}); Ctrl-C stops it",
              file=sys.stderr, flush=True)
        process.wait()
        return 0 if stopping else 1
    except KeyboardInterrupt:
        return 0
    finally:
        with contextlib.suppress(KeyboardInterrupt):
            stop_anvil(process)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
