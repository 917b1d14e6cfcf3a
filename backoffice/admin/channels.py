"""Back office views of peers, channels, trades, positions and marks.

Reads go through the domain's selectors (figures from each side, balances from the one margin function); writes go
through ``backoffice.actions`` (audited, and through the domain services). Trades and positions are never edited
here.

Margin zones (channels_app/risk.py) show as a coloured badge with the zone's name written in it. The channel list
shows and filters the stored zones (``Channel.initiator_zone``, ``responder_zone``: no balance computed to filter);
the channel page shows the zones of the balances it shows (``selectors.channel_view``), and a pending margin call.

Every page stays the same size whatever a channel's history: the channel page shows the latest ``LATEST`` trades,
positions and settlements, with their counts linked to the full lists filtered by the channel (newest first).
Times, money and ids are written by ``backoffice.display`` (UTC with seconds; money rounded, exact on hover; ids
shortened, whole on hover). A peer is shown by the name brokers gave it (``known_name``).
"""
from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.db.models import BooleanField, CharField, Count, ExpressionWrapper, F, OuterRef, Q, Subquery, Value
from django.db.models.functions import Coalesce, NullIf
from django.forms.models import BaseInlineFormSet
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from backoffice.actions import set_mark, set_peer_disabled
from backoffice.admin.readonly import ReadOnlyAdmin, ReadOnlyInline
from backoffice.audit import admin_actor
from backoffice.dashboard import worst_zone_q
from backoffice.display import (
    WireValueFilter,
    money,
    peer_label,
    quote_asset,
    short,
    utc,
    utc_column,
    wire_column,
)
from channels_app import selectors
from channels_app.formats import MARKET_RE
from channels_app.models import (
    INITIATOR,
    RESPONDER,
    ZONE_VALUES,
    Channel,
    MarkPrice,
    Peer,
    PeerConnection,
    Position,
    Trade,
)
from channels_app.money import DecimalInputError, fmt, parse_amount
from channels_app.risk import DESCRIPTION, MarginZone
from settlement.models import Settlement

LATEST = 20  # rows of each kind on a channel's page: the rest is a link away, so the page does not grow with use
CREATED = utc_column("created_at", "created")
UPDATED = utc_column("updated_at", "updated")
STATUS = wire_column("status")


# --- peers as people know them -------------------------------------------------------------------------------------
def given_name(peer_pk: str) -> Subquery:
    """The name an initiator gave the peer (``Channel.responder_name``) on the latest channel that has one: brokers
    name their counterparties when they open a channel, and rarely set ``Peer.name``."""
    return Subquery(Channel.objects.filter(responder=OuterRef(peer_pk)).exclude(responder_name="")
                    .order_by("-id").values("responder_name")[:1], output_field=CharField())


def known_name(prefix: str = "", *also) -> Coalesce:
    """``Peer.name`` if set, else (``also``: the channel's own ``responder_name`` first) the name an initiator gave
    it; an annotation, so a list reads every row's names in its one query. ``prefix``: the way to the peer
    (``"initiator__"``), empty from the peer itself."""
    peer_pk = f"{prefix}id" if prefix else "pk"
    return Coalesce(NullIf(F(f"{prefix}name"), Value("")), *(NullIf(F(name), Value("")) for name in also),
                    given_name(peer_pk), Value(""), output_field=CharField())


def peer_link(peer: Peer, name: str) -> str:
    """The peer (``name`` and short address), linked to its page."""
    return format_html('<a href="{}">{}</a>', reverse("admin:channels_app_peer_change", args=[peer.pk]),
                       peer_label(peer.address, name))


def channel_link(channel: Channel) -> str:
    """The channel's short id, linked to its page (the whole id on hover)."""
    return format_html('<a href="{}">{}</a>', reverse("admin:channels_app_channel_change", args=[channel.pk]),
                       short(channel.channel_id))


class LinkedReadOnlyInline(ReadOnlyInline):
    show_change_link = True


class LatestFormSet(BaseInlineFormSet):
    """Only the latest ``LATEST`` rows of an inline (in the inline's order, newest first): a busy channel has
    thousands of trades, and a page listing them all took seconds and megabytes while other brokers waited."""

    def get_queryset(self):
        if not hasattr(self, "_latest"):
            self._latest = super().get_queryset()[:LATEST]
        return self._latest


@admin.register(Peer)
class PeerAdmin(admin.ModelAdmin):
    list_display = ["address_short", "known_as", "is_disabled", "connections_now", utc_column("first_seen"),
                    utc_column("last_seen")]
    list_filter = ["is_disabled"]
    search_fields = ["address", "name", "responded_channels__responder_name"]
    fields = ["address", "name", "known_as", "url", "is_disabled", CREATED, utc_column("first_seen"),
              utc_column("last_seen")]
    readonly_fields = ["address", "known_as", "is_disabled", *[f for f in fields if callable(f)]]
    actions = ["disable_peers", "enable_peers"]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(
            live=Count("connections", filter=selectors.live("connections__")), known=known_name())

    @admin.display(description="address", ordering="address")
    def address_short(self, peer):
        return short(peer.address)

    @admin.display(description="name", ordering="known")
    def known_as(self, peer):
        """Its own name, or the one an initiator gave it (said so on hover)."""
        if peer.name or not peer.known:
            return peer.name or "–"
        return format_html('<span title="{}">{}</span>', "as an initiator named it when opening a channel",
                           peer.known)

    @admin.display(description="online", ordering="live")
    def connections_now(self, peer):
        return peer.live

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.action(description="Disable selected peers (closes their connections)", permissions=["change"])
    def disable_peers(self, request, queryset):
        """Asks first, as the settlement actions do: disabling closes every live connection of a broker at once.
        The confirmation page posts the same action back with ``confirm=yes``."""
        if request.POST.get("confirm") != "yes":
            return self._confirm_disable(request, queryset)
        self._set_disabled(request, queryset, True)
        return None

    @admin.action(description="Enable selected peers", permissions=["change"])
    def enable_peers(self, request, queryset):
        self._set_disabled(request, queryset, False)

    def _confirm_disable(self, request, queryset):
        context = {
            **self.admin_site.each_context(request),
            "title": "Disable these peers?",
            "opts": self.model._meta,
            "peers": queryset,
            "action_checkbox_name": ACTION_CHECKBOX_NAME,
            "changelist_url": reverse("admin:channels_app_peer_changelist"),
        }
        return TemplateResponse(request, "admin/channels_app/peer/confirm_disable.html", context)

    def _set_disabled(self, request, queryset, disabled):
        for peer in queryset:
            set_peer_disabled(actor=admin_actor(request.user), user=request.user, peer_pk=peer.pk, disabled=disabled)
        self.message_user(request, f"{queryset.count()} peer(s) {'disabled' if disabled else 'enabled'}.",
                          messages.SUCCESS)


def side_view(position: Position, role: str) -> str:
    """One party's side; cost, value and PnL rounded to the quote asset's places (exact on hover), the amount as
    traded. The marks are read once per position shown (both sides use them)."""
    if not hasattr(position, "_backoffice_view"):
        position._backoffice_view = selectors.position_view(position, selectors.marks_for([position.market]))
    side, asset = position._backoffice_view.side(role), quote_asset(position.market)
    return format_html("{} {} · cost {} · value {} · pnl {} · realized {}", side.direction, fmt(side.amount),
                       money(side.cost, asset), money(side.market_value, asset), money(side.pnl, asset),
                       money(side.realized_pnl, asset))


class BothSides:
    """Columns with a position as each party sees it."""

    @admin.display(description="initiator's side")
    def initiator_side(self, position):
        return side_view(position, INITIATOR)

    @admin.display(description="responder's side")
    def responder_side(self, position):
        return side_view(position, RESPONDER)


class PositionInline(BothSides, LinkedReadOnlyInline):
    model = Position
    formset = LatestFormSet
    fields = ["market", "status", "initiator_side", "responder_side", "settle_price", UPDATED]
    readonly_fields = fields
    ordering = ["-id"]
    verbose_name_plural = f"positions (the latest {LATEST})"

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("channel")


@admin.display(description="recorded by")
def recorder(trade) -> str:
    """The party that recorded the trade, by its known name (on a channel's page: its own, else the one the
    channel's initiator gave it, read with the trade)."""
    peer, channel = trade.recorded_by, trade.channel
    known = getattr(trade, "recorder_known", None)  # annotated by the trade list (``known_name``)
    if known is None:
        known = peer.name or (channel.responder_name if peer.pk == channel.responder_id else "")
    return peer_label(peer.address, known)


EXECUTED = utc_column("executed_at", "executed", unix=True)
RECORDED = utc_column("recorded_at", "recorded")


class TradeInline(LinkedReadOnlyInline):
    model = Trade
    fk_name = "channel"
    formset = LatestFormSet
    fields = ["external_id", "market", "direction", recorder, "amount", "price", EXECUTED, RECORDED]
    readonly_fields = fields
    ordering = ["-id"]
    verbose_name_plural = f"trades (the latest {LATEST}, newest first)"

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("channel", "recorded_by")


class SettlementInline(LinkedReadOnlyInline):
    """The channel's settlements, each linked to its page (the ledger, the history, the actions)."""

    model = Settlement
    formset = LatestFormSet
    fields = [wire_column("state"), wire_column("payment_method", "method"), "markets_text", CREATED, UPDATED]
    readonly_fields = fields
    ordering = ["-id"]
    verbose_name_plural = f"settlements (the latest {LATEST})"

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("channel")

    @admin.display(description="markets")
    def markets_text(self, settlement):
        return ", ".join(settlement.markets)


class PeerFilter(admin.SimpleListFilter):
    """Channels (or, ``via`` them, trades) where the peer is either party."""

    title = "peer"
    parameter_name = "peer"
    via = ""

    def lookups(self, request, model_admin):
        peers = Peer.objects.annotate(known=known_name())[:200]
        return [(peer.pk, " ".join(filter(None, [peer.known, f"{peer.address[:6]}…{peer.address[-4:]}"])))
                for peer in peers]

    def queryset(self, request, queryset):
        if self.value() and self.value().isdigit():
            return queryset.filter(Q(**{f"{self.via}initiator_id": self.value()})
                                   | Q(**{f"{self.via}responder_id": self.value()}))
        return queryset


class TradePeerFilter(PeerFilter):
    via = "channel__"


class ChannelFilter(admin.SimpleListFilter):
    """Rows of one channel (trades, positions, settlements): the channel page's counts link here. Offers the
    channel chosen and the latest few, not every channel (there may be thousands)."""

    title = "channel"
    parameter_name = "channel"

    def lookups(self, request, model_admin):
        channels = list(Channel.objects.order_by("-id")[:10])
        if self.value() and self.value().isdigit() and all(str(c.pk) != self.value() for c in channels):
            channels = [*Channel.objects.filter(pk=self.value()), *channels]
        return [(str(c.pk), f"{c.channel_id[:6]}…{c.channel_id[-4:]}") for c in channels]

    def queryset(self, request, queryset):
        if self.value() and self.value().isdigit():
            return queryset.filter(channel_id=self.value())
        return queryset


def zone_badge(zone: str) -> str:
    """The zone coloured (templates/admin/base_site.html) and written, so it reads without the colour too."""
    if zone not in ZONE_VALUES:
        return format_html("{}", zone or "–")
    return format_html('<span class="zone zone-{}" title="{}">{}</span>', zone, DESCRIPTION[MarginZone(zone)], zone)


class WorstZoneFilter(admin.SimpleListFilter):
    """Channels by the worse of their two parties' zones (``dashboard.worst_zone_q``: each channel under one
    choice, as the dashboard counts it; its orange and red counts link here). One filter rather than one per party:
    the question is which channels are at risk, and the zone columns say which party is."""

    title = "worst margin zone"
    parameter_name = "zone"

    def lookups(self, request, model_admin):
        return [(zone.value, zone.value) for zone in MarginZone]

    def queryset(self, request, queryset):
        if self.value() in ZONE_VALUES:
            return queryset.filter(worst_zone_q(MarginZone(self.value())))
        return queryset


@admin.register(Channel)
class ChannelAdmin(ReadOnlyAdmin):
    list_display = ["channel_short", "initiator_short", "responder_short", STATUS, "deposit", "initiator_balance",
                    "initiator_zone_stored", "responder_balance", "responder_zone_stored", CREATED]
    list_filter = [("status", WireValueFilter), WorstZoneFilter, PeerFilter]
    search_fields = ["channel_id", "initiator__address", "responder__address", "initiator__name", "responder_name"]
    list_select_related = ["initiator", "responder"]
    date_hierarchy = "created_at"
    fields = ["channel_id", STATUS, "initiator_named", "responder_named", "responder_url", "nonce", "deposit",
              "initiator_balance", "initiator_zone_now", "responder_balance", "responder_zone_now", "margin_call",
              "history", CREATED, UPDATED]
    readonly_fields = fields
    inlines = [PositionInline, TradeInline, SettlementInline]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(
            initiator_known=known_name("initiator__"), responder_known=known_name("responder__", "responder_name"))

    @staticmethod
    def _view(channel):
        """The balances and their zones, read once per channel shown (each column or field asks for them)."""
        if not hasattr(channel, "_backoffice_view"):
            channel._backoffice_view = selectors.channel_view(channel)
        return channel._backoffice_view

    @admin.display(description="channel id", ordering="channel_id")
    def channel_short(self, channel):
        return short(channel.channel_id)

    @admin.display(description="initiator", ordering="initiator__address")
    def initiator_short(self, channel):
        return peer_label(channel.initiator.address, channel.initiator_known)

    @admin.display(description="responder", ordering="responder__address")
    def responder_short(self, channel):
        return peer_label(channel.responder.address, channel.responder_known)

    @admin.display(description="initiator")
    def initiator_named(self, channel):
        return format_html('<a href="{}">{}</a> <code>{}</code>', reverse(
            "admin:channels_app_peer_change", args=[channel.initiator_id]), channel.initiator_known or "–",
            channel.initiator.address)

    @admin.display(description="responder (named by the initiator)")
    def responder_named(self, channel):
        return format_html('<a href="{}">{}</a> <code>{}</code>', reverse(
            "admin:channels_app_peer_change", args=[channel.responder_id]), channel.responder_known or "–",
            channel.responder.address)

    @admin.display(description="margin deposit")
    def deposit(self, channel):
        return money(channel.margin_deposit)

    @admin.display(description="initiator balance")
    def initiator_balance(self, channel):
        return money(self._view(channel).margins.initiator)

    @admin.display(description="responder balance")
    def responder_balance(self, channel):
        return money(self._view(channel).margins.responder)

    @admin.display(description="initiator zone", ordering="initiator_zone")  # green < orange < red, as text too
    def initiator_zone_stored(self, channel):
        return zone_badge(channel.initiator_zone)

    @admin.display(description="responder zone", ordering="responder_zone")
    def responder_zone_stored(self, channel):
        return zone_badge(channel.responder_zone)

    @admin.display(description="initiator zone")
    def initiator_zone_now(self, channel):
        return zone_badge(self._view(channel).zones.initiator)

    @admin.display(description="responder zone")
    def responder_zone_now(self, channel):
        return zone_badge(self._view(channel).zones.responder)

    @admin.display(description="margin call")
    def margin_call(self, channel):
        """Due from the write that took the channel into red until the payment worker proposes the forced
        settlement (settlement/margin_calls.py); the error is why its last try could not (it tries again)."""
        if channel.margin_call_due_at is None:
            return "none pending"
        due = format_html('<strong class="margin-call-pending">pending since {}</strong>',
                          utc(channel.margin_call_due_at))
        if not channel.margin_call_error:
            return due
        return format_html('{}<br>could not start yet: <span class="margin-call-error">{}</span>', due,
                           channel.margin_call_error)

    @admin.display(description="history")
    def history(self, channel):
        """How many of each the channel has, each count linked to the full list of them (filtered by the channel,
        newest first): the page below shows only the latest ``LATEST``."""
        counts = [("trades", "admin:channels_app_trade_changelist", channel.trades.count()),
                  ("positions", "admin:channels_app_position_changelist", channel.positions.count()),
                  ("settlements", "admin:settlement_settlement_changelist", channel.settlements.count())]
        return format_html_join(" · ", '<a href="{}?channel={}" id="all-{}">{} {}</a>',
                                ((reverse(url), channel.pk, kind, count, kind) for kind, url, count in counts))


@admin.register(Trade)
class TradeAdmin(ReadOnlyAdmin):
    list_display = ["external_id", "channel_short", "market", "direction", "recorder_short", "amount", "price",
                    EXECUTED, RECORDED]
    list_filter = [ChannelFilter, TradePeerFilter, "market", "direction"]
    search_fields = ["external_id", "channel__channel_id", "recorded_by__address"]
    list_select_related = ["channel", "recorded_by"]
    date_hierarchy = "recorded_at"
    ordering = ["-id"]  # newest first (the order they were recorded in; ``executed_at`` is the brokers' clock)
    fields = ["external_id", "channel_short", "market", "direction", "initiator_direction", "recorder_short",
              "amount", "price", EXECUTED, RECORDED, "position"]
    readonly_fields = fields

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(recorder_known=known_name("recorded_by__"))

    @admin.display(description="channel", ordering="channel__channel_id")
    def channel_short(self, trade):
        return channel_link(trade.channel)

    @admin.display(description="recorded by", ordering="recorded_by__address")
    def recorder_short(self, trade):
        return recorder(trade)


@admin.register(Position)
class PositionAdmin(BothSides, ReadOnlyAdmin):
    list_display = ["id", "channel_short", "market", STATUS, "initiator_side", "responder_side", UPDATED]
    list_filter = [ChannelFilter, ("status", WireValueFilter), "market"]
    search_fields = ["channel__channel_id", "market"]
    list_select_related = ["channel"]
    ordering = ["-id"]
    readonly_fields = ["initiator_side", "responder_side"]

    @admin.display(description="channel", ordering="channel__channel_id")
    def channel_short(self, position):
        return channel_link(position.channel)


class MarkPriceForm(forms.ModelForm):
    """Prices as decimal strings, validated as the protocol validates them (no exponent, no float)."""

    price = forms.CharField(help_text="Decimal string, e.g. 1834.25")

    class Meta:
        model = MarkPrice
        fields = ["market", "price"]

    def clean_market(self):
        market = self.cleaned_data["market"].strip()
        if not MARKET_RE.fullmatch(market):
            raise forms.ValidationError("BASE/QUOTE, 1-16 upper-case letters or digits each, e.g. ETH/USDT")
        return market

    def clean_price(self):
        try:
            return parse_amount(self.cleaned_data["price"].strip())
        except DecimalInputError as exc:
            raise forms.ValidationError(f"price {exc}") from None


@admin.register(MarkPrice)
class MarkPriceAdmin(admin.ModelAdmin):
    """Saving a mark revalues every position in that market and notifies both parties of each channel."""

    form = MarkPriceForm
    list_display = ["market", "price", "source", UPDATED]
    search_fields = ["market"]

    def get_readonly_fields(self, request, obj=None):
        return ["market"] if obj is not None else []

    def has_delete_permission(self, request, obj=None):
        return False

    def save_model(self, request, obj, form, change):
        mark = set_mark(actor=admin_actor(request.user), user=request.user, market=form.cleaned_data.get(
            "market", obj.market), price=form.cleaned_data["price"])
        obj.pk, obj.price, obj.updated_at = mark.pk, mark.price, mark.updated_at


class LeaseFilter(admin.SimpleListFilter):
    """Live rows count (connection limit, dashboard); expired ones are a crashed process's, deleted soon."""

    title = "lease"
    parameter_name = "lease"

    def lookups(self, request, model_admin):
        return [("live", "live"), ("expired", "expired")]

    def queryset(self, request, queryset):
        if self.value() == "live":
            return queryset.filter(selectors.LIVE)
        if self.value() == "expired":
            return queryset.exclude(selectors.LIVE)
        return queryset


@admin.register(PeerConnection)
class PeerConnectionAdmin(ReadOnlyAdmin):
    list_display = ["peer_short", "client_address", "server", utc_column("connected_at", "connected"),
                    utc_column("expires_at", "lease ends"), "is_live"]
    list_filter = [LeaseFilter]
    search_fields = ["peer__address", "peer__name"]
    list_select_related = ["peer"]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(
            live=ExpressionWrapper(selectors.LIVE, output_field=BooleanField()))

    @admin.display(description="peer", ordering="peer__address")
    def peer_short(self, connection):
        return peer_link(connection.peer, connection.peer.name)

    @admin.display(description="live", boolean=True, ordering="live")
    def is_live(self, connection):
        return connection.live
