"""Mark prices: setting one revalues every unsettled position in that market (and so the channels' margin zones),
and both parties hear of it."""
from decimal import Decimal

from django.db import transaction

from channels_app import selectors
from channels_app.errors import Code, DomainError
from channels_app.formats import MARKET_RE
from channels_app.models import Channel, MarkPrice, Position, PositionStatus
from channels_app.notices import StreamAction, notify_channel, notify_positions
from channels_app.services import zones


def set_mark(*, market: str, price: Decimal, source: str = "") -> MarkPrice:
    """Store the latest mark for ``market`` and push the new position values and margins to both parties."""
    if not MARKET_RE.fullmatch(market):
        raise DomainError(Code.INVALID_MARKET, f"{market!r} is not a market (BASE/QUOTE, upper-case letters or "
                          "digits)")
    if price <= 0:
        raise DomainError(Code.INVALID_DECIMAL, "a mark price must be greater than zero")
    with transaction.atomic():
        mark, _ = MarkPrice.objects.update_or_create(market=market, defaults={"price": price, "source": source})
        channel_ids = (
            Position.objects.filter(market=market, status=PositionStatus.OPEN).values_list("channel_id", flat=True)
        )
        # Each channel's row is locked (in key order, as every writer of several channels takes them): its zones
        # move with the mark, and a trade recorded meanwhile must see them.
        channels = Channel.objects.filter(pk__in=channel_ids).select_related("initiator", "responder")
        for channel in channels.select_for_update(of=("self",)).order_by("pk"):
            live = selectors.live_positions_of(channel)
            marks = selectors.marks_for(p.market for p in live)
            balances = selectors.margins(channel, live_positions=live, marks=marks)
            zones.track(channel, balances)
            notify_positions(channel, [p for p in live if p.market == market and p.status == PositionStatus.OPEN],
                             marks)
            notify_channel(channel, StreamAction.MARGIN_UPDATED, balances)
    return mark
