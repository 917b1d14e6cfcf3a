"""Crash durability (docs/reliability.md): brokers record trades while the server is SIGKILLed and restarted
several times. A broker whose request got no reply reconnects and sends the same trade again (idempotency makes
that safe), as a real one would. Afterwards every acknowledged trade is stored exactly once, nothing is stored that
no broker sent, and the stored positions are what the trade ledger says."""
import asyncio
import json
import random
import time
from decimal import Decimal

import pytest
from asgiref.sync import sync_to_async
from eth_account import Account
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from channels_app import accounting
from channels_app.models import Channel, Position, Trade
from channels_app.services.recompute import recompute_positions
from tests.client import NetworkClient, trade
from tests.e2e.servers import REPO, DaphneProcess

pytestmark = pytest.mark.e2e
PAIRS, KILLS = 3, 3
ARTIFACT = REPO / "test-artifacts" / "durability.json"


class Broker:
    """One broker connection recording trades; on a lost reply it reconnects and re-sends the same trade."""

    def __init__(self, server: DaphneProcess, account, channel_id: str, tag: str):
        self.server, self.account, self.channel_id, self.tag = server, account, channel_id, tag
        self.client = None
        self.acked: dict[str, dict] = {}
        self.resent = 0

    async def connect(self):
        deadline = time.monotonic() + 30
        while True:
            try:
                self.client = await (await NetworkClient(self.server.url, account=self.account).connect()).login()
                return
            except (OSError, ConnectionClosed, InvalidHandshake, TimeoutError):
                assert time.monotonic() < deadline, "server did not come back"
                await asyncio.sleep(0.1)

    async def record_until(self, stop: asyncio.Event, rng: random.Random):
        serial = 0
        while not stop.is_set():
            serial += 1
            data = trade(self.channel_id, external_id=f"{self.tag}-{serial}", direction=rng.choice(("buy", "sell")),
                         amount=f"{rng.randint(1, 500)}.{rng.randint(0, 99):02d}", price=str(rng.randint(90, 110)))
            await self.deliver(data)

    async def deliver(self, data: dict):
        """Send until answered; a reply is the acknowledgement the broker books."""
        first = True
        while True:
            try:
                if not first:
                    self.resent += 1
                first = False
                reply = await self.client.request("record_trade", data)
                assert reply["event"] == "record_trade", reply
                self.acked[data["external_id"]] = data
                return
            except (ConnectionClosed, TimeoutError, OSError):
                await self.connect()


async def test_acknowledged_trades_survive_sigkill_exactly_once(daphne_env):
    server = DaphneProcess(daphne_env)
    server.start()
    brokers = []
    try:
        for pair in range(PAIRS):
            alice_account, bob_account = Account.create(), Account.create()
            alice = await (await NetworkClient(server.url, account=alice_account).connect()).login()
            bob = await (await NetworkClient(server.url, account=bob_account).connect()).login()
            channel_id = await alice.open_channel(bob, deposit="1000000000")
            for account, client, side in ((alice_account, alice, "a"), (bob_account, bob, "b")):
                broker = Broker(server, account, channel_id, f"p{pair}{side}")
                broker.client = client
                brokers.append(broker)

        stop, rng = asyncio.Event(), random.Random(7)
        workers = [asyncio.create_task(b.record_until(stop, random.Random(i))) for i, b in enumerate(brokers)]
        for _ in range(KILLS):
            await asyncio.sleep(rng.uniform(0.4, 1.0))
            await asyncio.to_thread(server.kill)  # mid-stream: requests in flight, transactions open
            await asyncio.sleep(0.2)
            await asyncio.to_thread(server.start)
        await asyncio.sleep(0.5)
        stop.set()
        await asyncio.wait_for(asyncio.gather(*workers), 60)
    finally:
        for broker in brokers:
            if broker.client is not None:
                await broker.client.close()
        server.stop()

    @sync_to_async
    def check():
        acked_total = found_total = 0
        for channel in Channel.objects.all():
            mine = [b for b in brokers if b.channel_id == channel.channel_id]
            acked = {eid: data for b in mine for eid, data in b.acked.items()}
            stored = list(Trade.objects.filter(channel=channel).order_by("id"))
            ids = [t.external_id for t in stored]
            assert len(ids) == len(set(ids)), "a trade stored twice"
            assert set(ids) == set(acked), f"missing {set(acked) - set(ids)}, from nowhere {set(ids) - set(acked)}"
            for t in stored:  # and stored as sent
                sent = acked[t.external_id]
                assert (t.amount, t.price, t.market) == (Decimal(sent["amount"]), Decimal(sent["price"]),
                                                         sent["market"])
            # the ledger, replayed independently, nets to what the stored positions hold
            book = accounting.replay((t.initiator_direction, t.amount, t.price) for t in stored)
            held = [p.quantity for p in Position.objects.filter(channel=channel, status="open")]
            assert sum(held) == book.quantity
            acked_total += len(acked)
            found_total += len(ids)
        assert recompute_positions(fix=False).unfixed == 0  # every stored position and total equals its rebuild
        return acked_total, found_total

    acked_total, found_total = await check()
    figures = {"trades_acknowledged": acked_total, "trades_found": found_total, "kills_survived": KILLS,
               "server_starts": server.starts, "resent_after_reconnect": sum(b.resent for b in brokers),
               "brokers": len(brokers)}
    ARTIFACT.parent.mkdir(exist_ok=True)
    ARTIFACT.write_text(json.dumps(figures, indent=2) + "\n")
    print("durability:", figures)
    assert acked_total > 50 and server.starts == KILLS + 1
