"""Peers, channels, trades, positions and mark prices.

Positions are stored from the channel initiator's point of view (signed quantity); every figure a peer sees is
derived for that peer from the domain values (channels_app.values). Trades are the ledger: written once, never edited.
"""
from django.db import models
from django.db.models import Q
from django.db.models.functions import Now

from channels_app.accounting import Book
from channels_app.formats import no_control_characters
from channels_app.money import ZERO, ExactDecimalField
from channels_app.risk import MarginZone
from channels_app.values import INITIATOR, RESPONDER


class Peer(models.Model):
    """A broker, identified by its Ethereum address (stored EIP-55 checksummed)."""

    address = models.CharField(max_length=42, unique=True)
    name = models.CharField(max_length=64, blank=True, validators=[no_control_characters])
    url = models.CharField(max_length=200, blank=True, validators=[no_control_characters])
    is_disabled = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    first_seen = models.DateTimeField(null=True, blank=True, help_text="First successful authentication")
    last_seen = models.DateTimeField(null=True, blank=True, help_text="Latest successful authentication")

    class Meta:
        ordering = ["address"]

    def __str__(self):
        return f"{self.name} ({self.address})" if self.name else self.address


class ChannelStatus(models.TextChoices):
    OPENING = "opening"
    OPENED = "opened"
    SETTLING = "settling"
    CLOSING = "closing"
    CLOSED = "closed"


CHANNEL_TRANSITIONS = {
    # opening -> closed: the proposal was withdrawn (close_channel) or not accepted in time (expired)
    ChannelStatus.OPENING: frozenset({ChannelStatus.OPENED, ChannelStatus.CLOSED}),
    ChannelStatus.OPENED: frozenset({ChannelStatus.SETTLING, ChannelStatus.CLOSING}),
    ChannelStatus.SETTLING: frozenset({ChannelStatus.OPENED}),
    ChannelStatus.CLOSING: frozenset({ChannelStatus.CLOSED}),
}
TRADING_STATUSES = frozenset({ChannelStatus.OPENED, ChannelStatus.SETTLING})
ZONE_VALUES = [zone.value for zone in MarginZone]
ZONE_CHOICES = [(zone, zone.capitalize()) for zone in ZONE_VALUES]


class Channel(models.Model):
    channel_id = models.CharField(max_length=66, unique=True, help_text="0x + 64 hex, derived as Nitro does")
    initiator = models.ForeignKey(Peer, on_delete=models.PROTECT, related_name="initiated_channels")
    responder = models.ForeignKey(Peer, on_delete=models.PROTECT, related_name="responded_channels")
    nonce = models.PositiveBigIntegerField()
    margin_deposit = ExactDecimalField()
    closed_pnl = ExactDecimalField(
        default=ZERO, help_text="Realized PnL (initiator's side) of its closed, unsettled positions: kept here so a "
        "trade does not sum them; every margin balance is computed from it (channels_app.selectors.margins)")
    status = models.CharField(max_length=16, choices=ChannelStatus.choices, default=ChannelStatus.OPENING)
    # The zones of the latest balances a write computed (trade, mark, settlement): what the back office lists and
    # filters on, and how an entry into red is told from a stay in it. Replies compute them afresh.
    initiator_zone = models.CharField(max_length=8, choices=ZONE_CHOICES, default=MarginZone.GREEN.value)
    responder_zone = models.CharField(max_length=8, choices=ZONE_CHOICES, default=MarginZone.GREEN.value)
    margin_call_due_at = models.DateTimeField(
        null=True, blank=True, help_text="Entered red then: the payment worker starts its forced settlement "
        "(settlement/margin_calls.py) and clears this")
    margin_call_error = models.CharField(max_length=2000, blank=True,
                                         help_text="Why the forced settlement could not start yet")
    responder_name = models.CharField(max_length=64, blank=True, help_text="As the initiator named its peer")
    responder_url = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["initiator", "responder", "nonce"], name="channel_pair_nonce_unique"),
            models.CheckConstraint(condition=~Q(initiator=models.F("responder")), name="channel_distinct_parties"),
            models.CheckConstraint(condition=Q(initiator_zone__in=ZONE_VALUES) & Q(responder_zone__in=ZONE_VALUES),
                                   name="channel_zone_valid"),
        ]

    def __str__(self):
        return self.channel_id

    def role_of(self, peer_id: int) -> str | None:
        if peer_id == self.initiator_id:
            return INITIATOR
        if peer_id == self.responder_id:
            return RESPONDER
        return None


# A channel's trades by external id: an id recorded again is a replay (the trade path counts on this constraint to
# refuse one it took for new: channels_app/tradestore.py).
TRADE_EXTERNAL_ID_UNIQUE = "trade_external_id_unique"
# A trade's position is of the trade's own channel: on PostgreSQL one composite foreign key checks both references
# (``trade_position_of_its_channel``, migration 0007: Django 5.2 cannot declare one, so the trade's ``channel`` and
# ``position`` say ``db_constraint=False``; docs/protocol.md, Storage). This unique key is what it refers to.
POSITION_KEY_WITH_CHANNEL = "position_key_with_channel"


class Trade(models.Model):
    """One execution between the two parties, as recorded by one of them. Immutable once stored."""

    # No index of its own: the unique (channel, external_id) leads with it (one index less to write a trade). No
    # foreign key of its own on PostgreSQL either: trade_position_of_its_channel checks it with the position.
    channel = models.ForeignKey(Channel, on_delete=models.PROTECT, related_name="trades", db_index=False,
                                db_constraint=False)
    external_id = models.CharField(max_length=128)
    recorded_by = models.ForeignKey(Peer, on_delete=models.PROTECT, related_name="recorded_trades")
    market = models.CharField(max_length=33)
    direction = models.CharField(max_length=4, help_text="As the recording peer sent it")
    initiator_direction = models.CharField(max_length=4, help_text="The same trade from the initiator's side")
    amount = ExactDecimalField()
    price = ExactDecimalField()
    executed_at = models.BigIntegerField(help_text="Unix seconds")
    recorded_at = models.DateTimeField(auto_now_add=True)
    position = models.ForeignKey(
        "Position", on_delete=models.PROTECT, related_name="trades", help_text="The position it was booked to",
        db_constraint=False,  # trade_position_of_its_channel (above)
    )

    class Meta:
        ordering = ["id"]
        constraints = [models.UniqueConstraint(fields=["channel", "external_id"], name=TRADE_EXTERNAL_ID_UNIQUE)]

    def __str__(self):
        return f"{self.external_id}: {self.direction} {self.amount} {self.market} @ {self.price}"

    def save(self, *args, **kwargs):
        if self.pk is not None and not kwargs.get("force_insert"):
            raise ValueError("a recorded trade is never edited")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise ValueError("a recorded trade is never deleted")


class PositionStatus(models.TextChoices):
    OPEN = "open"
    IN_SETTLEMENT = "in_settlement"
    SETTLED = "settled"
    CLOSED = "closed"


POSITION_TRANSITIONS = {
    PositionStatus.OPEN: frozenset({PositionStatus.CLOSED, PositionStatus.IN_SETTLEMENT}),
    PositionStatus.IN_SETTLEMENT: frozenset({PositionStatus.OPEN, PositionStatus.SETTLED}),
    PositionStatus.CLOSED: frozenset({PositionStatus.SETTLED}),  # flat, its realized PnL paid by a settlement
}
LIVE_POSITION_STATUSES = (PositionStatus.OPEN, PositionStatus.IN_SETTLEMENT)
UNSETTLED_POSITION_STATUSES = (PositionStatus.OPEN, PositionStatus.IN_SETTLEMENT, PositionStatus.CLOSED)


class Position(models.Model):
    """Net of the trades in one market of one channel, from the initiator's side (``quantity`` signed)."""

    # No index of its own: the (channel, status) index leads with it.
    channel = models.ForeignKey(Channel, on_delete=models.PROTECT, related_name="positions", db_index=False)
    market = models.CharField(max_length=33)
    status = models.CharField(max_length=16, choices=PositionStatus.choices, default=PositionStatus.OPEN)
    quantity = ExactDecimalField(default=ZERO, help_text="Signed, initiator's side: + long, - short")
    cost = ExactDecimalField(default=ZERO)
    realized_pnl = ExactDecimalField(default=ZERO, help_text="Initiator's side")
    last_price = ExactDecimalField(help_text="Price of the latest trade: the mark until back office sets one")
    settle_price = ExactDecimalField(null=True, blank=True, help_text="Mark frozen when a settlement took it")
    merged_into = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="absorbed",
        help_text="Set when a failed settlement folded this position's trades into the unfrozen one",
    )
    opened_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["channel_id", "market", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["channel", "market"], condition=Q(status="open"), name="one_open_position_per_market"
            ),
            models.UniqueConstraint(fields=["id", "channel"], name=POSITION_KEY_WITH_CHANNEL),
        ]
        indexes = [models.Index(fields=["channel", "status"])]

    def __str__(self):
        return f"{self.market} {self.quantity} ({self.status})"

    @property
    def book(self) -> Book:
        return Book(self.quantity, self.cost, self.realized_pnl)

    def set_book(self, book: Book) -> None:
        self.quantity, self.cost, self.realized_pnl = book.quantity, book.cost, book.realized_pnl


class MarkPrice(models.Model):
    """The latest mark per market, set by back office, a command or a feed; it overrides last trade prices."""

    market = models.CharField(max_length=33, unique=True)
    price = ExactDecimalField()
    source = models.CharField(max_length=64, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["market"]

    def __str__(self):
        return f"{self.market} @ {self.price}"


class PeerConnection(models.Model):
    """An authenticated WebSocket connection (presence: the connection limit, back office), held as a lease: its
    serving process renews ``expires_at`` every heartbeat; it counts only while ``expires_at`` is in the future
    (``channels_app.selectors.LIVE``). Removed on disconnect; a crashed process's rows expire within a lease
    wherever it ran, and are deleted later (``presence.sweep_expired``)."""

    peer = models.ForeignKey(Peer, on_delete=models.CASCADE, related_name="connections")
    channel_name = models.CharField(max_length=200, unique=True)
    server = models.CharField(max_length=200, db_index=True,
                              help_text="host:pid:nonce of the serving process (the nonce tells a restart apart)")
    client_address = models.CharField(max_length=100, blank=True)
    connected_at = models.DateTimeField(auto_now_add=True)
    # Written without a lease (the rows that predate leases, included): expired at once.
    expires_at = models.DateTimeField(db_index=True, db_default=Now(), help_text="end of the lease (database clock)")

    class Meta:
        ordering = ["-connected_at"]

    def __str__(self):
        return f"{self.peer.address} via {self.server}"
