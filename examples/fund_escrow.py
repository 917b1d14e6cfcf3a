"""A broker funds its side of an escrow settlement from its own key (docs/escrow.md), then waits for the swap.

    BROKER_KEY=0x... python examples/fund_escrow.py WS_URL --key-env BROKER_KEY --rpc-url RPC_URL [--settlement-id N]

Connects to the operator, authenticates with the key, subscribes, and waits for a settlement in state `initiated`
whose escrow has legs paid by this key (or finds it with the `settlements` request if it is initiated already).
Before paying anything it checks, on the chain itself: the chain id, that the escrow contract's `operator()` is the
operator it is talking to (`identity_address`), that the legs on chain are the legs announced, and the deadline.
Then, signing locally: `approve(escrow, units)` on each of its legs' tokens and one `fund(escrow_id)`, each
transaction's hash printed, each receipt waited for. Then it waits for `completed`.

Exit 0 once the settlement is completed; 1 with a one-line message when anything goes wrong (refused check,
reverted transaction, settlement failed or rejected, nothing heard within --timeout); 2 for a usage error.
Notifications are at most once, so every few seconds it also re-reads the settlement with `settlements`.
Depends on web3, eth-account and websockets only: the file can be copied alone (the ABIs are inline).
"""
import argparse
import asyncio
import itertools
import json
import os
import sys

from eth_account import Account
from eth_account.messages import encode_defunct
from web3 import Web3
from web3.exceptions import ContractLogicError, Web3Exception
from websockets.asyncio.client import connect
from websockets.exceptions import WebSocketException

POLL_SECONDS = 2  # re-read the settlement this often when no notification comes
TX_TIMEOUT = 300  # seconds to wait for a receipt


def _function(name, inputs, outputs=(), mutability="nonpayable"):
    return {"type": "function", "name": name, "stateMutability": mutability,
            "inputs": [{"name": n, "type": t} for n, t in inputs],
            "outputs": [{"name": n, "type": t} for n, t in outputs]}


ERC20_ABI = [
    _function("approve", [("spender", "address"), ("amount", "uint256")], [("", "bool")]),
    _function("allowance", [("owner", "address"), ("spender", "address")], [("", "uint256")], "view"),
    _function("balanceOf", [("owner", "address")], [("", "uint256")], "view"),
]
LEG = {"name": "legs", "type": "tuple[]", "components": [
    {"name": "token", "type": "address"}, {"name": "from", "type": "address"},
    {"name": "to", "type": "address"}, {"name": "amount", "type": "uint256"}]}
ESCROW_ABI = [
    _function("fund", [("escrowId", "bytes32")]),
    _function("operator", [], [("", "address")], "view"),
    {**_function("getLegs", [("escrowId", "bytes32")], mutability="view"),
     "outputs": [LEG, {"name": "funded", "type": "bool[]"}]},
]


class FundError(Exception):
    """Something this script refuses, or the operator or the chain refused."""


class Operator:
    """The broker's connection to the operator: requests, and settlements as they change."""

    def __init__(self, url: str, account, timeout: float):
        self.url, self.account, self.timeout = url, account, timeout
        self.reqids = itertools.count(1)
        self.notes: list[dict] = []  # settlement notifications not looked at yet

    async def __aenter__(self):
        self.ws = await connect(self.url)
        greeting = {frame["event"]: frame["data"] for frame in [await self.recv(30) for _ in range(3)]}
        self.identity = Web3.to_checksum_address(greeting["identity_address"]["address"])
        challenge = greeting["challenge"]["challenge"]
        signature = self.account.sign_message(encode_defunct(text=challenge)).signature.to_0x_hex()
        await self.request("authenticate", {"challenge": challenge, "signature": signature})
        await self.ws.send(json.dumps({"event": "subscribe_notifications", "reqid": 1_000_000}))
        return self

    async def __aexit__(self, *exc):
        await self.ws.close()

    async def recv(self, timeout: float) -> dict | None:
        """The next frame, or None after ``timeout`` seconds."""
        try:
            async with asyncio.timeout(max(timeout, 0)):
                return json.loads(await self.ws.recv())
        except TimeoutError:
            return None

    async def request(self, event: str, data: dict) -> dict:
        reqid = next(self.reqids)
        await self.ws.send(json.dumps({"event": event, "reqid": reqid, "data": data}))
        while True:
            frame = await self.recv(30)
            if frame is None:
                raise FundError(f"no reply to {event} within 30 s")
            if frame["event"] == "settlement_notification":
                self.notes.append(frame["data"])
            elif frame.get("reqid") == reqid:
                if frame["event"] == "error":
                    raise FundError(f"{event} refused: {frame['data']['error']} ({frame['data']['code']})")
                return frame.get("data", {})

    async def settlements(self, channel_id: str | None, status: str | None) -> list[dict]:
        """The settlements of ``channel_id`` (None: of every channel in ``status``), as the operator has them now."""
        if channel_id:
            channel_ids = [channel_id]
        else:
            channels = await self.request("channels", {"status": status} if status else {})
            channel_ids = [channel["channel_id"] for channel in channels["channels"]]
        return [s for c in channel_ids for s in (await self.request("settlements", {"channel_id": c}))["settlements"]]

    async def wait_for(self, wanted, what: str, channel_id: str | None = None, status: str | None = None) -> dict:
        """The first settlement ``wanted`` accepts, from a notification or from re-reading every POLL_SECONDS."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self.timeout
        while True:
            current = await self.settlements(channel_id, status)
            for settlement in [*self.notes, *current]:
                if wanted(settlement):
                    return settlement
            self.notes.clear()
            until = min(give_up, loop.time() + POLL_SECONDS)
            while (frame := await self.recv(until - loop.time())) is not None:
                if frame["event"] == "settlement_notification" and wanted(frame["data"]):
                    return frame["data"]
            if loop.time() >= give_up:
                raise FundError(f"no {what} within {self.timeout:g} s")


def send(w3: Web3, account, call, what: str) -> None:
    """Sign ``call`` locally (nonce, chain id, gas estimated), send it, print its hash, wait for its receipt."""
    try:
        transaction = call.build_transaction({"from": account.address, "chainId": w3.eth.chain_id,
                                              "nonce": w3.eth.get_transaction_count(account.address, "pending")})
    except ContractLogicError as exc:
        raise FundError(f"{what} would revert: {exc}") from None
    tx_hash = w3.eth.send_raw_transaction(account.sign_transaction(transaction).raw_transaction).to_0x_hex()
    print(f"{what.split()[0]} {tx_hash} ({what})", flush=True)
    receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=TX_TIMEOUT)
    if receipt["status"] != 1:
        raise FundError(f"{what}: transaction {tx_hash} reverted")


def fund(w3: Web3, account, escrow: dict, operator: str) -> None:
    """Check the escrow on chain, then approve and fund this account's unfunded legs."""
    me = account.address
    if w3.eth.chain_id != escrow["chain_id"]:
        raise FundError(f"the escrow is on chain {escrow['chain_id']}, the RPC node serves chain {w3.eth.chain_id}")
    contract = w3.eth.contract(address=escrow["contract"], abi=ESCROW_ABI)
    owner = contract.functions.operator().call()
    if owner != operator:  # the point of the check: never pay into an escrow another operator controls
        raise FundError(f"the escrow {escrow['contract']} belongs to operator {owner}, not to {operator}, the "
                        f"operator this connection authenticated with: refusing to fund it")
    legs, funded = contract.functions.getLegs(escrow["escrow_id"]).call()
    announced = [(leg["token"], leg["from"], leg["to"], int(leg["units"])) for leg in escrow["legs"]]
    if [tuple(leg) for leg in legs] != announced:
        raise FundError(f"the legs of escrow {escrow['escrow_id']} on chain differ from the ones announced")
    if w3.eth.get_block("latest")["timestamp"] > escrow["deadline"]:
        raise FundError(f"the escrow's deadline {escrow['deadline']} has passed")
    owed: dict[str, int] = {}  # token -> units this account still has to pay in
    for (token, payer, _, units), done in zip(legs, funded):
        if payer == me and not done:
            owed[token] = owed.get(token, 0) + units
    if not owed:
        print(f"every leg of {me} is funded already")
        return
    for token_address, units in owed.items():
        token = w3.eth.contract(address=token_address, abi=ERC20_ABI)
        balance = token.functions.balanceOf(me).call()
        if balance < units:
            raise FundError(f"{me} holds {balance} units of token {token_address}, the escrow needs {units}")
        if token.functions.allowance(me, contract.address).call() < units:
            send(w3, account, token.functions.approve(contract.address, units),
                 f"approve {units} units of {token_address} to {contract.address}")
    send(w3, account, contract.functions.fund(escrow["escrow_id"]), f"fund escrow {escrow['escrow_id']}")


async def main(args) -> None:
    key = os.environ.get(args.key_env)
    if not key:
        raise FundError(f"no private key in the environment variable {args.key_env}")
    account = Account.from_key(key)
    w3 = Web3(Web3.HTTPProvider(args.rpc_url, request_kwargs={"timeout": 30}))
    async with Operator(args.url, account, args.timeout) as operator:

        def mine(s):  # the settlement to fund: initiated, with a leg paid by this account (or the one asked for)
            if args.settlement_id is not None:
                return s["settlement_id"] == args.settlement_id and s["state"] not in ("proposed", "accepted")
            return s["state"] == "initiated" and any(leg["from"] == account.address
                                                     for leg in s.get("escrow", {}).get("legs", []))

        settlement = await operator.wait_for(  # an initiated settlement's channel is "settling"
            mine, "settlement to fund", status=None if args.settlement_id is not None else "settling")
        print(f"settlement {settlement['settlement_id']} of channel {settlement['channel_id']}: {settlement['state']}")
        if settlement["state"] in ("failed", "rejected"):
            raise FundError(f"settlement {settlement['settlement_id']} is {settlement['state']}")
        if settlement["state"] == "initiated":
            await asyncio.to_thread(fund, w3, account, settlement["escrow"], operator.identity)
        done = await operator.wait_for(
            lambda s: s["settlement_id"] == settlement["settlement_id"] and s["state"] in (
                "completed", "failed", "rejected"), "end of the settlement", settlement["channel_id"])
        if done["state"] != "completed":
            raise FundError(f"settlement {done['settlement_id']} is {done['state']}")
        print(f"settlement {done['settlement_id']} completed")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url", metavar="WS_URL", help="the operator, e.g. ws://127.0.0.1:8000/")
    parser.add_argument("--key-env", required=True, help="the environment variable that holds the private key")
    parser.add_argument("--rpc-url", required=True, help="a JSON-RPC node of the escrow's chain")
    parser.add_argument("--settlement-id", type=int, help="fund this settlement (default: the first one initiated)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds to wait for each step (default 600)")
    arguments = parser.parse_args()
    try:
        asyncio.run(main(arguments))
    except (FundError, WebSocketException, Web3Exception, OSError, ValueError) as exc:
        sys.exit(f"fund_escrow: {exc}")
