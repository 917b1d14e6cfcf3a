"""Long-lived async workers and the database (docs/reliability.md): every request gives its connection back to the
pool, and a connection the database dropped while idle is replaced, not handed to a request."""
import asyncio
import threading
import time
from contextlib import contextmanager
from types import SimpleNamespace

import psycopg
import pytest
from django.conf import settings
from django.db import connection, connections
from django.test import AsyncClient

from channels_app import aiodb
from tests.client import trade

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql",
                       reason="the connection pool is PostgreSQL's (SQLite keeps one connection on one thread)"),
]


def pool_stats() -> dict:
    return connections["default"].pool.get_stats()


def checked_out(pool) -> int:
    """Connections out of ``pool`` now (as the pool counts them: those it is still opening too)."""
    stats = pool.get_stats()
    return stats["pool_size"] - stats["pool_available"]


@contextmanager
def pool_connections():
    """Counts, by connection, of the pool connections taken inside the block: ``taken`` and those not given back
    (``kept``).

    Not read from the pool's counters: those count a connection the pool is still opening (to replace one a
    database restart dropped, say) as taken, so a previous test's late replacement would read as a connection
    kept, or given back, here.
    """
    pool, seen = connections["default"].pool, SimpleNamespace(taken=0, kept={})  # kept: id -> the taker's thread
    getconn, putconn = pool.getconn, pool.putconn

    def taking(*args, **kwargs):
        conn = getconn(*args, **kwargs)
        seen.taken += 1
        seen.kept[id(conn)] = threading.current_thread().name
        return conn

    def giving_back(conn):
        seen.kept.pop(id(conn), None)
        return putconn(conn)

    pool.getconn, pool.putconn = taking, giving_back
    try:
        yield seen
    finally:
        del pool.getconn, pool.putconn


def terminate(pids: list[int]) -> None:
    """End these backends, and wait until they are gone: a backend sends its error to the client before it exits,
    so by then each idle connection's socket has it (a restart, too, ends its backends before it returns)."""
    with psycopg.connect(**connection.get_connection_params(), autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) AS pid", [pids])
        while admin.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)", [pids]).fetchone()[0]:
            time.sleep(0.01)


async def terminate_other_sessions() -> int:
    """What a database restart or an idle-session reaper does: every session of the server on the test database is
    ended (not the test's own: the test harness flushes the database with it afterwards)."""
    harness = connection.connection.info.backend_pid if connection.connection is not None else 0

    def others():
        with psycopg.connect(**connection.get_connection_params(), autocommit=True) as admin:
            return [pid for pid, in admin.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() "
                "AND pid <> %s AND backend_type = 'client backend'", [harness])]

    pids = await asyncio.to_thread(others)
    await asyncio.to_thread(terminate, pids)
    return len(pids)


async def channels_on_every_thread(alice, bob, count=12):
    """Enough channels that their work lands on several of the DB_THREADS database threads."""
    channel_ids = [await alice.open_channel(bob, deposit="100") for _ in range(count)]
    for index, channel_id in enumerate(channel_ids):
        await alice.record(channel_id, external_id=f"t{index}")
        await bob.positions(channel_id)
    return channel_ids


async def test_idle_database_threads_hold_no_connection(connect):
    alice, bob = await connect(), await connect()
    with pool_connections() as used:
        await channels_on_every_thread(alice, bob)
        # Every connection the requests used is back in the pool: none stays checked out by a thread between
        # requests. (A background task, such as the presence heartbeat, may be using one at this moment: a
        # connection is kept only if it is still out a second later. Before the fix they stayed out for ever.)
        deadline = time.monotonic() + 1
        while used.kept and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
    assert used.taken >= 1 and not used.kept, (used.kept, pool_stats())
    assert pool_stats()["pool_size"] <= settings.DATABASES["default"]["OPTIONS"]["pool"]["max_size"]


async def test_connections_dropped_by_the_database_are_replaced(connect):
    alice, bob = await connect(), await connect()
    channel_ids = await channels_on_every_thread(alice, bob)
    assert await terminate_other_sessions() >= 1
    # every thread's next request gets a working connection: the pool checks each one it hands out and replaces
    # the dead ones (the first requests may wait a second or two for the new connections)
    for index, channel_id in enumerate(channel_ids):
        reply = await alice.request("record_trade", trade(channel_id, external_id=f"again-{index}"), timeout=30)
        assert reply["event"] == "record_trade", reply
        assert len(await bob.positions(channel_id)) == 1
    assert pool_stats()["connections_lost"] >= 1


async def test_a_pool_full_of_dropped_connections_is_sorted_at_once(pair):
    """After a database restart every idle connection of the pool is dead. The first one found so has the others
    checked at once: psycopg_pool alone tried them one by one, waiting 1, 2, 4... s between two dead ones, and with
    a full pool the request timed out (an ``internal_error`` after 10 s)."""
    alice, bob, channel_id = pair
    pool = connections["default"].pool
    size = settings.DATABASES["default"]["OPTIONS"]["pool"]["max_size"]

    def fill():  # every connection the pool may hold, idle in it
        taken = [pool.getconn() for _ in range(size - checked_out(pool))]
        for conn in taken:
            pool.putconn(conn)
        return pool.get_stats()["pool_available"]

    assert await asyncio.to_thread(fill) >= size - 1  # (the test's own connection may be out)
    assert await terminate_other_sessions() >= size - 1
    started = asyncio.get_running_loop().time()
    view = await bob.ok("positions", {"channel_id": channel_id}, timeout=8)
    assert view["data"]["positions"] == []
    assert asyncio.get_running_loop().time() - started < 3  # one back-off of about a second, not 1 + 2 + 4 s...
    assert pool_stats()["connections_lost"] >= size - 2


async def test_the_trade_paths_pool_full_of_dropped_connections_is_sorted_at_once_too(pair):
    """The same for the trade path's own pool (channels_app/aiodb.py), its connections only ended."""
    alice, bob, channel_id = pair
    pool = await aiodb.pool()
    taken = [await pool.getconn() for _ in range(pool.max_size - checked_out(pool))]
    backends = [conn.info.backend_pid for conn in taken]
    for conn in taken:
        await pool.putconn(conn)
    assert pool.get_stats()["pool_available"] == pool.max_size

    await asyncio.to_thread(terminate, backends)  # the trade path's connections only, all idle in its pool
    started = asyncio.get_running_loop().time()
    reply = await alice.request("record_trade", trade(channel_id, external_id="after-restart"), timeout=8)
    assert reply["event"] == "record_trade", reply
    assert asyncio.get_running_loop().time() - started < 3
    assert pool.get_stats()["connections_lost"] >= pool.max_size - 1


async def test_healthz_gives_its_connection_back_and_survives_a_dropped_one():
    with pool_connections() as used:
        for _ in range(3):
            assert (await AsyncClient().get("/healthz")).status_code == 200
    assert used.taken == 3 and not used.kept
    assert await terminate_other_sessions() >= 1
    response = await AsyncClient().get("/healthz")
    assert (response.status_code, response.json()["database"]) == (200, True)


async def test_the_trade_path_replaces_a_connection_dropped_too_recently_for_the_pools_check(pair, monkeypatch):
    """The trade path's own pool (channels_app/aiodb.py) checks a connection as Django's does; a drop that happened
    after that check (here: the check made blind) costs the request nothing: it runs on another connection."""
    async def blind(conn):
        pass

    monkeypatch.setattr(aiodb, "acheck_without_round_trip", blind)
    await aiodb.close()  # a new pool, with the blind check
    alice, bob, channel_id = pair
    await alice.record(channel_id, external_id="before")
    async with (await aiodb.pool()).connection() as conn:
        backend = conn.info.backend_pid

    await asyncio.to_thread(terminate, [backend])
    await alice.record(channel_id, external_id="after")  # answered, not an internal error
    view = (await bob.positions(channel_id))["ETH/USD"]
    assert (view["direction"], view["amount"]) == ("sell", "2")  # both trades, from bob's side
    assert (await aiodb.pool()).get_stats().get("connections_lost", 0) == 0  # found by the request, not the pool


async def test_the_trade_path_opens_its_pool_again_after_a_failed_opening(pair, monkeypatch):
    """The database unreachable at the first trade must not leave the process without a trade path: the failed
    opening is not kept, and the next request opens the pool."""
    alice, bob, channel_id = pair
    await aiodb.close()
    real_open = aiodb._open

    async def unreachable():
        raise psycopg.OperationalError("connection refused")

    monkeypatch.setattr(aiodb, "_open", unreachable)
    reply = await alice.request("record_trade", trade(channel_id, external_id="while-down"))
    assert reply["data"]["code"] == "internal_error", reply
    monkeypatch.setattr(aiodb, "_open", real_open)  # the database is back
    await alice.record(channel_id, external_id="after")
    assert (await bob.positions(channel_id))["ETH/USD"]["amount"] == "1"
