"""Presence survives a crash (docs/reliability.md): a Daphne process SIGKILLed with a broker's connections open
leaves their presence rows behind; no one deletes them on disconnect, but nothing renews their lease either. Within
the lease they still count (the process might only be slow); after it, they no longer count against
MAX_CONNECTIONS_PER_PEER nor show on the dashboard, on the process that stayed up as on a restarted one, and they are
deleted a lease later. Connections of the process that stayed up keep counting all along (its heartbeat)."""
import asyncio
import contextlib
import time

import pytest
from channels.db import database_sync_to_async
from eth_account import Account
from websockets.exceptions import ConnectionClosed

from backoffice.dashboard import dashboard
from channels_app import selectors
from channels_app.models import PeerConnection
from tests.client import NetworkClient, sign
from tests.e2e.servers import DaphneProcess, daphne

pytestmark = pytest.mark.e2e
LIMIT, LEASE, HEARTBEAT = 2, 3.0, 0.5


@database_sync_to_async
def presence_of(address: str) -> tuple[int, set[str]]:
    """The broker's live connections, and the servers of all its rows (live or not)."""
    live = selectors.live_connections().filter(peer__address=address).count()
    return live, set(PeerConnection.objects.filter(peer__address=address).values_list("server", flat=True))


@database_sync_to_async
def online() -> tuple[int, list[tuple[str, int]]]:
    return selectors.online_peer_count(), [(p["peer__address"], p["connections"]) for p in dashboard()["peers_online"]]


async def signed_in(url: str, account) -> NetworkClient:
    return await (await NetworkClient(url, account=account).connect()).login()


async def refused(url: str, account) -> None:
    client = await NetworkClient(url, account=account).connect()
    answer = await client.request("authenticate", {"challenge": client.challenge,
                                                   "signature": sign(account, client.challenge)})
    assert answer["event"] == "error" and answer["data"]["code"] == "connection_limit", answer
    with pytest.raises(ConnectionClosed) as closed:
        await client.recv()
    assert closed.value.rcvd.code == 4429


async def test_a_killed_process_connections_stop_counting_when_their_lease_ends(daphne_env):
    env = {**daphne_env, "MAX_CONNECTIONS_PER_PEER": str(LIMIT), "PRESENCE_LEASE_SECONDS": str(LEASE),
           "PRESENCE_HEARTBEAT_SECONDS": str(HEARTBEAT)}
    broker, bystander = Account.create(), Account.create()
    crashing = DaphneProcess(env)
    clients = []
    with daphne(env) as (host, port):
        staying = f"ws://{host}:{port}/"
        try:
            crashing.start()
            clients.append(await signed_in(staying, bystander))  # on the process that stays up
            clients += [await signed_in(crashing.url, broker) for _ in range(LIMIT)]
            await refused(staying, broker)
            live, (ghost_server,) = await presence_of(broker.address)
            assert live == LIMIT

            crashing.kill()
            killed_at = time.monotonic()
            assert await presence_of(broker.address) == (LIMIT, {ghost_server})  # within the lease: still counted
            await refused(staying, broker)

            while (await online())[0] != 1:  # the ghosts' lease ends
                assert time.monotonic() - killed_at < LEASE + 5, "the dead process's connections still count"
                await asyncio.sleep(0.1)
            assert time.monotonic() - killed_at > LEASE - 1  # not before the lease: they were renewed until the kill
            assert await online() == (1, [(bystander.address, 1)])  # the bystander's lease is renewed: it stays

            clients.append(await signed_in(staying, broker))  # the process that stayed up admits the broker again
            crashing.start()  # a restarted process too, up to the limit
            clients.append(await signed_in(crashing.url, broker))
            await refused(crashing.url, broker)
            await refused(staying, broker)
            assert sorted((await online())[1]) == sorted([(bystander.address, 1), (broker.address, LIMIT)])

            while ghost_server in (await presence_of(broker.address))[1]:  # and the dead rows are deleted
                assert time.monotonic() - killed_at < 2 * LEASE + 5, "the dead process's rows were never deleted"
                await asyncio.sleep(0.1)
            assert (await presence_of(broker.address))[0] == LIMIT
        finally:
            for client in clients:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(client.close(), timeout=2)
            crashing.stop()
