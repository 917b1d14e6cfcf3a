"""Every use of a library's private internals, one small module each, each checking at import (start-up) that
the installed library is the release line it was written for.

A shim that meets a release it does not know refuses to start (``ImproperlyConfigured``) instead of misbehaving
quietly: read the library's change, adapt the shim, then widen its line here. ``channels_app.apps`` imports every
shim when Django starts, so a server, a worker and a command all check.

- ``on_commit``: Django's list of on-commit hooks (the notification outbox joins the current savepoint's outbox).
- ``event_loop``: asgiref's thread-local reference to the server's event loop (the outbox hands frames to it).
- ``redis_pubsub``: channels-redis' pub/sub layer, made to ride out a Redis outage.
- ``pool_check``: psycopg_pool's check of a connection it hands out, made to cost no round trip, and to sort
  all of a pool's idle connections once one is found dead.
- ``autobahn_debug``: Autobahn's debug line of each new connection, formatted only if written.
"""
from importlib.metadata import version

from django.core.exceptions import ImproperlyConfigured

SHIMS = ("operatorapi.compat.on_commit", "operatorapi.compat.event_loop", "operatorapi.compat.redis_pubsub",
         "operatorapi.compat.pool_check", "operatorapi.compat.autobahn_debug")


def require(distribution: str, line: str) -> str:
    """The installed version of ``distribution``, which must be of release line ``line`` (e.g. "5.2")."""
    installed = version(distribution)
    if installed != line and not installed.startswith(line + "."):
        raise ImproperlyConfigured(
            f"{distribution} {installed} is installed, but the shim for its internals was written for {line}.x "
            "(operatorapi/compat): check the shim against the new release, then update it"
        )
    return installed


def check_all() -> None:
    """Import (and so version-check) every shim."""
    from importlib import import_module

    for name in SHIMS:
        import_module(name)
