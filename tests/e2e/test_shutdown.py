"""Graceful shutdown (docs/protocol.md section 10): SIGTERM to a real Daphne under load. Every connection is closed
with 4503 (shutting down: reconnect) right after the reply of the request it was handling; a request is either answered or not done at all
(the trades stored are exactly the ones acknowledged); presence is cleaned up; the process exits by itself, 0."""
import asyncio
import base64
import os
import signal
import socket
import time
import urllib.error
import urllib.request

import pytest
from asgiref.sync import sync_to_async
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from channels_app.models import PeerConnection, Trade
from tests.client import NetworkClient, trade
from tests.e2e.servers import DaphneProcess

pytestmark = pytest.mark.e2e


async def record_until_closed(client: NetworkClient, channel_id: str, tag: str) -> tuple[set[str], int]:
    """Closed-loop record_trade until the server closes: the external_ids answered, and the close code."""
    answered, serial = set(), 0
    while True:
        serial += 1
        external_id = f"{tag}-{serial}"
        try:
            reply = await client.request("record_trade", trade(channel_id, external_id=external_id,
                                                               direction="buy" if serial % 2 else "sell"),
                                         timeout=15)
        except ConnectionClosed as closed:
            return answered, closed.rcvd.code if closed.rcvd else None
        assert reply["event"] == "record_trade", reply
        answered.add(external_id)


async def close_code_of_idle(client: NetworkClient) -> int | None:
    await client.ws.wait_closed()
    return client.ws.close_code


def healthz_status(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return 0  # no longer listening


async def test_sigterm_answers_what_is_in_flight_closes_every_connection_and_exits(daphne_env):
    server = DaphneProcess(daphne_env)
    server.start()
    try:
        alice = await (await NetworkClient(server.url).connect()).login()
        bob = await (await NetworkClient(server.url).connect()).login()
        channel_id = await alice.open_channel(bob, deposit="1000000")
        idle = await (await NetworkClient(server.url, account=alice.account).connect()).login()
        streams = [asyncio.create_task(record_until_closed(client, channel_id, tag))
                   for client, tag in ((alice, "a"), (bob, "b"))]
        await asyncio.sleep(1.0)  # both recording
        assert not any(task.done() for task in streams)

        server.process.send_signal(signal.SIGTERM)
        stopped_at = time.monotonic()
        results = await asyncio.wait_for(asyncio.gather(*streams), timeout=20)
        assert [code for _, code in results] == [4503, 4503]
        assert await asyncio.wait_for(close_code_of_idle(idle), timeout=5) == 4503
        assert await asyncio.to_thread(server.process.wait, 20) == 0
        took = time.monotonic() - stopped_at
        assert took < 10, f"took {took:.1f} s to drain three connections"

        answered = set().union(*(ids for ids, _ in results))
        assert len(answered) > 10
        stored = set(await sync_to_async(lambda: list(Trade.objects.values_list("external_id", flat=True)))())
        assert stored == answered  # nothing acknowledged is missing, nothing unacknowledged was done
        assert not await PeerConnection.objects.acount()  # every connection's presence row removed
        server.log.flush()
        log = open(server.log.name).read()
        assert "draining 3 connection(s)" in log and "drained: stopping" in log
    finally:
        server.stop()


def silent_websocket(port: int) -> socket.socket:
    """A WebSocket that completes the opening handshake and then reads nothing: it never answers the server's
    close, so the server keeps it (up to the close-handshake time-out, about a second) while it drains."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
    assert b" 101 " in sock.recv(4096).split(b"\r\n", 1)[0]
    return sock


async def test_while_draining_healthz_is_503_and_newcomers_are_told_to_reconnect_elsewhere(daphne_env):
    server = DaphneProcess(daphne_env)
    server.start()
    silent = silent_websocket(server.port)
    try:
        server.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 5
        while (status := await asyncio.to_thread(healthz_status, server.port)) == 200:
            assert time.monotonic() < deadline, "healthz never left 200"
            await asyncio.sleep(0.01)
        assert status == 503
        async with connect(server.url) as late:  # accepted, then closed at once
            await asyncio.wait_for(late.wait_closed(), timeout=5)
        assert late.close_code == 4503
        assert await asyncio.to_thread(server.process.wait, 20) == 0  # the silent one was dropped, not waited for
    finally:
        silent.close()
        server.stop()
