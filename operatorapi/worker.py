"""The payment worker inside a server process: a standby (or the holder) like any other worker, and the escrow's
start-up check (``EscrowBackend.ensure_verified``), run in the background so no request ever waits on the chain.

Every server process runs one (``SETTLEMENT_WORKER_IN_PROCESS``, on by default), started with the first request:
on the embedded default (in-memory channel layer) it is the worker, so ``mock`` settles with nothing else to start
and its notifications reach this process's connections; beside a ``manage.py settlement_worker`` it stands by.
Its steps run on a thread of their own, so a slow chain never holds up a connection's database work.
"""
import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from functools import cache

from asgiref.sync import SyncToAsync
from django.conf import settings

from operatorapi import background
from operatorapi.dbthreads import giving_connections_back
from settlement.payments.base import get_backend
from settlement.worker import PaymentWorker

logger = logging.getLogger(__name__)


@cache
def _executor() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="settlement-worker")


@cache
def process_worker() -> PaymentWorker:
    return PaymentWorker()


def ensure_running() -> asyncio.Task:
    return background.ensure("settlement-worker", _work)


def _round() -> None:
    """(worker thread) The escrow's start-up check until it passes (so requests can tell whether escrow is
    available without asking the chain), then the worker's round if this process runs one."""
    get_backend("escrow").ensure_verified()
    if settings.SETTLEMENT_WORKER_IN_PROCESS:
        process_worker().run_once()


async def _work() -> None:
    run = SyncToAsync(giving_connections_back(_round), thread_sensitive=False, executor=_executor())
    while True:
        try:
            await run()
        except Exception:  # never dies: the next round tries again
            logger.warning("payment worker: a round failed", exc_info=True)
        await asyncio.sleep(settings.SETTLEMENT_WORKER_POLL_SECONDS)


class WorkerMiddleware:
    """ASGI middleware: starts this process's payment worker with the first request (HTTP or WebSocket)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        ensure_running()
        return await self.app(scope, receive, send)
