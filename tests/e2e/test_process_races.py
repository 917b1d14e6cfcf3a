"""Races across processes (docs/reliability.md): twenty connections on two Daphne processes (both parties, several
connections each) record trades on one channel at once. Every execution is sent from several connections on both
processes (8 of them from all twenty), and some external_ids go out concurrently with two different contents.
Within a process a channel's work runs on one thread; across processes only the database orders it (the channel
row lock; on SQLite, IMMEDIATE transactions), which is what this checks: every trade stored once, each copy
answered as the recording (or ``duplicate_trade`` for other content), the books equal to the ledger, positions and
margins what a sequential replay of the stored trades gives, from either side on either process."""
import asyncio
import os
import time
from collections import Counter, defaultdict

import pytest
from channels.db import database_sync_to_async
from django.db.models import Count
from eth_account import Account
from websockets.exceptions import ConnectionClosed

from channels_app import accounting
from channels_app.models import PeerConnection, Trade
from channels_app.money import MONEY, ZERO, fmt
from channels_app.services.recompute import recompute_positions
from tests.client import NOTIFICATION_EVENTS, NetworkClient, sign, trade
from tests.e2e.servers import daphne

pytestmark = pytest.mark.e2e

PER_PROCESS = 10  # connections on each process: the first half alice's, the second half bob's
TRADES = 40  # executions sent from three connections each, at least one on each process
SHARED = 8  # executions sent from every connection
CONTESTED = 4  # external_ids sent with two different contents, each content from three connections
DEPOSIT = "1000000"
REPLY_TIMEOUT = 60  # seconds for one frame: two busy processes on a small machine


def content(k: int) -> dict:
    """Execution k from the initiator's (alice's) side: two markets, positions that shrink, flip and grow."""
    if k % 2:
        return {"market": "ETH/USD", "direction": "buy" if k % 3 else "sell", "amount": f"{1 + k % 5}.25",
                "price": f"{100 + k % 7}.5"}
    return {"market": "BTC/USD", "direction": "sell" if k % 4 else "buy", "amount": f"0.{k + 1:03d}",
            "price": f"{20000 + 37 * (k % 9)}.125"}


def shared(i: int) -> dict:
    return {"market": "ETH/USD", "direction": "sell" if i % 2 else "buy", "amount": f"{i + 1}.5", "price": f"{101 + i}"}


def contested(j: int, variant: str) -> dict:
    return {"market": "ETH/USD", "direction": "buy", "amount": "3" if variant == "A" else "4", "price": f"{104 + j}.75"}


def fields_of(external_id: str, variant: str = "") -> dict:
    kind, number = external_id[0], int(external_id[1:])
    return {"t": content, "s": shared}[kind](number) if kind in "ts" else contested(number, variant)


class Connection:
    def __init__(self, client: NetworkClient, party: str, process: int):
        self.client, self.party, self.process = client, party, process
        self.plan: list[tuple[str, dict]] = []  # (label, record_trade data) in sending order

    def add(self, channel_id: str, external_id: str, executed_at: int, variant: str = ""):
        """Plans a send of ``external_id`` as this connection's party sees it (bob: the opposite direction)."""
        fields = fields_of(external_id, variant)
        direction = fields["direction"] if self.party == "alice" else accounting.opposite(fields["direction"])
        self.plan.append((f"{external_id}:{variant}" if variant else external_id,
                          trade(channel_id, external_id=external_id, executed_at=executed_at,
                                **{**fields, "direction": direction})))

    async def run(self) -> list[tuple[str, dict]]:
        """Sends the whole plan at once (pipelined), then collects the replies: ``(label, reply frame)``."""
        pending = {}
        for label, data in self.plan:
            pending[await self.client.send("record_trade", data)] = label
        replies = []
        while pending:
            frame = await self.client.recv(timeout=REPLY_TIMEOUT)
            if frame["event"] in NOTIFICATION_EVENTS:
                self.client.notes.append(frame)
            else:
                replies.append((pending.pop(frame["reqid"]), frame))
        return replies


@database_sync_to_async
def live_connections(address: str) -> int:
    return PeerConnection.objects.filter(peer__address=address).count()


@database_sync_to_async  # gives the connection back afterwards, so the test database can be dropped
def ledger(channel_id: str):
    """The stored trades in recording order, the number of rows per external_id, and the ledger rebuild's drift."""
    trades = Trade.objects.filter(channel__channel_id=channel_id)
    copies = dict(trades.values("external_id").annotate(n=Count("id")).values_list("external_id", "n"))
    return list(trades.order_by("id")), copies, recompute_positions(channel_id=channel_id).unfixed


def sequential(stored: list[Trade]):
    """Positions and margins computed one trade after another in recording order with ``accounting``:
    ``({market: (book, last price)}`` of the open positions, the final margins, how many trades changed them)."""
    deposit = MONEY.create_decimal(DEPOSIT)
    open_books: dict = {}
    closed = ZERO  # realized PnL of positions gone flat
    margins, changes = accounting.margin_balances(deposit, ZERO), 0
    for t in stored:
        book, _ = open_books.get(t.market, (accounting.Book(), t.price))
        book = accounting.apply_trade(book, t.initiator_direction, t.amount, t.price)
        if book.is_flat:  # the position closes with its realized PnL; a later trade opens a new one
            open_books.pop(t.market, None)
            closed = MONEY.add(closed, book.realized_pnl)
        else:
            open_books[t.market] = (book, t.price)  # marked at the last trade price (no back-office mark here)
        pnl = closed
        for open_book, mark in open_books.values():
            pnl = MONEY.add(pnl, accounting.total_pnl(open_book, mark))
        after = accounting.margin_balances(deposit, pnl)
        changes += after != margins
        margins = after
    return open_books, margins, changes


def position_view(market: str, book: accounting.Book, mark, party: str) -> dict:
    view = book if party == "alice" else accounting.mirror(book)
    return {"market": market, "direction": view.direction, "amount": fmt(view.amount), "cost": fmt(view.cost),
            "market_value": fmt(accounting.market_value(view, mark)), "pnl": fmt(accounting.unrealized_pnl(view, mark)),
            "realized_pnl": fmt(view.realized_pnl), "mark_price": fmt(mark), "status": "open"}


async def drain(client: NetworkClient, quiet: float = 1.0):
    """Reads notifications until none has come for ``quiet`` seconds (every reply is in, so they are on the way)."""
    while True:
        try:
            client.notes.append(await client.recv(timeout=quiet))
        except TimeoutError:
            return


async def test_concurrent_trades_and_replays_through_two_processes_are_stored_once_and_books_are_exact(daphne_env):
    accounts = {"alice": Account.create(), "bob": Account.create()}
    with daphne(daphne_env) as first, daphne(daphne_env) as second:
        connections: list[Connection] = []  # index = (process - 1) * PER_PROCESS + i
        try:
            for process, (host, port) in ((1, first), (2, second)):
                for i in range(PER_PROCESS):
                    party = "alice" if i < PER_PROCESS // 2 else "bob"
                    client = NetworkClient(f"ws://{host}:{port}/", account=accounts[party])
                    connections.append(Connection(await (await client.connect()).login(), party, process))
            n, half = len(connections), PER_PROCESS // 2
            subscribers = connections[::half]  # one per party per process
            assert [(c.process, c.party) for c in subscribers] == [(1, "alice"), (1, "bob"), (2, "alice"), (2, "bob")]
            for c in subscribers:
                await c.client.subscribe()
            channel_id = await connections[0].client.open_channel(connections[-1].client, deposit=DEPOSIT)
            for c in subscribers:  # without Redis, a process's subscribers hear only what happened on it:
                # the proposal on process 1, the consent on process 2
                for status, process in (("opening", 1), ("opened", 2)):
                    if os.environ.get("REDIS_URL") or c.process == process:
                        await c.client.notification("stream_notification", action="channelOpened",
                                                    channel_status=status)

            now = int(time.time())
            for k in range(TRADES):
                senders = [k % n, (k + 7) % n, (k + 13) % n]
                assert {connections[s].process for s in senders} == {1, 2}
                if k % (TRADES // SHARED) == 0:  # every connection sends it, at about the same moment
                    for c in connections:
                        c.add(channel_id, f"s{k // (TRADES // SHARED)}", now)
                if k % (TRADES // CONTESTED) == 3:  # two contents, each from both processes and both parties
                    j = k // (TRADES // CONTESTED)
                    for variant, offsets in (("A", (0, 10, 5)), ("B", (15, 2, 12))):
                        for offset in offsets:
                            connections[(j + offset) % n].add(channel_id, f"c{j}", now, variant)
                for s in senders:
                    connections[s].add(channel_id, f"t{k}", now)

            outcomes = await asyncio.gather(*(c.run() for c in connections))

            answers = defaultdict(list)
            for replies in outcomes:
                for label, frame in replies:
                    answers[label].append(frame)
            for label, frames in answers.items():
                if ":" in label:
                    continue  # contested: judged below against what was stored
                # every copy answered as the recording itself, whichever connection or process stored it
                recorded = {"channel_id": channel_id, "external_id": label}
                assert all(f["event"] == "record_trade" and f["data"] == recorded for f in frames), frames
            assert len(answers["s0"]) == n and len(answers["t0"]) == 3

            stored, copies, drift = await ledger(channel_id)
            expected_ids = {f"t{k}" for k in range(TRADES)} | {f"s{i}" for i in range(SHARED)} | {
                f"c{j}" for j in range(CONTESTED)}
            assert copies == {external_id: 1 for external_id in expected_ids}  # each stored exactly once
            assert drift == 0  # the stored books and running totals are what the ledger says
            for t in stored:
                variant = ""
                if t.external_id.startswith("c"):  # one content won: each copy of it succeeded, every other refused
                    variant = "A" if t.amount == 3 else "B"
                    lost = "B" if variant == "A" else "A"
                    assert [f["event"] for f in answers[f"{t.external_id}:{variant}"]] == ["record_trade"] * 3
                    assert [f["data"]["code"] for f in answers[f"{t.external_id}:{lost}"]] == ["duplicate_trade"] * 3
                fields = fields_of(t.external_id, variant)
                assert (t.market, t.initiator_direction, t.amount, t.price, t.executed_at) == (
                    fields["market"], fields["direction"], MONEY.create_decimal(fields["amount"]),
                    MONEY.create_decimal(fields["price"]), now)

            open_books, margins, margin_changes = sequential(stored)
            assert open_books, "the plan should leave positions open"
            for c in connections[::3]:  # both parties on both processes
                seen = await c.client.positions(channel_id)
                assert {market: {k: v for k, v in p.items() if k not in ("id", "channel_id")}
                        for market, p in seen.items()} == {
                    market: position_view(market, book, mark, c.party) for market, (book, mark) in open_books.items()}
                [listed] = (await c.client.ok("channels"))["data"]["channels"]
                balances = (listed["initiator_margin_balance"], listed["follower_margin_balance"])
                assert balances == tuple(map(fmt, margins))
            assert {(c.process, c.party) for c in connections[::3]} == {(1, "alice"), (1, "bob"), (2, "alice"),
                                                                        (2, "bob")}

            # Every stored trade is announced once (position_notification) and every margin change once
            # (marginUpdated) to each subscribed connection: with Redis from both processes; without it, by the
            # process that stored it only, so a party's two subscribers share them out.
            heard = {}
            await asyncio.gather(*(drain(c.client) for c in subscribers))
            for c in subscribers:
                kinds = Counter(f["data"].get("action", f["event"]) for f in c.client.notes)
                assert set(kinds) <= {"position_notification", "marginUpdated"}, kinds
                heard[c.process, c.party] = (kinds["position_notification"], kinds["marginUpdated"])
            for party in ("alice", "bob"):
                if os.environ.get("REDIS_URL"):
                    assert heard[1, party] == heard[2, party] == (len(stored), margin_changes), heard
                else:
                    shared_out = tuple(map(sum, zip(heard[1, party], heard[2, party])))
                    assert shared_out == (len(stored), margin_changes), heard
        finally:
            for c in connections:
                await c.client.close()


async def test_concurrent_sign_ins_on_two_processes_never_exceed_the_connection_limit(daphne_env):
    """MAX_CONNECTIONS_PER_PEER counts live connections across all processes (docs/protocol.md, abuse limits): of
    eight sign-ins racing on two processes for four free places, exactly four get in."""
    limit, account = 4, Account.create()
    env = {**daphne_env, "MAX_CONNECTIONS_PER_PEER": str(limit)}
    with daphne(env) as first, daphne(env) as second:
        clients = []
        try:
            for host, port in (first, second) * limit:
                clients.append(await NetworkClient(f"ws://{host}:{port}/", account=account).connect())
            answers = await asyncio.gather(*(c.request("authenticate", {"challenge": c.challenge,
                                                                        "signature": sign(account, c.challenge)})
                                             for c in clients))
            assert sorted(a["event"] if a["event"] != "error" else a["data"]["code"] for a in answers) == (
                ["authenticate"] * limit + ["connection_limit"] * limit), answers
            assert await live_connections(account.address) == limit
            refused = [c for c, a in zip(clients, answers) if a["event"] == "error"]
            for c in refused:  # closed by the server: 4429
                with pytest.raises(ConnectionClosed) as closed:
                    await c.recv()
                assert closed.value.rcvd.code == 4429

            # a place freed on one process can be taken on the other
            leaving = next(i for i, a in enumerate(answers) if a["event"] == "authenticate")
            other = second if leaving % 2 == 0 else first  # the clients alternate between the processes
            await clients[leaving].close()
            for _ in range(100):  # the server removes the presence row once it has seen the close
                if await live_connections(account.address) < limit:
                    break
                await asyncio.sleep(0.05)
            clients.append(await NetworkClient(f"ws://{other[0]}:{other[1]}/", account=account).connect())
            await clients[-1].login()
            assert await live_connections(account.address) == limit
        finally:
            for c in clients:
                await c.close()
