"""Which peers are connected now: a row per authenticated connection, for back office."""
import os
import socket

from channels_app.models import Peer, PeerConnection

SERVER = f"{socket.gethostname()}:{os.getpid()}"
_swept = False


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_dead_processes() -> int:
    """Remove rows left by processes of this host that no longer run (a crash skips their disconnects)."""
    host = socket.gethostname()
    dead = [
        server for server in PeerConnection.objects.filter(server__startswith=f"{host}:").values_list(
            "server", flat=True).distinct()
        if server != SERVER and not _pid_alive(int(server.rsplit(":", 1)[1]))
    ]
    return PeerConnection.objects.filter(server__in=dead).delete()[0] if dead else 0


def connected(*, peer: Peer, channel_name: str, client_address: str = "") -> None:
    global _swept
    if not _swept:
        sweep_dead_processes()
        _swept = True
    PeerConnection.objects.update_or_create(
        channel_name=channel_name, defaults={"peer": peer, "server": SERVER, "client_address": client_address[:100]}
    )


def disconnected(*, channel_name: str) -> None:
    PeerConnection.objects.filter(channel_name=channel_name).delete()


def online_peer_count() -> int:
    return PeerConnection.objects.values("peer").distinct().count()
