"""Abuse limits (docs/protocol.md section 10): connections per peer, the unauthenticated time-out, the
failed-authentication lock-out per client IP. The per-connection rate limit is in tests/test_frames.py."""
import asyncio
import itertools

import pytest
from eth_account import Account

from tests.client import Client, sign

pytestmark = pytest.mark.django_db(transaction=True)
_ips = itertools.count(1)


@pytest.fixture
async def from_ip():
    """``await from_ip(ip, account)`` -> a connected, unauthenticated Client whose socket comes from ``ip``."""
    clients = []

    async def make(ip, account=None):
        client = Client(account)
        client.comm.scope["client"] = (ip, 40000 + len(clients))
        clients.append(client)
        return await client.connect()

    yield make
    for client in clients:
        await client.close()


def fresh_ip() -> str:
    return f"198.51.100.{next(_ips)}"  # each test its own address: lock-out counters never carry over


async def closed_with(client, code):
    assert await client.comm.receive_output(timeout=2) == {"type": "websocket.close", "code": code}


async def test_a_peer_gets_at_most_max_connections_and_a_closed_one_frees_its_place(connect, settings):
    settings.MAX_CONNECTIONS_PER_PEER = 2
    account = Account.create()
    first = await connect(account)
    await connect(account)
    third = await connect(account, login=False)
    error = await third.error("authenticate", {"challenge": third.challenge,
                                               "signature": sign(account, third.challenge)},
                              code="connection_limit")
    assert "limit 2" in error["error"]
    await closed_with(third, 4429)

    await connect()  # another peer is not affected
    await first.close()
    await connect(account)  # the closed connection's place is free again


async def test_an_unauthenticated_connection_is_closed_after_the_time_out(connect, settings):
    settings.AUTH_TIMEOUT_SECONDS = 0.3
    idle = await connect(login=False)
    signed_in = await connect()
    frame = await idle.recv(timeout=2)
    assert frame["event"] == "error" and frame["reqid"] == 0 and frame["data"]["code"] == "not_authenticated"
    await closed_with(idle, 4408)
    await asyncio.sleep(0.3)
    assert (await signed_in.ok("channels"))["data"] == {"channels": []}  # authenticated in time: kept


async def test_failed_authentications_lock_an_ip_out_for_the_window_on_every_connection(from_ip, settings):
    settings.AUTH_LOCKOUT_FAILURES = 3
    settings.AUTH_LOCKOUT_SECONDS = 2
    ip = fresh_ip()
    attacker = await from_ip(ip)
    for _ in range(2):  # a stale challenge: failures 1 and 2 (each answered with a fresh challenge)
        await attacker.error("authenticate", {"challenge": "0" * 36, "signature": sign(attacker.account, "0" * 36)},
                             code="invalid_challenge")
        assert (await attacker.recv())["event"] == "challenge"
    second = await from_ip(ip)  # a new connection from the same address: failure 3
    await second.error("authenticate", {"challenge": "0" * 36, "signature": "0x" + "00" * 65},
                       code="invalid_challenge")

    honest = await from_ip(ip)
    error = await honest.error("authenticate", {"challenge": honest.challenge,
                                                "signature": sign(honest.account, honest.challenge)},
                               code="rate_limited")
    assert "try again" in error["error"]
    await closed_with(honest, 4429)

    elsewhere = await from_ip(fresh_ip())
    await elsewhere.login()  # other addresses are not affected
    await asyncio.sleep(2.2)  # the window ends
    later = await from_ip(ip)
    await later.login()


@pytest.mark.parametrize("origin, admitted", [
    (None, True),  # trading systems send no Origin
    (b"http://localhost:3000", True),  # a browser page on an allowed host
    (b"https://evil.example", False),  # a browser page elsewhere: cross-site WebSocket hijacking refused
    (b"null", False),
])
async def test_browser_origins_must_be_allowed_hosts(origin, admitted):
    from channels.testing import WebsocketCommunicator

    from operatorapi.asgi import application

    headers = [(b"origin", origin)] if origin else []
    communicator = WebsocketCommunicator(application, "/", headers=headers)
    connected, _ = await communicator.connect()
    assert connected is admitted
    await communicator.disconnect()
