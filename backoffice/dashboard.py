"""What a clerk looks at first: read-only figures for the admin index."""
from datetime import datetime, time, timezone

from django.db.models import Count

from channels_app import selectors
from channels_app.models import Channel, ChannelStatus, Trade
from settlement.models import TERMINAL_STATES, Settlement


def dashboard() -> dict:
    by_status = dict(Channel.objects.values_list("status").annotate(n=Count("id")))
    midnight = datetime.combine(datetime.now(timezone.utc).date(), time.min, tzinfo=timezone.utc)
    open_settlements = (
        Settlement.objects.exclude(state__in=[s.value for s in TERMINAL_STATES])
        .select_related("channel").order_by("created_at")
    )
    online = selectors.live_connections().values("peer__address", "peer__name").annotate(connections=Count("id"))
    return {
        "channels_by_status": [(status.label, by_status.get(status.value, 0)) for status in ChannelStatus],
        "trades_today": Trade.objects.filter(recorded_at__gte=midnight).count(),
        "open_settlements": list(open_settlements[:50]),
        "open_settlement_count": open_settlements.count(),
        "peers_online": list(online.order_by("peer__address")),
    }
