"""Start Daphne with its WebSocket message cap taken from the application's settings.

Daphne (autobahn) has its own cap on a WebSocket message (1 MiB by default since daphne 4.2.2); past it, it drops
the TCP connection before the application sees the frame, so ``message_too_large`` never fires. The cap is set here
to ``settings.DAPHNE_WEBSOCKET_MAX_MESSAGE_SIZE`` / ``DAPHNE_WEBSOCKET_MAX_FRAME_SIZE`` (the settings Daphne's
own ``runserver`` reads), which lie above ``MAX_FRAME_BYTES`` and ``MAX_BATCH_FRAME_BYTES``: a frame between the
application's limit and Daphne's cap gets ``message_too_large`` and the connection stays (docs/protocol.md
section 1). Past the cap Daphne drops the connection without a close frame (the client sees 1006).

    python -m operatorapi.serve -b 127.0.0.1 -p 8000    # any other Daphne option too (-e ssl:..., --proxy-headers)

runs Daphne's own command line in this process (same pid, same signals) on ``operatorapi.asgi:application``.
``daphne_command`` gives the equivalent ``python -m daphne`` argv for whoever starts Daphne another way.
An explicit ``--websocket-max-message-size`` / ``--websocket-max-frame-size`` among the arguments wins (it comes
later on the command line).
"""
import os
import sys

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "operatorapi.settings")

APPLICATION = "operatorapi.asgi:application"


def websocket_caps() -> tuple[int, int]:
    """Daphne's caps on an incoming WebSocket message and frame, in bytes, from the settings (checked)."""
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured

    caps = settings.DAPHNE_WEBSOCKET_MAX_MESSAGE_SIZE, settings.DAPHNE_WEBSOCKET_MAX_FRAME_SIZE
    largest = max(settings.MAX_FRAME_BYTES, settings.MAX_BATCH_FRAME_BYTES)
    if min(caps) <= largest:  # (0, "no limit", is refused too)
        raise ImproperlyConfigured(f"Daphne's WebSocket caps {caps} must exceed MAX_FRAME_BYTES and "
                                   f"MAX_BATCH_FRAME_BYTES ({largest}), or frames over those get no answer")
    return caps


def daphne_args(*args: str) -> list[str]:
    """Daphne's command-line arguments: the caps, then ``args`` (e.g. ``-b HOST -p PORT``), then the application."""
    message, frame = map(str, websocket_caps())
    return ["--websocket-max-message-size", message, "--websocket-max-frame-size", frame, *args, APPLICATION]


def daphne_command(*args: str, python: str = sys.executable) -> list[str]:
    """The whole argv of ``python -m daphne`` serving the project with the cap set."""
    return [python, "-m", "daphne", *daphne_args(*args)]


def main(argv: list[str] | None = None) -> None:
    # Daphne's CLI in this process rather than an exec of ``python -m daphne``: the settings are loaded once
    # (loading them imports eth_account: about a second per start).
    from daphne.cli import CommandLineInterface

    CommandLineInterface().run(daphne_args(*(sys.argv[1:] if argv is None else argv)))


if __name__ == "__main__":
    main()
