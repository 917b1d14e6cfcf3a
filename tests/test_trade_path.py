"""The trade path in plain SQL (channels_app/tradestore.py): two database round trips a request, and on any history
exactly what the ORM reference (tests/orm_reference.py) stores: positions, trades, running total, zones, balances,
and the ledger a settlement then computes."""
import os
import tempfile
from contextlib import contextmanager
from decimal import Decimal

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.db import connection
from eth_account import Account
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from channels_app import aiodb, selectors
from channels_app.errors import DomainError
from channels_app.models import Channel, Peer, Position
from channels_app.services import marks, trades
from settlement import services as settlement_services
from settlement.models import SettlementState
from tests import orm_reference
from tests.client import EXECUTED_AT
from tests.factories import opened_channel

pytestmark = pytest.mark.django_db(transaction=True)  # the path's own transaction, as on the server


ON_POSTGRESQL = os.environ.get("DATABASE_URL", "").split(":")[0] in ("postgres", "postgresql")
PG_ONLY = pytest.mark.skipif(not ON_POSTGRESQL, reason="round trips are PostgreSQL's: SQLite runs in the process")


def item(external_id, market="ETH/USD", direction="buy", amount="1", price="100"):
    return trades.TradeInput(external_id, market, direction, Decimal(amount), Decimal(price), EXECUTED_AT)


@pytest.fixture
def channel_and_peers():
    alice = Peer.objects.create(address=Account.create().address)
    bob = Peer.objects.create(address=Account.create().address)
    channel = opened_channel(initiator=alice, responder_address=bob.address, margin_deposit=Decimal("1000"))
    return channel, alice, bob


@contextmanager
def counting_round_trips(pgconn):
    """Counts how many times the client waits on the server meanwhile: each simple Query and each Sync it sends
    (libpq's own trace of the wire protocol). Yields a list that holds the count when the block ends."""
    from psycopg import pq

    counted = []
    with tempfile.TemporaryFile("w+") as trace:
        pgconn.trace(trace.fileno())
        pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS | pq.Trace.REGRESS_MODE)
        try:
            yield counted
        finally:
            pgconn.untrace()
        trace.seek(0)
        sent = [line.split("\t")[2].strip() for line in trace if line.startswith("F\t")]
    counted.append(sum(1 for message in sent if message.split(" ")[0] in ("Query", "Sync")))


def client_round_trips(call) -> int:
    """The round trips of ``call`` on this thread's connection."""
    connection.ensure_connection()
    with counting_round_trips(connection.connection.pgconn) as counted:
        call()
    return counted[0]


@PG_ONLY
def test_a_trade_takes_two_database_round_trips(channel_and_peers):
    channel, alice, bob = channel_and_peers

    def record(*items, peer=alice):
        return lambda: trades.record_trades(peer=peer, channel_id=channel.channel_id, trades=list(items))

    connection.close()
    connection.close_pool()  # a new connection prepares the hot statements first: once in its life
    assert client_round_trips(record(item("first", market="SOL/USD"))) == 3
    assert client_round_trips(record(item("new-position"))) == 2  # a position opened
    assert client_round_trips(record(item("same-position", direction="sell", amount="0.5"), peer=bob)) == 2
    assert client_round_trips(record(*(item(f"b{n}", market=("ETH/USD", "BTC/USD")[n % 2]) for n in range(100)))) == 2
    # A replay is taken for a new trade until the unique constraint refuses its store; then the request starts again,
    # reading the stored trades (ROLLBACK and BEGIN travel with that read), and COMMITs having written nothing.
    assert client_round_trips(record(item("new-position"))) == 4

    def refused():
        with pytest.raises(DomainError):
            record(item("too-big", price="100000"))()

    assert client_round_trips(refused) == 2  # read; then the stored trades (none) and COMMIT: nothing written
    # The counter tells them apart: the ORM reference (the path before) waits on the server for each statement.
    orm = client_round_trips(lambda: orm_reference.record_trades(peer=alice, channel_id=channel.channel_id,
                                                                 trades_in=[item("by-the-orm")]))
    assert orm >= 6, orm
    position = Position.objects.get(channel=channel, market="ETH/USD", status="open")
    assert position.quantity == Decimal("52.5") and channel.trades.count() == 104  # 1 + 0.5 + 50 + 1


@PG_ONLY
async def test_on_the_event_loop_a_trade_takes_two_database_round_trips_too(channel_and_peers):
    """The server's path (``arecord_trades``, channels_app/aiodb.py): the same scripts on the loop's own pool."""
    channel, alice, bob = channel_and_peers

    async def round_trips(*items, peer=alice) -> int:
        async with (await aiodb.pool()).connection() as conn:  # the pool's one connection: the next one taken
            pgconn = conn.pgconn
        with counting_round_trips(pgconn) as counted:
            try:
                await trades.arecord_trades(peer=peer, channel_id=channel.channel_id, trades=list(items))
            except DomainError:
                pass
        return counted[0]

    try:
        assert await round_trips(item("first")) == 3  # a new connection prepares the hot statements first
        assert await round_trips(item("more")) == 2
        assert await round_trips(item("from-bob", direction="sell", amount="0.5"), peer=bob) == 2
        assert await round_trips(*(item(f"b{n}", market=("ETH/USD", "BTC/USD")[n % 2]) for n in range(100))) == 2
        assert await round_trips(item("more")) == 4  # a replay (see the test above)
        assert await round_trips(item("too-big", price="100000")) == 2  # a refusal
        assert (await aiodb.pool()).get_stats()["pool_size"] == 1  # so every call above was on the one traced
    finally:
        await aiodb.close()
    quantity = await sync_to_async(lambda: Position.objects.get(channel=channel, market="ETH/USD", status="open")
                                   .quantity)()
    assert quantity == Decimal("52.5")  # 1 + 1 + 0.5 + 50


@PG_ONLY
def test_the_prepared_statements_are_planned_once_not_at_every_trade(channel_and_peers):
    """PostgreSQL plans a prepared statement for its values 5 times, then keeps its generic plan if that costs no
    more; a statement whose generic plan costs more (one whose estimate depends on a value) is planned anew at every
    execution, which cost more than running it (bench/RESULTS.md). Every shape of request, a dozen times each."""
    from channels_app.services.auth import admit_peer

    channel, alice, bob = channel_and_peers
    connection.close()
    connection.close_pool()  # a connection of its own: its statements' counters start at zero
    record = trades.record_trades
    for n in range(12):
        record(peer=alice, channel_id=channel.channel_id, trades=[item(f"open-{n}", market="SOL/USD")])
        record(peer=bob, channel_id=channel.channel_id, trades=[item(f"close-{n}", market="SOL/USD")])  # flat
        record(peer=alice, channel_id=channel.channel_id, trades=[
            item(f"batch-{n}-{k}", market=("ETH/USD", "BTC/USD")[k % 2], direction=("buy", "sell")[k // 2 % 2])
            for k in range(2 + 3 * n)])
        record(peer=alice, channel_id=channel.channel_id, trades=[item(f"open-{n}", market="SOL/USD")])  # replay
        admit_peer(address=Account.create().address, channel_name=f"c{n}")
    with connection.cursor() as cursor:
        cursor.execute("SELECT name, generic_plans, custom_plans FROM pg_prepared_statements")
        plans = {name: (generic, custom) for name, generic, custom in cursor.fetchall()}
    assert {"trade_lock", "trade_positions", "trade_marks", "trade_update_positions",
            "trade_insert", "trade_update_channel", "admit", "admit_create_peer"} <= set(plans)
    executed = {name: counts for name, counts in plans.items() if sum(counts) > 5}
    assert executed.keys() >= {"trade_lock", "trade_insert", "trade_update_positions", "admit"}
    assert {name: counts for name, counts in executed.items() if counts[1] > 5} == {}, "planned at every execution"


@PG_ONLY
def test_an_admission_takes_one_database_round_trip():
    from channels_app.services.auth import admit_peer

    admit_peer(address=Account.create().address)  # the connection has prepared the statements (once in its life)
    address = Account.create().address
    assert client_round_trips(lambda: admit_peer(address=address, channel_name="c1")) == 1  # a new peer
    assert client_round_trips(lambda: admit_peer(address=address, channel_name="c2")) == 1
    peer = Peer.objects.get(address=address)
    assert peer.first_seen is not None and peer.connections.count() == 2
    Peer.objects.filter(pk=peer.pk).update(is_disabled=True)

    def refused():
        with pytest.raises(DomainError, match="disabled"):
            admit_peer(address=address, channel_name="c3")

    assert client_round_trips(refused) == 1
    assert peer.connections.count() == 2


@pytest.mark.parametrize("record", ["plain_sql", "orm_reference"])
def test_a_batch_closes_a_position_and_opens_the_next_one_in_its_market(channel_and_peers, record):
    """Found by the benchmark: the new position was written before the old one was closed, against the one open
    position a market may have."""
    channel, alice, _ = channel_and_peers
    record = {"plain_sql": plain_sql, "orm_reference": orm_reference.record_trades}[record]
    record(peer=alice, channel_id=channel.channel_id, trades_in=[item("open", amount="1")])
    record(peer=alice, channel_id=channel.channel_id, trades_in=[
        item("close", direction="sell", amount="1", price="110"), item("reopen", amount="2", price="105"),
        item("close-again", direction="sell", amount="2", price="100"), item("once-more", amount="3", price="100")])
    assert [(p.status, p.quantity, p.realized_pnl) for p in channel.positions.order_by("id")] == [
        ("closed", 0, 10), ("closed", 0, -10), ("open", 3, 0)]
    assert [t.position.status for t in channel.trades.order_by("id")] == ["closed", "closed", "closed", "closed",
                                                                          "open"]


def _stray_trade(peer: Peer, **references) -> None:
    """Stores a trade outside the services, naming ``references`` (channel_id, position_id), in a transaction of
    its own: the keys are checked at its COMMIT."""
    from django.db import transaction

    from channels_app.models import Trade

    with transaction.atomic():
        Trade.objects.create(external_id="stray", recorded_by=peer, market="ETH/USD", direction="buy",
                             initiator_direction="buy", amount=Decimal("1"), price=Decimal("100"),
                             executed_at=EXECUTED_AT, **references)


@pytest.mark.parametrize("stray", [
    "missing position", "missing channel",
    pytest.param("another channel's position", marks=pytest.mark.skipif(
        not ON_POSTGRESQL, reason="SQLite checks each reference alone (channels_app/migrations/0007)")),
])
def test_the_database_refuses_a_trade_whose_position_is_not_of_its_channel(channel_and_peers, stray):
    """The trade's channel and position, checked by one composite key on PostgreSQL (two on SQLite): whatever
    writes a trade, the ledger cannot book it to a position of another channel, or of none."""
    from django.db import IntegrityError

    from channels_app.models import Trade

    channel, alice, bob = channel_and_peers
    other = opened_channel(initiator=alice, responder_address=Account.create().address,
                           margin_deposit=Decimal("1000"))
    plain_sql(peer=alice, channel_id=channel.channel_id, trades_in=[item("mine")])
    plain_sql(peer=alice, channel_id=other.channel_id, trades_in=[item("theirs")])
    mine, theirs = (Position.objects.get(channel=c) for c in (channel, other))
    references = {"missing position": {"channel_id": channel.pk, "position_id": theirs.pk + mine.pk + 1},
                  "missing channel": {"channel_id": channel.pk + other.pk + 1, "position_id": mine.pk},
                  "another channel's position": {"channel_id": channel.pk, "position_id": theirs.pk}}[stray]
    with pytest.raises(IntegrityError):
        _stray_trade(alice, **references)
    assert sorted(Trade.objects.values_list("external_id", flat=True)) == ["mine", "theirs"]
    _stray_trade(bob, channel_id=channel.pk, position_id=mine.pk)  # what the key lets through
    assert channel.trades.filter(external_id="stray", position=mine).exists()


# --- the plain-SQL path against the ORM reference, on random histories -------------------------------------
MARKETS = ("ETH/USD", "BTC/USD", "ETH/USDT")
amounts = st.sampled_from(["0.5", "1", "1", "1.25", "2", "2", "3", "7.125"])  # repeats: positions go flat
prices = st.sampled_from(["90", "99.5", "100", "101.25", "110", "250", "400"])
trade_op = st.tuples(st.just("trade"), st.booleans(), st.lists(st.tuples(
    st.sampled_from(MARKETS), st.sampled_from(["buy", "sell"]), amounts, prices), min_size=1, max_size=6))
# a stored trade again, alone or before a new one (the path takes a request for new until the constraint refuses it)
replay_op = st.tuples(st.just("replay"), st.integers(min_value=0, max_value=30), st.booleans())
mark_op = st.tuples(st.just("mark"), st.sampled_from(MARKETS), prices)
settle_op = st.tuples(st.just("settle"), st.sampled_from(MARKETS), st.sampled_from(["completed", "rejected"]))
histories = st.lists(st.one_of(trade_op, trade_op, trade_op, replay_op, mark_op, settle_op), max_size=14)


def snapshot(channel: Channel) -> dict:
    channel.refresh_from_db()
    positions = list(channel.positions.order_by("id"))
    key = {p.pk: n for n, p in enumerate(positions)}
    return {
        "positions": [(p.market, p.status, p.quantity, p.cost, p.realized_pnl, p.last_price, p.settle_price)
                      for p in positions],
        "trades": [(t.external_id, t.market, t.direction, t.initiator_direction, t.amount, t.price, t.executed_at,
                    key[t.position_id]) for t in channel.trades.order_by("id")],
        "channel": (channel.status, channel.closed_pnl, channel.initiator_zone, channel.responder_zone,
                    channel.margin_call_due_at is None, channel.margin_call_error),
        "margins": tuple(selectors.margins(channel)),
    }


def apply(op, channel, initiator, responder, record, counter) -> str | None:
    try:
        if op[0] == "trade":
            inputs = []
            for market, direction, amount, price in op[2]:
                counter.append(1)
                inputs.append(item(f"t{len(counter)}", market, direction, amount, price))
            record(peer=initiator if op[1] else responder, channel_id=channel.channel_id, trades_in=inputs)
        elif op[0] == "replay" and op[1] < len(counter):
            stored = channel.trades.filter(external_id=f"t{op[1] + 1}").first()
            if stored is not None:
                inputs = [item(stored.external_id, stored.market, stored.direction, stored.amount, stored.price)]
                if op[2]:
                    counter.append(1)
                    inputs.append(item(f"t{len(counter)}", stored.market, stored.direction, "1", stored.price))
                record(peer=stored.recorded_by, channel_id=channel.channel_id, trades_in=inputs)
        elif op[0] == "settle":
            settlement = settlement_services.propose_settlement(
                channel_id=channel.channel_id, payment_method="mock", chain_id=1, markets=[op[1]], actor="test")
            if op[2] == "rejected":
                settlement_services.transition(settlement_pk=settlement.pk, target=SettlementState.REJECTED,
                                               actor="test")
            else:
                for state in (SettlementState.ACCEPTED, SettlementState.INITIATED, SettlementState.PREPARED,
                              SettlementState.EXECUTED, SettlementState.COMPLETED):
                    settlement_services.transition(settlement_pk=settlement.pk, target=state, actor="test")
    except DomainError as exc:
        return str(exc.code)
    return None


def plain_sql(*, peer, channel_id, trades_in):
    trades.record_trades(peer=peer, channel_id=channel_id, trades=trades_in)


def on_the_event_loop(*, peer, channel_id, trades_in):
    """The server's path on PostgreSQL (``arecord_trades``: the same scripts on the event loop's own connection)."""
    async def record():
        try:
            await trades.arecord_trades(peer=peer, channel_id=channel_id, trades=trades_in)
        finally:
            await aiodb.close()  # this call's loop ends with it

    async_to_sync(record)()


def test_on_random_histories_the_plain_sql_path_stores_what_the_orm_reference_stores(settings):
    """On a database thread, and on the event loop where the server runs it (PostgreSQL)."""
    settings.SETTLEMENT_ACCEPT_POLICY = "manual"
    settings.NOTICE_PUBLISHER = "tests.test_margins.discard"

    @settings_for_db
    @given(histories)
    def run(history):
        sides = []
        for record in (orm_reference.record_trades, plain_sql, *([on_the_event_loop] if aiodb.enabled() else [])):
            initiator = Peer.objects.create(address=Account.create().address)
            responder = Peer.objects.create(address=Account.create().address)
            channel = opened_channel(initiator=initiator, responder_address=responder.address,
                                     margin_deposit=Decimal("500"))
            # the payment worker's note of why a margin call could not start: no trade changes it, yet the trade's
            # UPDATE writes it (with the fields it does change)
            Channel.objects.filter(pk=channel.pk).update(margin_call_error="escrow is not available yet")
            sides.append((channel, initiator, responder, record, []))
        for op in history:
            if op[0] == "mark":  # marks are the operator's, for every channel alike
                marks.set_mark(market=op[1], price=Decimal(op[2]))
                continue
            outcomes = [apply(op, *side) for side in sides]
            assert all(outcome == outcomes[0] for outcome in outcomes), op
            assert all(snapshot(side[0]) == snapshot(sides[0][0]) for side in sides), op
        ledgers = []
        for channel, *_ in sides:
            markets = sorted(set(channel.positions.filter(status="open").values_list("market", flat=True)))
            if markets:
                ledgers.append(settlement_services.propose_settlement(
                    channel_id=channel.channel_id, payment_method="mock", chain_id=1, markets=markets,
                    actor="test").ledger)
        assert len(ledgers) in (0, len(sides)) and all(ledger == ledgers[0] for ledger in ledgers)

    run()


# 60: at 40 no history had a trade rewrite the channel's fields with the worker's note unread (a defect it missed)
settings_for_db = settings(max_examples=60, deadline=None, database=None, derandomize=True,
                           suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
