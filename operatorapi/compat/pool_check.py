"""psycopg_pool's check of a connection it hands out (``ConnectionPool._check``), made to cost no round trip.

Django's pool checks every connection taken from it with a query (``ConnectionPool.check_connection``). Every
database call of the server takes one (operatorapi/dbthreads.py), so the trade path, whose work is two round trips,
paid a third only to learn that the connection was alive: 13% of the server's time under load (bench/RESULTS.md).
A backend that the server ended while the connection idled (a restart, ``pg_terminate_backend``) has sent its error
and closed the socket, so the socket tells without asking: readable while idle means something arrived, and only
then is the server asked (the check that raises for a broken one). A server that vanished without a word (a cut
network) is found by the request that uses the connection: it fails once, and the broken connection is dropped.
psycopg_pool takes the check only when it creates a pool; Django creates it.
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
    if _heard_from_server(conn):  # ask the server (raises if broken)
        ConnectionPool.check_connection(conn)


async def acheck_without_round_trip(conn) -> None:
    """The same for an ``AsyncConnectionPool`` (channels_app/aiodb.py), given to it as its ``check``."""
    if _heard_from_server(conn):
        await AsyncConnectionPool.check_connection(conn)


def install_on(connection) -> None:
    """Give ``connection``'s pool this check, if it has a pool (idempotent, and cheap enough for every call: Django
    may make a new pool, after ``close_pool``)."""
    pool = connection.pool if connection.vendor == "postgresql" else None
    if pool is not None and pool._check is not check_without_round_trip:
        pool._check = check_without_round_trip
