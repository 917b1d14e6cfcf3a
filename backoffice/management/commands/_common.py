"""What the back-office commands share: argument parsing into domain values, lookups, progress, the actor."""
import sys
from decimal import Decimal

from django.core.management.base import CommandError

from backoffice.audit import command_actor
from channels_app.errors import DomainError
from channels_app.formats import CHANNEL_ID_RE, MARKET_RE
from channels_app.models import Channel
from channels_app.money import DecimalInputError, parse_amount

ACTOR = command_actor


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
