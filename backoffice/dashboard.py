"""What a clerk looks at first: read-only figures for the admin index, among them the settlements that need
attention (the payment worker retrying a step, or an escrow still waiting for funding past its deadline) and the
channels in orange or red (margin zones, channels_app/risk.py), trades per minute over the last hours and the
settlement pipeline (backoffice/charts.py draws both as SVG). Each panel is computed only for a user who may view
what it shows (``PANELS``)."""
from datetime import datetime, time, timedelta, timezone

from django.db.models import Count, Max, Q
from django.db.models.functions import TruncMinute
from django.urls import reverse
from django.utils import timezone as django_timezone
from django.utils.http import urlencode

from backoffice import charts
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


# Who may see a panel: the view permission(s) on what it shows (a staff account without them sees none of it).
VIEW_CHANNELS = ("channels_app.view_channel",)
VIEW_TRADES = ("channels_app.view_trade",)
VIEW_SETTLEMENTS = ("settlement.view_settlement",)
VIEW_PEERS_ONLINE = ("channels_app.view_peer", "channels_app.view_peerconnection")

TRADE_WINDOW = timedelta(hours=6)
TRADE_BUCKET = timedelta(minutes=10)


def _open_settlements():
    return (Settlement.objects.exclude(state__in=[s.value for s in TERMINAL_STATES])
            .select_related("channel").order_by("created_at"))


def _attention():
    return Settlement.objects.filter(needs_attention_q()).select_related("channel").order_by("created_at")


def _channels_by_status() -> list[tuple[str, int]]:
    by_status = dict(Channel.objects.values_list("status").annotate(n=Count("id")).order_by())
    return [(status.label, by_status.get(status.value, 0)) for status in ChannelStatus]


def _channels_by_zone() -> list[tuple[str, int]]:
    at_risk = Channel.objects.aggregate(**{zone.value: Count("id", filter=worst_zone_q(zone))
                                           for zone in (MarginZone.ORANGE, MarginZone.RED)})
    return list(at_risk.items())  # [(zone, count)], orange then red


def _trades_today() -> int:
    midnight = datetime.combine(datetime.now(timezone.utc).date(), time.min, tzinfo=timezone.utc)
    return Trade.objects.filter(recorded_at__gte=midnight).count()


def _attention_settlements() -> list[dict]:
    return [{"settlement": s, "retrying": is_retrying(s),
             "past_deadline": s.state == SettlementState.INITIATED and deadline_passed(s),
             "deadline": _utc(s.escrow.get("deadline")) if isinstance(s.escrow, dict) else ""}
            for s in _attention()[:ATTENTION_LIMIT]]


def _peers_online() -> list[dict]:
    online = selectors.live_connections().values("peer__address", "peer__name").annotate(connections=Count("id"))
    return list(online.order_by("peer__address"))


def _list_url(name: str, **params) -> str:
    return f"{reverse(name)}?{urlencode(params)}"


def _admin_time(at: datetime) -> str:
    """A time as the admin's list filters read it, in UTC with its offset written (never a naive time)."""
    return at.astimezone(timezone.utc).isoformat(sep=" ")


def trade_buckets(now: datetime | None = None) -> list[tuple[datetime, int]]:
    """(start, trades recorded) of each ``TRADE_BUCKET`` of the last ``TRADE_WINDOW``, the current one last (still
    filling). One query, counted per minute by the database (at most 360 rows, however many trades)."""
    now = now or django_timezone.now()
    bucket_seconds = int(TRADE_BUCKET.total_seconds())
    end = datetime.fromtimestamp((int(now.timestamp()) // bucket_seconds + 1) * bucket_seconds, tz=timezone.utc)
    start = end - TRADE_WINDOW
    per_minute = (Trade.objects.filter(recorded_at__gte=start).annotate(minute=TruncMinute("recorded_at"))
                  .values("minute").annotate(n=Count("id")).order_by().values_list("minute", "n"))
    counts = [0] * int(TRADE_WINDOW / TRADE_BUCKET)
    for minute, n in per_minute:
        index = int((minute - start).total_seconds()) // bucket_seconds
        if 0 <= index < len(counts):
            counts[index] += n
    return [(start + TRADE_BUCKET * i, n) for i, n in enumerate(counts)]


def trades_chart(now: datetime | None = None):
    """Trades per minute over the last hours, a bar per ``TRADE_BUCKET`` (the bar's average rate, its count in
    the tooltip), each bar linking to the trades list of its interval."""
    buckets = trade_buckets(now)
    minutes = TRADE_BUCKET.total_seconds() / 60
    trades_url = reverse("admin:channels_app_trade_changelist")
    bars = []
    for start, count in buckets:
        end = start + TRADE_BUCKET
        interval = urlencode({"recorded_at__gte": _admin_time(start), "recorded_at__lt": _admin_time(end)})
        rate = f"{count / minutes:.1f}".removesuffix(".0")  # display only: a count over a whole number of minutes
        bars.append(charts.Bar(
            value=count / minutes, text=rate, count=count,
            href=f"{trades_url}?{interval}",
            title=f"{start:%H:%M}-{end:%H:%M} UTC: {count} trade{'s' if count != 1 else ''} ({rate} per minute)"))
    labels = [(i, f"{start:%H:%M}", "start") for i, (start, _) in enumerate(buckets) if i % 6 == 0]
    labels.append((len(buckets), f"{buckets[-1][0] + TRADE_BUCKET:%H:%M} UTC", "end"))
    total = sum(count for _, count in buckets)
    return {
        "svg": charts.bar_chart(chart_id="trades-per-minute-chart", bars=bars, x_labels=labels,
                                title=f"Trades per minute, last {TRADE_WINDOW.total_seconds() / 3600:g} hours",
                                y_label="trades / minute"),
        "total": total,
        "since": buckets[0][0],
        "url": _list_url("admin:channels_app_trade_changelist", recorded_at__gte=_admin_time(buckets[0][0])),
        "bucket_minutes": int(minutes),
    }


def _age(since: datetime, now: datetime) -> str:
    minutes = max(0, int((now - since).total_seconds()) // 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if hours < 48 else f"{hours // 24} days"


def settlement_pipeline(now: datetime | None = None):
    """How many settlements are in each state, and of those still on their way, the one waiting longest in its
    state (since its latest transition): each state links to the settlement list filtered by it."""
    now = now or django_timezone.now()
    counts = dict(Settlement.objects.values_list("state").annotate(n=Count("id")).order_by())
    waiting = (Settlement.objects.exclude(state__in=[s.value for s in TERMINAL_STATES])
               .annotate(since=Max("transitions__at")).values_list("pk", "state", "since", "created_at"))
    oldest: dict[str, tuple[datetime, int]] = {}
    for pk, state, since, created_at in waiting:
        since = since or created_at
        if state not in oldest or since < oldest[state][0]:
            oldest[state] = (since, pk)
    stages, rows = [], []
    for state in SettlementState:
        href = _list_url("admin:settlement_settlement_changelist", state=state.value)
        count = counts.get(state.value, 0)
        since, pk = oldest.get(state.value, (None, None))
        note = f"oldest {_age(since, now)}" if since else ""
        stages.append(charts.Stage(label=state.value, count=count, href=href, note=note,
                                   terminal=state in TERMINAL_STATES))
        rows.append({"state": state.value, "count": count, "href": href, "terminal": state in TERMINAL_STATES,
                     "oldest_pk": pk, "oldest_age": _age(since, now) if since else "",
                     "oldest_since": since})
    return {"svg": charts.pipeline(chart_id="settlement-pipeline-chart", title="Settlements by state",
                                   stages=stages),
            "states": rows}


# key -> (the permissions it needs, how it is computed)
PANELS = {
    "channels_by_status": (VIEW_CHANNELS, _channels_by_status),
    "channels_by_zone": (VIEW_CHANNELS, _channels_by_zone),
    "trades_today": (VIEW_TRADES, _trades_today),
    "trades_chart": (VIEW_TRADES, trades_chart),
    "open_settlements": (VIEW_SETTLEMENTS, lambda: list(_open_settlements()[:50])),
    "open_settlement_count": (VIEW_SETTLEMENTS, lambda: _open_settlements().count()),
    "attention_settlements": (VIEW_SETTLEMENTS, _attention_settlements),
    "attention_count": (VIEW_SETTLEMENTS, lambda: _attention().count()),
    "settlement_pipeline": (VIEW_SETTLEMENTS, settlement_pipeline),
    "peers_online": (VIEW_PEERS_ONLINE, _peers_online),
}


def may_see(user, key: str) -> bool:
    """Whether ``user`` may see the panel ``key`` (everyone may, without a user: callers other than a page)."""
    return user is None or user.has_perms(PANELS[key][0])


def dashboard(user=None) -> dict:
    """What the admin index shows: only the panels ``user`` may see are computed (all of them without a user, for
    callers other than a clerk's page). The index template shows each panel under the same permission (``perms``),
    so a panel left out here is simply not shown."""
    return {key: compute() for key, (_, compute) in PANELS.items() if may_see(user, key)}
