"""Back office views of peers, channels, trades, positions and marks.

Reads go through the domain's selectors (figures from each side, balances from the one margin function); writes go
through ``backoffice.actions`` (audited, and through the domain services). Trades and positions are never edited
here.

Margin zones (channels_app/risk.py) show as a coloured badge with the zone's name written in it. The channel list
shows and filters the stored zones (``Channel.initiator_zone``, ``responder_zone``: no balance computed to filter);
the channel page shows the zones of the balances it shows (``selectors.channel_view``), and a pending margin call.
"""
from datetime import timezone

from django import forms
from django.contrib import admin, messages
from django.db.models import BooleanField, Count, ExpressionWrapper, Q
from django.utils.html import format_html

from backoffice.actions import set_mark, set_peer_disabled
from backoffice.admin.readonly import ReadOnlyAdmin, ReadOnlyInline
from backoffice.audit import admin_actor
from backoffice.dashboard import worst_zone_q
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


class LinkedReadOnlyInline(ReadOnlyInline):
    show_change_link = True


@admin.register(Peer)
class PeerAdmin(admin.ModelAdmin):
    list_display = ["address", "name", "is_disabled", "connections_now", "first_seen", "last_seen"]
    list_filter = ["is_disabled"]
    search_fields = ["address", "name"]
    fields = ["address", "name", "url", "is_disabled", "created_at", "first_seen", "last_seen"]
    readonly_fields = ["address", "is_disabled", "created_at", "first_seen", "last_seen"]
    actions = ["disable_peers", "enable_peers"]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(live=Count("connections", filter=selectors.live("connections__")))

    @admin.display(description="online", ordering="live")
    def connections_now(self, peer):
        return peer.live

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.action(description="Disable selected peers (closes their connections)", permissions=["change"])
    def disable_peers(self, request, queryset):
        self._set_disabled(request, queryset, True)

    @admin.action(description="Enable selected peers", permissions=["change"])
    def enable_peers(self, request, queryset):
        self._set_disabled(request, queryset, False)

    def _set_disabled(self, request, queryset, disabled):
        for peer in queryset:
            set_peer_disabled(actor=admin_actor(request.user), user=request.user, peer_pk=peer.pk, disabled=disabled)
        self.message_user(request, f"{queryset.count()} peer(s) {'disabled' if disabled else 'enabled'}.",
                          messages.SUCCESS)


def side_view(position: Position, role: str) -> str:
    side = selectors.position_view(position, selectors.marks_for([position.market])).side(role)
    return (f"{side.direction} {fmt(side.amount)} · cost {fmt(side.cost)} · value {fmt(side.market_value)} · "
            f"pnl {fmt(side.pnl)} · realized {fmt(side.realized_pnl)}")


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
    fields = ["market", "status", "initiator_side", "responder_side", "settle_price", "updated_at"]
    readonly_fields = fields
    ordering = ["-id"]


class TradeInline(LinkedReadOnlyInline):
    model = Trade
    fk_name = "channel"
    fields = ["external_id", "market", "direction", "recorded_by", "amount", "price", "executed_at", "recorded_at"]
    readonly_fields = fields
    ordering = ["-id"]


class PeerFilter(admin.SimpleListFilter):
    """Channels where the peer is either party."""

    title = "peer"
    parameter_name = "peer"

    def lookups(self, request, model_admin):
        return [(peer.pk, str(peer)) for peer in Peer.objects.all()[:200]]

    def queryset(self, request, queryset):
        if self.value():
            return queryset.filter(Q(initiator_id=self.value()) | Q(responder_id=self.value()))
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
    list_display = ["channel_id", "initiator", "responder", "status", "margin_deposit", "initiator_balance",
                    "initiator_zone_stored", "responder_balance", "responder_zone_stored", "created_at"]
    list_filter = ["status", WorstZoneFilter, PeerFilter]
    search_fields = ["channel_id", "initiator__address", "responder__address", "initiator__name", "responder_name"]
    list_select_related = ["initiator", "responder"]
    fields = ["channel_id", "status", "initiator", "responder", "responder_name", "responder_url", "nonce",
              "margin_deposit", "initiator_balance", "initiator_zone_now", "responder_balance", "responder_zone_now",
              "margin_call", "created_at", "updated_at"]
    readonly_fields = fields
    inlines = [PositionInline, TradeInline]

    @staticmethod
    def _view(channel):
        """The balances and their zones, read once per channel shown (each column or field asks for them)."""
        if not hasattr(channel, "_backoffice_view"):
            channel._backoffice_view = selectors.channel_view(channel)
        return channel._backoffice_view

    @admin.display(description="initiator balance")
    def initiator_balance(self, channel):
        return fmt(self._view(channel).margins.initiator)

    @admin.display(description="responder balance")
    def responder_balance(self, channel):
        return fmt(self._view(channel).margins.responder)

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
        due = format_html('<strong class="margin-call-pending">pending since {} UTC</strong>',
                          channel.margin_call_due_at.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S"))
        if not channel.margin_call_error:
            return due
        return format_html('{}<br>could not start yet: <span class="margin-call-error">{}</span>', due,
                           channel.margin_call_error)


@admin.register(Trade)
class TradeAdmin(ReadOnlyAdmin):
    list_display = ["external_id", "channel", "market", "direction", "recorded_by", "amount", "price",
                    "executed_at", "recorded_at"]
    list_filter = ["market", "direction"]
    search_fields = ["external_id", "channel__channel_id", "recorded_by__address"]
    list_select_related = ["channel", "recorded_by"]
    date_hierarchy = "recorded_at"


@admin.register(Position)
class PositionAdmin(BothSides, ReadOnlyAdmin):
    list_display = ["id", "channel", "market", "status", "initiator_side", "responder_side", "updated_at"]
    list_filter = ["status", "market"]
    search_fields = ["channel__channel_id", "market"]
    list_select_related = ["channel"]
    readonly_fields = ["initiator_side", "responder_side"]


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
    list_display = ["market", "price", "source", "updated_at"]
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
    list_display = ["peer", "client_address", "server", "connected_at", "expires_at", "is_live"]
    list_filter = [LeaseFilter]
    search_fields = ["peer__address", "peer__name"]
    list_select_related = ["peer"]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(
            live=ExpressionWrapper(selectors.LIVE, output_field=BooleanField()))

    @admin.display(description="live", boolean=True, ordering="live")
    def is_live(self, connection):
        return connection.live
