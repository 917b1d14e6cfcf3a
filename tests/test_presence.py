"""Presence is a lease (docs/protocol.md section 10, abuse limits): a connection's row counts against
MAX_CONNECTIONS_PER_PEER, and on the dashboard, only while its serving process renews it. Rows a crashed process left
(on another host, or on this one under the same host name and PID) stop counting when their lease ends.
A real process SIGKILLed: tests/e2e/test_presence_crash.py."""
import asyncio
import itertools
import logging
import os
import re
import socket
import threading
from contextlib import contextmanager
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import User
from django.db import connection
from django.test import AsyncClient
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from eth_account import Account

from backoffice.dashboard import dashboard
from channels_app import selectors
from channels_app.models import Peer, PeerConnection
from channels_app.services import presence
from operatorapi import heartbeat
from tests.client import sign

pytestmark = pytest.mark.django_db(transaction=True)
_names = itertools.count(1)


@sync_to_async
def ghosts(account, n: int, *, live_for: float, server: str = "other-host:123") -> None:
    """``n`` rows of ``account``'s peer as a process elsewhere left them: lease ending ``live_for`` s from now."""
    peer, _ = Peer.objects.get_or_create(address=account.address)
    for _ in range(n):
        PeerConnection.objects.create(peer=peer, channel_name=f"ghost-{next(_names)}", server=server,
                                      expires_at=timezone.now() + timedelta(seconds=live_for))


@contextmanager
def statements():
    """The SQL statements run inside, transaction control left out (SQLite wraps a delete in BEGIN ... COMMIT)."""
    done = []
    with CaptureQueriesContext(connection) as captured:
        yield done
    done += [q["sql"] for q in captured.captured_queries
             if q["sql"].split()[0].upper() not in ("BEGIN", "COMMIT", "SAVEPOINT", "RELEASE")]


async def eventually(check, seconds: float = 3) -> bool:
    """Whether the awaitable-returning ``check()`` comes true within ``seconds`` (the server acts after the test's
    step returns)."""
    for _ in range(int(seconds / 0.05)):
        if await check():
            return True
        await asyncio.sleep(0.05)
    return await check()


async def _no_rows(address: str | None = None) -> bool:
    """No presence row (of ``address``'s peer, if given)."""
    rows = PeerConnection.objects.all() if address is None else PeerConnection.objects.filter(peer__address=address)
    return not await rows.aexists()


async def left_then_cancelled(client) -> None:
    """The client leaves; the server gives up on the connection while its ``disconnect`` still waits (Daphne does,
    ``application_close_timeout`` after the client left)."""
    await client.comm.send_input({"type": "websocket.disconnect", "code": 1000})
    await asyncio.sleep(0.2)
    client.comm.future.cancel()
    await asyncio.sleep(0.2)


async def refused(client) -> dict:
    error = await client.error("authenticate", {"challenge": client.challenge,
                                                "signature": sign(client.account, client.challenge)},
                               code="connection_limit")
    assert await client.comm.receive_output(timeout=2) == {"type": "websocket.close", "code": 4429}
    return error


async def admin_pages() -> dict[str, str]:
    user = await User.objects.acreate_user(f"root{next(_names)}", is_staff=True, is_superuser=True)
    browser = AsyncClient()
    await browser.aforce_login(user)
    return {name: (await browser.get(url)).content.decode() for name, url in [
        ("index", "/admin/"), ("peers", "/admin/channels_app/peer/"),
        ("live", "/admin/channels_app/peerconnection/?lease=live"),
        ("expired", "/admin/channels_app/peerconnection/?lease=expired")]}


async def test_expired_rows_of_another_host_do_not_count_and_a_running_lease_does(connect, settings):
    settings.MAX_CONNECTIONS_PER_PEER = 2
    broker, bystander = Account.create(), Account.create()
    await ghosts(broker, 5, live_for=-60)  # a crashed process on another host, a minute ago
    await ghosts(bystander, 3, live_for=-1)

    first = await connect(broker)  # five ghosts, limit two: still admitted, twice
    await connect(broker)
    assert "limit 2" in (await refused(await connect(broker, login=False)))["error"]
    assert await sync_to_async(selectors.online_peer_count)() == 1  # the bystander's ghosts are not online
    board = await sync_to_async(dashboard)()
    assert [(p["peer__address"], p["connections"]) for p in board["peers_online"]] == [(broker.address, 2)]
    pages = await admin_pages()
    assert '<td id="peers-online"><strong>1</strong>' in pages["index"]
    assert sorted(re.findall(r'class="field-connections_now">(\d+)<', pages["peers"])) == ["0", "2"]
    assert pages["live"].count("field-is_live") == 2 and pages["expired"].count("field-is_live") == 8

    await first.close()
    await ghosts(broker, 1, live_for=60)  # a process elsewhere that still renews: its connection counts
    await refused(await connect(broker, login=False))
    assert (await sync_to_async(dashboard)())["peers_online"][0]["connections"] == 2


async def test_the_heartbeat_renews_a_connections_lease_while_it_stays(connect, settings):
    settings.PRESENCE_LEASE_SECONDS = 0.6
    settings.PRESENCE_HEARTBEAT_SECONDS = 0.1
    client = await connect()
    row = await PeerConnection.objects.aget(peer__address=client.address)
    assert row.server == presence.SERVER
    first = row.expires_at
    await asyncio.sleep(1.5)  # more than two leases
    await row.arefresh_from_db()
    assert row.expires_at > first + timedelta(seconds=0.8)
    assert await sync_to_async(selectors.online_peer_count)() == 1  # still counted
    assert (await client.ok("channels"))["data"] == {"channels": []}
    await client.close()
    assert await eventually(_no_rows)  # the server removes the row once it has seen the close


def test_renew_extends_only_its_own_process_rows_in_one_update_and_sweeps_long_expired_ones(
        settings, monkeypatch):
    settings.PRESENCE_LEASE_SECONDS = 30
    peer = Peer.objects.create(address=Account.create().address)
    now = timezone.now()
    for name, server, ends in [("mine-1", presence.SERVER, -5), ("mine-2", presence.SERVER, 5),
                               ("other-live", "other-host:1:x", 5), ("other-recent", "other-host:2:x", -5),
                               ("other-old", "other-host:3:x", -31),
                               ("my-predecessor", f"{socket.gethostname()}:{os.getpid()}", -5)]:  # same host, PID
        PeerConnection.objects.create(peer=peer, channel_name=name, server=server,
                                      expires_at=now + timedelta(seconds=ends))
    monkeypatch.setattr(presence, "_last_sweep", float("inf"))  # no sweep due: the renewal alone
    with statements() as done:
        assert presence.renew(server=presence.SERVER) == 2
    assert [sql.split()[0] for sql in done] == ["UPDATE"]
    ends = dict(PeerConnection.objects.values_list("channel_name", "expires_at"))
    assert all(ends[name] > now + timedelta(seconds=29) for name in ("mine-1", "mine-2"))
    assert ends["other-live"] < now + timedelta(seconds=6)
    assert ends["my-predecessor"] < now  # a crashed process that had this PID: not renewed by this one
    assert sorted(selectors.live_connections().values_list("channel_name", flat=True)) == [
        "mine-1", "mine-2", "other-live"]

    assert presence.sweep_expired() == 1  # ended more than a lease ago; a late heartbeat may still revive the other
    assert "other-old" not in set(PeerConnection.objects.values_list("channel_name", flat=True))
    monkeypatch.setattr(presence, "_last_sweep", float("-inf"))
    with statements() as done:  # a sweep is due: renew runs it
        presence.renew(server="other-host:2:x")
    assert [sql.split()[0] for sql in done] == ["UPDATE", "DELETE"]
    assert selectors.live_connections().filter(channel_name="other-recent").exists()  # revived


async def test_the_heartbeat_survives_database_errors_and_runs_once_per_loop(settings, monkeypatch, caplog):
    settings.PRESENCE_HEARTBEAT_SECONDS = 0.05
    calls = []

    def renew(*, server):
        calls.append(server)
        if len(calls) == 1:
            raise RuntimeError("database away")
        return 0

    monkeypatch.setattr(presence, "renew", renew)
    with caplog.at_level(logging.WARNING, logger="operatorapi.heartbeat"):
        task = heartbeat.ensure_running()
        assert heartbeat.ensure_running() is task  # idempotent
        await asyncio.sleep(0.5)
    assert not task.done()
    assert len(calls) >= 3 and set(calls) == {presence.SERVER}  # went on after the failure
    assert "renewing the leases failed" in caplog.text


def test_the_heartbeat_ends_with_its_event_loop():
    async def start():
        return heartbeat.ensure_running()

    first, second = asyncio.run(start()), asyncio.run(start())
    assert first is not second  # one per loop
    assert first.cancelled() and second.cancelled()


async def test_a_closed_connection_gives_up_its_presence_without_a_hop_to_asgirefs_thread(connect, monkeypatch):
    """Its presence row goes; Channels' own closing of Django's connections on the event loop's behalf (a hop to
    asgiref's one sync thread, 3% of a handshake) is not made: the consumer's database calls run on the database
    threads, which give their connections back themselves (operatorapi/dispatch.py)."""
    import channels.db
    import channels.generic.websocket

    hops = []

    async def counted():
        hops.append(1)

    for module in (channels.db, channels.generic.websocket):
        monkeypatch.setattr(module, "aclose_old_connections", counted)
    client = await connect()
    assert await PeerConnection.objects.filter(peer__address=client.address).aexists()
    await client.close()
    assert await eventually(_no_rows)
    assert hops == []


async def test_a_connection_the_server_cancels_before_it_has_closed_gives_up_its_presence(connect):
    """Daphne cancels a connection 10 s after its client left if the application has not ended by then: here its
    last request is still waiting for its database thread. Its presence row goes all the same. Before 2026-11-29 the
    row stayed, renewed by the process's heartbeat for its whole life, counted against MAX_CONNECTIONS_PER_PEER and
    shown as connected on the dashboard."""
    from operatorapi.dbthreads import on_thread_of

    client = await connect()
    assert await PeerConnection.objects.filter(peer__address=client.address).aexists()
    gate = threading.Event()
    held = asyncio.ensure_future(on_thread_of(client.address, gate.wait)())  # the thread of its next request
    try:
        await client.send("channels", {})  # waits for that thread, and disconnect for it
        await left_then_cancelled(client)
    finally:
        gate.set()
        await held
    assert await eventually(lambda: _no_rows(client.address))


async def test_a_connection_the_server_cancels_while_it_signs_in_leaves_no_presence_behind(connect, monkeypatch):
    """The same, cancelled while its sign-in runs on its database thread (slow: waiting for the peer's row lock,
    say): the sign-in runs to its end and writes the row (work a thread has begun is not stopped); the connection's
    end deletes it after, on that thread."""
    from channels_app.services import auth

    gate, started = threading.Event(), threading.Event()
    sign_in = auth.sign_in

    def slow_sign_in(**kwargs):
        started.set()
        gate.wait()
        return sign_in(**kwargs)

    monkeypatch.setattr(auth, "sign_in", slow_sign_in)
    client = await connect(login=False)
    try:
        await client.send("authenticate", {"challenge": client.challenge,
                                           "signature": sign(client.account, client.challenge)})
        assert await asyncio.to_thread(started.wait, 3)
        await left_then_cancelled(client)
    finally:
        gate.set()
    with pytest.raises(asyncio.CancelledError):
        await client.comm.future
    assert await eventually(Peer.objects.filter(address=client.address).aexists)  # signed in after all
    assert await eventually(lambda: _no_rows(client.address))
