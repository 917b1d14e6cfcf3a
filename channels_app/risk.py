"""Margin zones and the trade rule they set, after the network's margin-zone proposal: pure functions on values.

A party's zone is its margin balance as a share of the channel's deposit, against the maintenance margin rate
(``MARGIN_MAINTENANCE_RATE``, MMR):

| zone   | balance / deposit      | trades accepted                                         |
|--------|------------------------|---------------------------------------------------------|
| green  | >= 2 x MMR             | any trade that leaves both balances >= 0                |
| orange | >= MMR and < 2 x MMR   | only trades that reduce the position                    |
| red    | < MMR                  | only trades that reduce the position; a forced settlement |

The rule follows the worse of the two parties' zones, whichever party records the trade: the position is one,
mirrored, so a trade that shrinks it shrinks it for both. Boundaries are compared exactly (``MONEY``).
"""
import decimal
import enum
from decimal import Decimal
from functools import lru_cache
from typing import NamedTuple

from django.conf import settings

from channels_app.money import MONEY, ZERO


class MarginZone(enum.StrEnum):
    GREEN = "green"
    ORANGE = "orange"
    RED = "red"


SEVERITY = {MarginZone.GREEN: 0, MarginZone.ORANGE: 1, MarginZone.RED: 2}
DESCRIPTION = {  # for the sentences of refusals, the admin and the docs
    MarginZone.GREEN: "at least 2 x the maintenance rate of the deposit",
    MarginZone.ORANGE: "between 1 and 2 x the maintenance rate of the deposit",
    MarginZone.RED: "below the maintenance rate of the deposit",
}


class Zones(NamedTuple):
    """Each party's zone, in the order of ``Margins``."""

    initiator: MarginZone
    responder: MarginZone

    @property
    def worst(self) -> MarginZone:
        return max(self, key=SEVERITY.__getitem__)


@lru_cache(maxsize=8)
def parse_rate(text: str) -> Decimal:
    """``MARGIN_MAINTENANCE_RATE`` as an exact decimal; ValueError unless 0 < rate < 0.5 (green needs 2 x rate)."""
    try:
        rate = Decimal(text.strip())
    except decimal.InvalidOperation:
        raise ValueError(f"{text!r} is not a decimal") from None
    if not rate.is_finite() or not ZERO < rate < Decimal("0.5"):
        raise ValueError(f"{text!r} is not between 0 and 0.5 (exclusive)")
    return rate


def maintenance_rate() -> Decimal:
    """The setting, parsed once per value (every channel view asks: every notification, every trade)."""
    return parse_rate(settings.MARGIN_MAINTENANCE_RATE)


def floors(deposit: Decimal, rate: Decimal) -> tuple[Decimal, Decimal]:
    """(orange, green): the lowest balance in each zone above red, on a channel with ``deposit``."""
    maintenance = MONEY.multiply(deposit, rate)
    return maintenance, MONEY.add(maintenance, maintenance)


def zone_of(balance: Decimal, deposit: Decimal, rate: Decimal) -> MarginZone:
    return _zone(balance, *floors(deposit, rate))


def _zone(balance: Decimal, orange: Decimal, green: Decimal) -> MarginZone:
    if balance >= green:
        return MarginZone.GREEN
    if balance >= orange:
        return MarginZone.ORANGE
    return MarginZone.RED


def zones(balances, deposit: Decimal, rate: Decimal | None = None) -> Zones:
    """The zones of ``balances`` (``Margins``) on a channel with ``deposit`` (its floors computed once)."""
    orange, green = floors(deposit, maintenance_rate() if rate is None else rate)
    return Zones(_zone(balances.initiator, orange, green), _zone(balances.responder, orange, green))


def reduces(before: Decimal, after: Decimal) -> bool:
    """Whether a position going from signed quantity ``before`` to ``after`` got smaller without flipping."""
    if before == 0 or MONEY.abs(after) >= MONEY.abs(before):
        return False
    return after == 0 or (after > 0) == (before > 0)
