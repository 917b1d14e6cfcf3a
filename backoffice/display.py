"""How the back office writes times, money and identifiers for people: readable first, exact on hover.

Nothing here changes a value: money is rounded on a copy for the eye, with the exact figure in the ``title`` (stored
and sent figures stay exact: channels_app.money); ids are shortened with the full value in the ``title`` and
``data-full`` (to copy it, and for the browser's find to reach it through the admin's search); times are UTC with
seconds, whatever the server's time zone or the admin's locale format (which drops the seconds).
"""
import decimal
from datetime import datetime, timezone
from decimal import Decimal

from django.conf import settings
from django.contrib import admin
from django.core.exceptions import ImproperlyConfigured
from django.utils.html import format_html

from channels_app.money import MONEY, fmt

EMPTY = "–"
TIME_FORMAT = "%Y-%m-%d %H:%M:%S UTC"
DEFAULT_PLACES = 2


# --- times ---------------------------------------------------------------------------------------------------------
def utc(at: datetime | None) -> str:
    """A stored time as UTC with seconds (``2026-11-27 10:59:13 UTC``): clerks compare times with brokers' logs."""
    if at is None:
        return EMPTY
    return at.astimezone(timezone.utc).strftime(TIME_FORMAT)


def unix_utc(seconds: int | None) -> str:
    """Unix seconds as ``utc`` writes times, the raw number in the title (as the broker sent it)."""
    if seconds is None:
        return EMPTY
    try:
        at = datetime.fromtimestamp(seconds, tz=timezone.utc)
    except (TypeError, ValueError, OverflowError, OSError):  # out of the calendar's range: shown as it is
        return format_html("{}", seconds)
    return format_html('<time datetime="{}" title="unix {}">{}</time>', at.isoformat(), seconds, utc(at))


def utc_column(name: str, description: str | None = None, *, unix: bool = False):
    """An admin column (or read-only field) writing the model field ``name`` as ``utc`` (``unix_utc`` for Unix
    seconds), sortable by the field itself. Named as the field, so the page's CSS class stays ``field-<name>``."""
    write = unix_utc if unix else utc

    @admin.display(description=description or name.replace("_", " "), ordering=name)
    def column(obj):
        return write(getattr(obj, name))

    column.__name__ = name
    return column


# --- money ---------------------------------------------------------------------------------------------------------
def _places_by_asset() -> dict[str, int]:
    """``BACKOFFICE_DISPLAY_PLACES_BY_ASSET``: a dict, or text like ``"BTC=8,ETH=8"``. Read on each call, so a
    change of settings (and a test's) is seen at once."""
    configured = getattr(settings, "BACKOFFICE_DISPLAY_PLACES_BY_ASSET", {}) or {}
    if isinstance(configured, str):
        try:
            configured = dict(item.split("=", 1) for item in configured.replace(" ", "").split(",") if item)
        except ValueError:
            raise ImproperlyConfigured(
                f"BACKOFFICE_DISPLAY_PLACES_BY_ASSET must read like \"BTC=8,ETH=8\", not {configured!r}") from None
    return {asset.upper(): _places(places, "BACKOFFICE_DISPLAY_PLACES_BY_ASSET") for asset, places in
            configured.items()}


def _places(value, name: str) -> int:
    try:
        places = int(value)
    except (TypeError, ValueError):
        places = -1
    if not 0 <= places <= 36:
        raise ImproperlyConfigured(f"{name}: decimal places must be a whole number from 0 to 36, not {value!r}")
    return places


def places_for(asset: str | None = None) -> int:
    """How many decimal places people see of an amount of ``asset`` (the quote asset of a market, a ledger line's
    asset); ``BACKOFFICE_DISPLAY_PLACES`` (default 2) when the asset has none of its own or is not known."""
    if asset:
        by_asset = _places_by_asset()
        if asset.upper() in by_asset:
            return by_asset[asset.upper()]
    return _places(getattr(settings, "BACKOFFICE_DISPLAY_PLACES", DEFAULT_PLACES), "BACKOFFICE_DISPLAY_PLACES")


def quote_asset(market: str) -> str:
    """``ETH/USD`` -> ``USD``: PnL, cost and value of a position are amounts of its quote asset."""
    return market.rpartition("/")[2]


def rounded(value: Decimal, places: int) -> str:
    """``value`` half-even to ``places``, as text with exactly that many places; never "-0.00". A copy: MONEY's
    context with Inexact untrapped (rounding here is meant), the stored value untouched."""
    context = MONEY.copy()
    context.traps[decimal.Inexact] = False
    shown = value.quantize(Decimal(1).scaleb(-places), rounding=decimal.ROUND_HALF_EVEN, context=context)
    if not shown:
        shown = abs(shown)
    return format(shown, "f")


def money(value, asset: str | None = None) -> str:
    """A money figure rounded for reading (``places_for(asset)``), the exact one in the title to hover or copy.

    ``value``: a Decimal, or a decimal string as a ledger holds it; anything else is shown as it is."""
    if value is None or value == "":
        return EMPTY
    try:
        exact = value if isinstance(value, Decimal) else Decimal(str(value))
    except decimal.InvalidOperation:
        return format_html("{}", value)
    if not exact.is_finite():
        return format_html("{}", value)
    return format_html('<span class="money" title="{}">{}</span>', fmt(exact), rounded(exact, places_for(asset)))


# --- identifiers ---------------------------------------------------------------------------------------------------
def short(value: str | None, *, head: int = 6, tail: int = 4) -> str:
    """``0x5cd1…15b8`` of a channel id or an address (66 and 42 characters would make lists scroll sideways), the
    full value in the title and ``data-full``; a value short enough already is written whole."""
    if not value:
        return EMPTY
    if len(value) <= head + tail + 1:
        return format_html('<span class="short-id" data-full="{}">{}</span>', value, value)
    return format_html('<span class="short-id" title="{}" data-full="{}">{}…{}</span>', value, value,
                       value[:head], value[-tail:])


def peer_label(address: str | None, name: str = "", *, name_title: str = "") -> str:
    """A peer as people know it: its name (if any) and its short address, the full address on hover."""
    if not name:
        return short(address)
    if name_title:
        return format_html('<span title="{}">{}</span> ({})', name_title, name, short(address))
    return format_html("{} ({})", name, short(address))


# --- states --------------------------------------------------------------------------------------------------------
def wire_column(name: str, description: str | None = None):
    """A state written as on the wire (``proposed``, ``opened``), not as its choice's capitalised label: histories,
    lists, messages and brokers' notifications then all spell a state the same way."""

    @admin.display(description=description or name.replace("_", " "), ordering=name)
    def column(obj):
        return getattr(obj, name) or EMPTY

    column.__name__ = name
    return column


class WireValueFilter(admin.ChoicesFieldListFilter):
    """A choices filter naming each choice as on the wire, as ``wire_column`` shows it."""

    def choices(self, changelist):
        wire = {str(label): str(value) for value, label in self.field.flatchoices}
        for choice in super().choices(changelist):
            yield {**choice, "display": wire.get(str(choice["display"]), choice["display"])}
