"""Where the consumer's database work runs: one thread per shard of channels.

Channels' ``database_sync_to_async`` runs every call of the process on one thread, so a Daphne process did one
database round trip at a time (about 120 trades/s on PostgreSQL however many brokers). Here each channel id (or
peer address) maps to one of ``DB_THREADS`` single-thread executors:

- work on *different* channels runs in parallel, each thread with its own connection (from the PostgreSQL pool);
- work on *one* channel stays on one thread, in order, so its transactions commit and their notifications are
  published (each transaction's outbox, right after its commit, on that same thread) in commit order. Across
  processes the row lock orders the commits; notifications of two processes may interleave.

SQLite has one writer: it gets one thread, as before.

The trade path on PostgreSQL does without the thread (channels_app/aiodb.py); ``in_turn`` keeps its requests on one
channel in order as the channel's thread would, and ``to_the_end`` runs them to their end as the thread would.
"""
import asyncio
import functools
import logging
import weakref
import zlib
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from functools import cache

from asgiref.sync import SyncToAsync
from django.conf import settings
from django.db import close_old_connections, connection

from channels_app.errors import DomainError
from operatorapi.compat import pool_check

logger = logging.getLogger(__name__)


@cache
def _executors() -> tuple[ThreadPoolExecutor, ...]:
    return tuple(ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"db-{i}") for i in range(settings.DB_THREADS))


def giving_connections_back(func):
    """``func`` closing the database connections it used (to the pool, on PostgreSQL) when it returns.

    Channels' ``DatabaseSyncToAsync`` closes them around the call but, with asgiref 3.13, outside the context the
    call ran in, so it never sees them: each thread kept a connection checked out of the pool, indefinitely.
    """
    @functools.wraps(func)
    def run(*args, **kwargs):
        pool_check.install_on(connection)
        close_old_connections()
        try:
            return func(*args, **kwargs)
        finally:
            close_old_connections()

    return run


def on_thread_of(key: str, func):
    """``func`` as an awaitable run on the database thread of ``key`` (a channel id or a peer address)."""
    executors = _executors()
    executor = executors[zlib.crc32(key.lower().encode()) % len(executors)]
    return SyncToAsync(giving_connections_back(func), thread_sensitive=False, executor=executor)


_turns: "weakref.WeakValueDictionary[str, asyncio.Lock]" = weakref.WeakValueDictionary()  # while in use


@asynccontextmanager
async def in_turn(key: str):
    """Work on the event loop for ``key`` (a channel id) one request at a time, in arrival order (an asyncio lock
    wakes its waiters first come, first served): a transaction commits and its notices are handed on before the
    next one on that channel begins."""
    lock = _turns.get(key.lower())
    if lock is None:
        lock = _turns[key.lower()] = asyncio.Lock()
    async with lock:
        yield


async def to_the_end(work):
    """The result of the coroutine ``work``, run as a task of its own that goes on if the caller is cancelled, as
    work a database thread has begun does (asgiref lets it end).

    Daphne cancels a connection 10 s after its client left (``application_close_timeout``) and at the end of a
    shutdown's grace. A trade cancelled while its COMMIT was on its way was stored, and its notices were never
    published: its parties did not hear of it (tests/test_notifications.py). Run to the end it commits (or is
    refused) and publishes; only its reply has nobody to go to. So does the connection's own end (its presence row,
    ``OperatorConsumer.leave``).
    """
    task = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        task.add_done_callback(_left_behind)
        raise


def _left_behind(task: asyncio.Task) -> None:
    """``to_the_end``'s task ended after its caller had gone: nobody awaits its outcome, so a failure is logged here
    (a refusal is an answer for a client that is no longer there, not a failure)."""
    if not task.cancelled() and (exc := task.exception()) is not None and not isinstance(exc, DomainError):
        logger.error("work went on after the server cancelled its connection, and failed", exc_info=exc)
