"""Which peers are connected now: a row per authenticated connection, held as a lease.

A row counts (against ``MAX_CONNECTIONS_PER_PEER``, on the dashboard) while its lease runs: ``expires_at`` in the
future by the database's clock (``channels_app.selectors.LIVE``), so the hosts' clocks do not matter. The serving
process renews the lease of all its rows every ``PRESENCE_HEARTBEAT_SECONDS`` (``operatorapi.heartbeat`` calls
``renew``); a process that crashed, on this host or another, stops renewing, and its rows stop counting within
``PRESENCE_LEASE_SECONDS``. (This replaces the sweep of dead PIDs on this host, which missed rows of other hosts and
of a process restarted with the same host name and PID: in a container, PID 1 every time. ``SERVER`` carries a nonce
so that a restarted process never renews its predecessor's rows.)
"""
import os
import secrets
import socket
import time
from datetime import timedelta

from django.conf import settings
from django.db.models.functions import Now

from channels_app import pipeline
from channels_app.models import Peer, PeerConnection

SERVER = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
_last_sweep = float("-inf")  # time.monotonic() of this process's last sweep


def _lease_end():
    return Now() + timedelta(seconds=settings.PRESENCE_LEASE_SECONDS)


def connected(*, peer: Peer, channel_name: str, client_address: str = "") -> None:
    PeerConnection.objects.update_or_create(
        channel_name=channel_name,
        defaults={"peer": peer, "server": SERVER, "client_address": client_address[:100], "expires_at": _lease_end()},
    )


def renew(*, server: str) -> int:
    """Extend the lease of every row of ``server`` (one UPDATE); the number of rows renewed. Sweeps the expired rows
    too, at most once per heartbeat."""
    renewed = PeerConnection.objects.filter(server=server).update(expires_at=_lease_end())
    global _last_sweep
    if time.monotonic() - _last_sweep >= settings.PRESENCE_HEARTBEAT_SECONDS:
        _last_sweep = time.monotonic()
        sweep_expired()
    return renewed


def sweep_expired() -> int:
    """Delete the rows whose lease ended more than a lease ago (they no longer count anyway; the extra lease lets a
    process whose heartbeat came late get its rows back with its next renewal). One indexed DELETE."""
    expired = Now() - timedelta(seconds=settings.PRESENCE_LEASE_SECONDS)
    return PeerConnection.objects.filter(expires_at__lt=expired).delete()[0]


# Every authenticated connection ends with this: plain SQL, without the ORM's deletion machinery (its collector
# was 4% of the server's time per authentication handshake, bench/RESULTS.md).
DISCONNECTED = pipeline.Prepared("presence_disconnected",
                                 f"DELETE FROM {PeerConnection._meta.db_table} WHERE channel_name = %s")


def disconnected(*, channel_name: str) -> None:
    pipeline.run([(DISCONNECTED, [channel_name])])
