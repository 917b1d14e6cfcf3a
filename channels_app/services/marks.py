"""Mark prices: setting one revalues every unsettled position in that market, and both parties hear of it."""
from decimal import Decimal

from django.db import transaction

from channels_app.events import StreamAction
from channels_app.models import Channel, MarkPrice, Position, PositionStatus, marks_for
from channels_app.notifications import notify_positions, notify_stream
from channels_app.schemas import MARKET_RE
from channels_app.valuation import balances, unsettled_positions


def set_mark(*, market: str, price: Decimal, source: str = "") -> MarkPrice:
    """Store the latest mark for ``market`` and push the new position values and margins to both parties."""
    if not MARKET_RE.fullmatch(market):
        raise ValueError(f"{market!r} is not a market (BASE/QUOTE, upper-case letters or digits)")
    if price <= 0:
        raise ValueError("a mark price must be greater than zero")
    with transaction.atomic():
        mark, _ = MarkPrice.objects.update_or_create(market=market, defaults={"price": price, "source": source})
        channel_ids = (
            Position.objects.filter(market=market, status=PositionStatus.OPEN).values_list("channel_id", flat=True)
        )
        for channel in Channel.objects.filter(pk__in=channel_ids).select_related("initiator", "responder"):
            positions = unsettled_positions(channel)
            marks = marks_for(p.market for p in positions)
            notify_positions(channel, [p for p in positions if p.market == market and p.status == PositionStatus.OPEN], marks)
            notify_stream(channel, StreamAction.MARGIN_UPDATED, balances(channel, positions, marks))
    return mark
