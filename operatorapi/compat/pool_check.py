"""psycopg_pool's check of a connection it hands out (``ConnectionPool._check``), made to cost no round trip.

Django's pool checks every connection taken from it with a query (``ConnectionPool.check_connection``). Every
database call of the server takes one (operatorapi/dbthreads.py), so the trade path, whose work is two round trips,
paid a third only to learn that the connection was alive: 13% of the server's time under load (bench/RESULTS.md).
A backend that the server ended while the connection idled (a restart, ``pg_terminate_backend``) has sent its error
and closed the socket, so the socket tells without asking: readable while idle means something arrived, and only
then is the server asked (the check that raises for a broken one). A server that vanished without a word (a cut
network) is found by the request that uses the connection: it fails once, and the broken connection is dropped.
psycopg_pool takes the check only when it creates a pool; Django creates it.

A connection found broken means the others idling in the pool most likely are too (the server restarted, or a
reaper ended them all): they are all sorted at once, with the pool's own ``check``. psycopg_pool alone would hand
them out one at a time, waiting 1, 2, 4... s between two that failed, so that with ten idle connections a request
waited past the pool's time-out and failed (docs/reliability.md). The pool is reached through the connection
(``conn._pool``, set by psycopg_pool).
"""
import select

from psycopg_pool import AsyncConnectionPool, ConnectionPool

from operatorapi.compat import require

require("psycopg-pool", "3.3")


def _heard_from_server(conn) -> bool:
    """Whether something arrived while the connection idled in the pool (raises if it is closed)."""
    if conn.closed:
        raise ConnectionError("the connection is closed")
    poll = select.poll()
    poll.register(conn.fileno(), select.POLLIN)
    return bool(poll.poll(0))


def check_without_round_trip(conn) -> None:
    try:
        if _heard_from_server(conn):  # ask the server (raises if broken)
            ConnectionPool.check_connection(conn)
    except Exception:
        conn._pool.check()  # the others that idled with it (round trips, on the way to recovery only)
        raise


async def acheck_without_round_trip(conn) -> None:
    """The same for an ``AsyncConnectionPool`` (channels_app/aiodb.py), given to it as its ``check``."""
    try:
        if _heard_from_server(conn):
            await AsyncConnectionPool.check_connection(conn)
    except Exception:
        await conn._pool.check()
        raise


def install_on(connection) -> None:
    """Give ``connection``'s pool this check, if it has a pool (idempotent, and cheap enough for every call: Django
    may make a new pool, after ``close_pool``)."""
    pool = connection.pool if connection.vendor == "postgresql" else None
    if pool is not None and pool._check is not check_without_round_trip:
        pool._check = check_without_round_trip
