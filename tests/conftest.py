import pytest
from channels.layers import get_channel_layer
from django.db import connections

from tests.client import Client


@pytest.fixture(scope="session", autouse=True)
def close_database_pool(django_db_setup, django_db_blocker):
    """The database threads' pooled connections are closed before the test database is dropped (PostgreSQL)."""
    yield
    with django_db_blocker.unblock():
        for connection in connections.all():
            if getattr(connection, "close_pool", None):
                connection.close_pool()


@pytest.fixture
async def channel_layer():
    layer = get_channel_layer()
    yield layer
    await layer.flush()


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
        await client.notification("stream_notification", action="channelOpened")
    return alice, bob, channel_id
