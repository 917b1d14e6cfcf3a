"""What the back-office commands share: argument parsing into domain values, lookups, progress, the actor, a quiet
end when standard output is closed."""
import os
import sys
from decimal import Decimal

from django.core.management.base import BaseCommand, CommandError

from backoffice.audit import command_actor
from channels_app.errors import DomainError
from channels_app.formats import CHANNEL_ID_RE, MARKET_RE
from channels_app.models import Channel
from channels_app.money import DecimalInputError, parse_amount

ACTOR = command_actor

# The exit status of a command whose reader went away (``export_trades | head``): 128 + SIGPIPE, what a shell tool
# killed by SIGPIPE reports, so that a script with ``set -o pipefail`` still learns the output was cut short.
EXIT_BROKEN_PIPE = 141


def price(text: str, *, where: str = "price") -> Decimal:
    """A positive decimal string, exactly (never through float)."""
    try:
        return parse_amount(text)
    except DecimalInputError as exc:
        raise CommandError(f"{where}: {exc}") from None


def market(text: str, *, where: str = "market") -> str:
    if not MARKET_RE.fullmatch(text):
        raise CommandError(f"{where}: {text!r} is not a market (BASE/QUOTE, upper-case letters or digits)")
    return text


def channel(channel_id: str) -> Channel:
    channel_id = channel_id.lower()
    if not CHANNEL_ID_RE.fullmatch(channel_id):
        raise CommandError(f"{channel_id!r} is not a channel id (0x followed by 64 hex digits)")
    found = Channel.objects.select_related("initiator", "responder").filter(channel_id=channel_id).first()
    if found is None:
        raise CommandError(f"no channel {channel_id}")
    return found


def refused(exc: DomainError) -> CommandError:
    """A refusal of the domain rules, as the command's error (with the domain's code)."""
    return CommandError(f"{exc.code}: {exc.message}")


class Progress:
    """``done/total`` on stderr, at most every ``every`` items and at the end (long runs say they are alive)."""

    def __init__(self, label: str, total: int | None = None, every: int = 1000, stream=None):
        self.label, self.total, self.every, self.stream = label, total, every, stream or sys.stderr
        self.done = 0

    def step(self, count: int = 1) -> None:
        self.done += count
        if self.done % self.every < count or (self.total is not None and self.done == self.total):
            self.stream.write(f"{self.label}: {self.done}" + (f"/{self.total}" if self.total is not None else "")
                              + "\n")
            self.stream.flush()


class PipedCommand(BaseCommand):
    """A command whose output is read by another program: when that program stops reading (``| head``, ``| less``
    then q), the command stops quietly with status 141 instead of printing a BrokenPipeError traceback.

    The recipe of the Python documentation (signal module, "Note on SIGPIPE"): catch BrokenPipeError, point
    standard output at devnull so that the interpreter's last flush cannot fail again, exit. Output is flushed
    here, at the end of ``execute``, so that a pipe closed after the last write is caught too."""

    def execute(self, *args, **options):
        try:
            output = super().execute(*args, **options)
            self.stdout.flush()
            return output
        except BrokenPipeError:
            try:
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
            except (AttributeError, OSError, ValueError):  # standard output is no file (a test's stream)
                pass
            sys.exit(EXIT_BROKEN_PIPE)
