"""What a clerk looks at first: read-only figures for the admin index, among them the settlements that need
attention (the payment worker retrying a step, or an escrow still waiting for funding past its deadline) and the
channels in orange or red (margin zones, channels_app/risk.py)."""
from datetime import datetime, time, timezone

from django.db.models import Count, Q
from django.utils import timezone as django_timezone

from channels_app import selectors
from channels_app.models import Channel, ChannelStatus, Trade
from channels_app.risk import SEVERITY, MarginZone
from settlement.models import TERMINAL_STATES, Settlement, SettlementState

ATTENTION_LIMIT = 50


def retrying_q() -> Q:
    """Settlements whose payment worker is retrying a step (an error recorded; a terminal one is no concern)."""
    return ~Q(last_error="") & ~Q(state__in=[s.value for s in TERMINAL_STATES])


def past_deadline_q(now: datetime | None = None) -> Q:
    """Escrows still waiting for funding (``initiated``) after their deadline, by this server's clock (the worker
    itself goes by the chain's block time, and refunds once the chain agrees)."""
    now = now or django_timezone.now()
    return Q(state=SettlementState.INITIATED, escrow__deadline__lt=int(now.timestamp()))


def needs_attention_q() -> Q:
    return retrying_q() | past_deadline_q()


# A closed channel's margins are released: its last zones say nothing about risk now.
LIVE_CHANNEL = ~Q(status=ChannelStatus.CLOSED)


def worst_zone_q(zone: MarginZone) -> Q:
    """Channels not closed whose worse party is in ``zone``: one of the two in it, neither in a worse one (so a
    channel counts once). On the stored zones (``Channel.initiator_zone``, ``responder_zone``, kept by every write that
    moves a balance), so the channel list filters and the dashboard counts in one query each."""
    at_most = [z.value for z in MarginZone if SEVERITY[z] <= SEVERITY[zone]]
    return (Q(initiator_zone=zone) | Q(responder_zone=zone)) & Q(initiator_zone__in=at_most,
                                                                    responder_zone__in=at_most) & LIVE_CHANNEL



def is_retrying(settlement: Settlement) -> bool:
    return bool(settlement.last_error) and settlement.state not in TERMINAL_STATES


def deadline_passed(settlement: Settlement, now: datetime | None = None) -> bool:
    deadline = settlement.escrow.get("deadline") if isinstance(settlement.escrow, dict) else None
    now = now or django_timezone.now()
    return isinstance(deadline, int) and deadline < now.timestamp()


def _utc(unix) -> str:
    try:
        return datetime.fromtimestamp(unix, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (TypeError, ValueError, OverflowError, OSError):
        return ""


def dashboard() -> dict:
    by_status = dict(Channel.objects.values_list("status").annotate(n=Count("id")))
    midnight = datetime.combine(datetime.now(timezone.utc).date(), time.min, tzinfo=timezone.utc)
    open_settlements = (
        Settlement.objects.exclude(state__in=[s.value for s in TERMINAL_STATES])
        .select_related("channel").order_by("created_at")
    )
    attention = (Settlement.objects.filter(needs_attention_q()).select_related("channel")
                 .order_by("created_at"))
    at_risk = Channel.objects.aggregate(**{zone.value: Count("id", filter=worst_zone_q(zone))
                                           for zone in (MarginZone.ORANGE, MarginZone.RED)})
    online = selectors.live_connections().values("peer__address", "peer__name").annotate(connections=Count("id"))
    return {
        "channels_by_status": [(status.label, by_status.get(status.value, 0)) for status in ChannelStatus],
        "channels_by_zone": list(at_risk.items()),  # [(zone, count)], orange then red
        "trades_today": Trade.objects.filter(recorded_at__gte=midnight).count(),
        "open_settlements": list(open_settlements[:50]),
        "open_settlement_count": open_settlements.count(),
        "attention_settlements": [
            {"settlement": s, "retrying": is_retrying(s),
             "past_deadline": s.state == SettlementState.INITIATED and deadline_passed(s),
             "deadline": _utc(s.escrow.get("deadline")) if isinstance(s.escrow, dict) else ""}
            for s in attention[:ATTENTION_LIMIT]],
        "attention_count": attention.count(),
        "peers_online": list(online.order_by("peer__address")),
    }
