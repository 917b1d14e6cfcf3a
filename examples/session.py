"""A broker pair's session against a running Operator API, step by step, printing every frame.

    .venv/bin/python examples/session.py [ws://127.0.0.1:8000/]

Two fresh Ethereum keys play Alice (initiator) and Bob (responder): connect, authenticate, subscribe, open a
channel, record trades, read positions from both sides, get a channel JWT, settle with the mock method, close the
channel. Exits 0 when every step went through; otherwise prints what went wrong and exits 1.
"""
import asyncio
import itertools
import json
import sys
import time

from eth_account import Account
from eth_account.messages import encode_defunct
from websockets.asyncio.client import connect
from websockets.exceptions import WebSocketException

NOTIFICATIONS = {"stream_notification", "position_notification", "settlement_notification"}
TIMEOUT = 10  # seconds to wait for the server's next frame


class SessionError(Exception):
    """A step went wrong: the server answered an error, or a frame we wait for did not come."""


class Broker:
    def __init__(self, name: str, url: str):
        self.name, self.url = name, url
        self.account = Account.create()
        self.reqids = itertools.count(1)
        self.notes: list[dict] = []
        self.step = "connect"  # what we are doing, for error messages

    async def __aenter__(self):
        self.ws = await connect(self.url)
        greeting = [await self.recv() for _ in range(3)]  # version, identity_address, challenge
        challenge = greeting[2]["data"]["challenge"]
        signature = self.account.sign_message(encode_defunct(text=challenge)).signature.to_0x_hex()
        await self.request("authenticate", {"challenge": challenge, "signature": signature})
        await self.send("subscribe_notifications", reqid=1000)  # no reply; notifications carry reqid 1000
        return self

    async def __aexit__(self, *exc):
        await self.ws.close()

    async def recv(self) -> dict:
        try:
            async with asyncio.timeout(TIMEOUT):
                frame = json.loads(await self.ws.recv())
        except TimeoutError:
            raise SessionError(f"{self.name}: {self.step}: nothing from the server for {TIMEOUT} s") from None
        print(f"  {self.name} <- {json.dumps(frame)}")
        if frame["event"] == "error":  # this session sends nothing wrong: any error ends it
            data = frame["data"]
            raise SessionError(f"{self.name}: {self.step} refused: {data['error']} ({data['code']})")
        if frame["event"] == "settlement_notification" and frame["data"]["state"] in ("failed", "rejected"):
            raise SessionError(f"{self.name}: {self.step}: the settlement was {frame['data']['state']}")
        return frame

    async def send(self, event, data=None, reqid=None) -> int:
        frame = {"event": event, "reqid": next(self.reqids) if reqid is None else reqid}
        if data is not None:
            frame["data"] = data
        print(f"  {self.name} -> {json.dumps(frame)}")
        self.step = event
        await self.ws.send(json.dumps(frame))
        return frame["reqid"]

    async def request(self, event, data=None) -> dict:
        reqid = await self.send(event, data)
        while True:
            frame = await self.recv()
            if frame["event"] in NOTIFICATIONS:
                self.notes.append(frame)
            elif frame["reqid"] == reqid:
                return frame

    async def wait_for(self, event, **match) -> dict:
        self.step = " ".join(["waiting for", event, *map(str, match.values())])
        while True:
            for i, frame in enumerate(self.notes):
                if frame["event"] == event and all(frame["data"].get(k) == v for k, v in match.items()):
                    return self.notes.pop(i)
            self.notes.append(await self.recv())


async def main(url: str) -> None:
    async with Broker("alice", url) as alice, Broker("bob", url) as bob:
        print("\n# Alice proposes a channel with Bob, 1000 margin each; Bob consents with the same request back")
        reply = await alice.request("open_channel", {"peer": {"address": bob.account.address, "name": "Bob"},
                                                     "margin_deposit": "1000"})
        channel_id = reply["data"]["channel_id"]
        await bob.wait_for("stream_notification", action="channelOpened", channel_status="opening")
        reply = await bob.request("open_channel", {"peer": {"address": alice.account.address, "name": "Alice"},
                                                   "margin_deposit": "1000"})
        if reply["data"]["channel_id"] != channel_id:
            raise SessionError(f"Bob's consent opened {reply['data']['channel_id']}, not {channel_id}")
        for broker in (alice, bob):
            await broker.wait_for("stream_notification", action="channelOpened", channel_status="opened")

        print("\n# Alice buys 2 ETH/USD at 100 from Bob; Bob then buys 1 back at 110 (Alice sells)")
        now = int(time.time())
        await alice.request("record_trade", {"channel_id": channel_id, "external_id": "fill-1", "market": "ETH/USD",
                                             "direction": "buy", "amount": "2", "price": "100", "executed_at": now})
        await bob.request("record_trade", {"channel_id": channel_id, "external_id": "fill-2", "market": "ETH/USD",
                                           "direction": "buy", "amount": "1", "price": "110", "executed_at": now})

        print("\n# Positions, each from its own side")
        mine = (await alice.request("positions", {"channel_id": channel_id}))["data"]["positions"][0]["position"]
        theirs = (await bob.request("positions", {"channel_id": channel_id}))["data"]["positions"][0]["position"]
        print(f"  alice: {mine['direction']} {mine['amount']} pnl {mine['pnl']} realized {mine['realized_pnl']}")
        print(f"  bob:   {theirs['direction']} {theirs['amount']} pnl {theirs['pnl']} realized {theirs['realized_pnl']}")

        print("\n# A JWT for Finex")
        await alice.request("channel_jwt", {"channel_id": channel_id})

        print("\n# Settle ETH/USD with the mock method: it runs through every state by itself")
        await alice.request("request_settlement", {"channel_id": channel_id, "payment_method": "mock",
                                                   "chain_id": 1, "markets": ["ETH/USD"]})
        for broker in (alice, bob):
            done = await broker.wait_for("settlement_notification", state="completed")
            await broker.wait_for("stream_notification", action="channelSettled")
        print(f"\nsettled: {json.dumps(done['data']['ledger'])}")

        print("\n# Close the channel: every position is settled, the margins are released")
        await alice.request("close_channel", {"channel_id": channel_id})
        for broker in (alice, bob):
            closed = await broker.wait_for("stream_notification", action="channelClosed")
        print(f"\nclosed: initiator {closed['data']['initiator_margin_balance']}, "
              f"responder {closed['data']['follower_margin_balance']}")


if __name__ == "__main__":
    url = sys.argv[1] if len(sys.argv) > 1 else "ws://127.0.0.1:8000/"
    try:
        asyncio.run(main(url))
    except (SessionError, WebSocketException, OSError) as exc:
        sys.exit(f"session with {url} failed: {exc}")
