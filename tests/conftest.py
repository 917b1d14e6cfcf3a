import asyncio

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.db import connections

from channels_app import aiodb
from tests.client import Client


@pytest.fixture(scope="session", autouse=True)
def close_database_pool(django_db_setup, django_db_blocker):
    """The database threads' pooled connections are closed before the test database is dropped (PostgreSQL), and so
    is the one asgiref's sync thread keeps for the tests' own async ORM calls (``aget``...): left open, it kept the
    test database from being dropped."""
    yield
    assert not aiodb._pools, f"trade-path pools left open by tests: {list(aiodb._pools)}"
    asyncio.run(sync_to_async(connections.close_all)())  # (outside async_to_sync: on asgiref's one sync thread)
    with django_db_blocker.unblock():
        for connection in connections.all():
            if getattr(connection, "close_pool", None):
                connection.close_pool()


@pytest.fixture
async def channel_layer():
    layer = get_channel_layer()
    yield layer
    await layer.flush()
    await aiodb.close()  # the trade path's connections of this test's event loop (PostgreSQL)


@pytest.fixture
async def connect(channel_layer):
    """``await connect()`` -> a connected Client (``login=True``: authenticated too). All closed at the end."""
    clients = []

    async def make(account=None, login=True, **kwargs):
        client = Client(account, **kwargs)
        clients.append(client)
        await client.connect()
        if login:
            await client.login()
        return client

    yield make
    for client in clients:
        await client.close()


@pytest.fixture
async def pair(connect):
    """Alice (initiator) and Bob (responder), both subscribed, with an opened channel of deposit 1000."""
    alice = await (await connect()).subscribe()
    bob = await (await connect()).subscribe()
    channel_id = await alice.open_channel(bob, deposit="1000", name="Bob", url="https://bob.example")
    for client in (alice, bob):
        await client.notification("stream_notification", action="channelOpened", channel_status="opened")
    return alice, bob, channel_id


async def hold_payment_lease(seconds: float = 60, holder: str = "another-worker") -> None:
    """As if another payment worker (a dead one, or one elsewhere) held the lease for ``seconds``: this process's
    worker stands by meanwhile, so a test can look at a payment between two steps."""
    from datetime import timedelta

    from django.utils import timezone

    from settlement.models import WorkerLease
    from settlement.worker import LEASE_NAME

    await WorkerLease.objects.aupdate_or_create(
        name=LEASE_NAME, defaults={"holder": holder, "expires_at": timezone.now() + timedelta(seconds=seconds)})
