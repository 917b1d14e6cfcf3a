"""Races across processes (docs/reliability.md): many connections on two Daphne processes record trades on one
channel at once, and send the same external_id concurrently from both sides and both processes. Exactly one row
per trade, and positions and margins exactly what a sequential replay of the stored trades gives."""
import asyncio
import random
import time

import pytest
from asgiref.sync import sync_to_async
from eth_account import Account

from channels_app import accounting
from channels_app.models import Trade
from channels_app.money import MONEY, fmt
from channels_app.services.recompute import recompute_positions
from tests.client import NetworkClient, trade
from tests.e2e.servers import daphne

pytestmark = pytest.mark.e2e
CONNECTIONS_PER_PEER_PER_PROCESS = 5
TRADES_PER_CONNECTION = 12
SHARED = 8  # external_ids every connection sends (the same content, each from its own side)


async def test_concurrent_trades_and_replays_across_two_processes_are_exact(daphne_env):
    alice_account, bob_account = Account.create(), Account.create()
    with daphne(daphne_env) as (host1, port1), daphne(daphne_env) as (host2, port2):
        urls = [f"ws://{host1}:{port1}/", f"ws://{host2}:{port2}/"]
        opener = await (await NetworkClient(urls[0], account=alice_account).connect()).login()
        bob_first = await (await NetworkClient(urls[1], account=bob_account).connect()).login()
        channel_id = await opener.open_channel(bob_first, deposit="100000000")
        clients = []
        for url in urls:
            for account in (alice_account, bob_account):
                for _ in range(CONNECTIONS_PER_PEER_PER_PROCESS):
                    clients.append(await (await NetworkClient(url, account=account).connect()).login())
        now = int(time.time())
        shared = [trade(channel_id, external_id=f"shared-{i}", direction="buy" if i % 2 else "sell",
                        amount=f"{i + 1}.5", price=f"{100 + i}", executed_at=now) for i in range(SHARED)]

        async def work(index, client):
            rng = random.Random(index)
            requests = [trade(channel_id, external_id=f"c{index}-{n}", direction=rng.choice(("buy", "sell")),
                              amount=f"0.{rng.randint(1, 999):03d}", price=str(rng.randint(95, 105)), executed_at=now)
                        for n in range(TRADES_PER_CONNECTION)]
            mirrored = [dict(t) for t in shared]
            if client.account is bob_account:  # bob reports the same executions from his side
                for t in mirrored:
                    t["direction"] = "sell" if t["direction"] == "buy" else "buy"
            requests += mirrored
            rng.shuffle(requests)
            for data in requests:
                reply = await client.request("record_trade", data)
                assert reply["event"] == "record_trade", reply  # first write or replay: both succeed
                assert reply["data"]["external_id"] == data["external_id"]

        try:
            await asyncio.gather(*(work(i, c) for i, c in enumerate(clients)))
            views = {}
            for client in (opener, bob_first):
                views[client.address] = (await client.positions(channel_id)).get("ETH/USD")
                listed = (await client.ok("channels"))["data"]["channels"]
                views[client.address + "/margins"] = (listed[0]["initiator_margin_balance"],
                                                      listed[0]["follower_margin_balance"])
        finally:
            for client in [opener, bob_first, *clients]:
                await client.close()

    @sync_to_async
    def stored():
        return list(Trade.objects.filter(channel__channel_id=channel_id).order_by("id").values_list(
            "external_id", "initiator_direction", "amount", "price"))

    rows = await stored()
    ids = [r[0] for r in rows]
    assert len(ids) == len(set(ids)) == len(clients) * TRADES_PER_CONNECTION + SHARED
    assert await sync_to_async(recompute_positions)(fix=False) == []

    book = accounting.replay((d, a, p) for _, d, a, p in rows)  # sequential, in commit order
    last_price = rows[-1][3]
    mine = views[alice_account.address]
    if book.is_flat:
        assert mine is None
    else:
        assert (mine["direction"], mine["amount"], mine["cost"]) == (book.direction, fmt(book.amount), fmt(book.cost))
        mirror = views[bob_account.address]
        assert (mirror["amount"], mirror["cost"]) == (fmt(book.amount), fmt(book.cost))
    # flat positions closed along the way keep their realized PnL in the margins: the ledger's total PnL
    pnl = accounting.total_pnl(book, last_price)
    expected = (fmt(MONEY.add(100000000, pnl)), fmt(MONEY.subtract(100000000, pnl)))
    assert views[alice_account.address + "/margins"] == views[bob_account.address + "/margins"] == expected
