"""The trade path's database connections on the event loop (PostgreSQL): psycopg's async connections, pooled.

On a database thread (operatorapi/dbthreads.py) a trade paid two hand-overs between threads, to the thread and back,
and its Python competed with the event loop's for the interpreter lock: 3 ms in the server for 1.3 ms of work
(bench/RESULTS.md). On the event loop it runs between frames and waits for PostgreSQL without holding anything up.

A server has one event loop for its life; tests start one per test, and async connections belong to the loop that
opened them, so each loop has its own pool, opened when first used; ``close`` closes the running loop's (the test
fixtures call it). A pool that failed to open (the database unreachable) is not kept: the next request tries again.
The connections take Django's parameters for the database (its name, its adapters), in autocommit: the trade path
sends its own BEGIN and COMMIT (channels_app/pipeline.py), as it does on Django's connections.
"""
import asyncio

from django.conf import settings
from django.db import connection
from psycopg_pool import AsyncConnectionPool

from operatorapi.compat.pool_check import acheck_without_round_trip

_pools: dict[asyncio.AbstractEventLoop, asyncio.Task] = {}  # each loop's pool, while it opens and once open


def enabled() -> bool:
    """Whether the trade path runs on the event loop here: PostgreSQL, unless ``TRADES_ON_EVENT_LOOP`` is off."""
    return connection.vendor == "postgresql" and settings.TRADES_ON_EVENT_LOOP


async def _configure(conn) -> None:
    """What Django's pool does to each new connection of its own (``DatabaseWrapper._configure_connection``): the
    session's zone set to Django's. Django's ``timestamptz`` loader labels what it reads with its zone, taking the
    session to be in it: on a server in another zone every time read here was off by the offset, and a trade wrote
    the channel's margin-call time back so. (Django's ``assume_role`` option is not taken here: unused.)"""
    zone = connection.timezone_name
    if zone and conn.info.parameter_status("TimeZone") != zone:
        await conn.execute(connection.ops.set_time_zone_sql(), [zone])  # in autocommit: nothing to commit


async def _open() -> AsyncConnectionPool:
    params = connection.get_connection_params()  # Django's, as its own connections get them (no I/O)
    params.pop("cursor_factory", None)  # Django's is for its sync connections
    sizes = connection.settings_dict["OPTIONS"].get("pool") or {}
    pool = AsyncConnectionPool(kwargs={**params, "autocommit": True}, min_size=1,
                               max_size=sizes.get("max_size", 10), timeout=sizes.get("timeout", 30),
                               configure=_configure, check=acheck_without_round_trip, name="trade-path",
                               open=False)
    try:
        await pool.open(wait=True)  # its first connection made before anyone asks (no second one opened meanwhile)
    except BaseException:
        await pool.close()  # its workers would go on trying to connect
        raise
    return pool


def _failed(opening: asyncio.Task) -> bool:
    return opening.done() and (opening.cancelled() or opening.exception() is not None)


async def pool() -> AsyncConnectionPool:
    """The running loop's pool, opened on first use."""
    loop = asyncio.get_running_loop()
    opening = _pools.get(loop)
    if opening is None or _failed(opening):
        # the first caller opens it (or opens it again after a failed opening); those arriving meanwhile wait for
        # the same opening
        opening = _pools[loop] = loop.create_task(_open())
    return await asyncio.shield(opening) if not opening.done() else opening.result()


async def close() -> None:
    """Close the running loop's pool, if it has one (tests: before their loop ends)."""
    opening = _pools.pop(asyncio.get_running_loop(), None)
    if opening is not None and not _failed(opening):  # a failed opening closed what it had opened
        await (await opening).close()
