"""The notification outbox: notices queued during a transaction are published once it commits, in order.

Nobody hears of a change that was rolled back: each (savepoint of a) transaction has one outbox, registered with
``transaction.on_commit``; a savepoint that rolls back drops its outbox with its hooks. Outside a transaction a
notice is published at once. Publishing is the transport's business: ``settings.NOTICE_PUBLISHER`` names a
callable that takes the committed notices in order (``operatorapi.publisher.publish``), so the domain never
imports the transport.
"""
import contextvars
from contextlib import contextmanager
from functools import cache

from django.conf import settings
from django.db import transaction
from django.utils.module_loading import import_string

from operatorapi.compat.on_commit import current_hook


@cache
def _publisher(path: str):
    return import_string(path)


def publish(notices: list) -> None:
    _publisher(settings.NOTICE_PUBLISHER)(notices)


class Outbox(list):
    """The notices of one savepoint, published when the transaction commits."""

    def __call__(self):
        publish(list(self))


_held: contextvars.ContextVar["Outbox | None"] = contextvars.ContextVar("held_notices", default=None)


@contextmanager
def holding():
    """Notices queued inside the block are kept in the ``Outbox`` it yields, not published: for a unit of work that
    runs its own transaction outside Django's atomic blocks (the trade path's plain SQL, channels_app/tradestore.py),
    which publishes them itself once it has committed."""
    held = Outbox()
    token = _held.set(held)
    try:
        yield held
    finally:
        _held.reset(token)


def queue(notice) -> None:
    held = _held.get()
    if held is not None:
        held.append(notice)
        return
    connection = transaction.get_connection()
    if not connection.in_atomic_block:
        publish([notice])
        return
    outbox = current_hook(connection, Outbox)
    if outbox is None:
        outbox = Outbox()
        transaction.on_commit(outbox, robust=True)  # the state committed: a lost notice never fails the request
    outbox.append(notice)
