"""Settlements of a channel's positions, and every state change they went through (time and actor)."""
from django.db import models
from django.db.models import Q

from channels_app.models import Channel, Peer, Position


class SettlementState(models.TextChoices):
    PROPOSED = "proposed"
    ACCEPTED = "accepted"
    INITIATED = "initiated"
    PREPARED = "prepared"
    EXECUTED = "executed"
    COMPLETED = "completed"
    FAILED = "failed"
    REJECTED = "rejected"


TERMINAL_STATES = frozenset({SettlementState.COMPLETED, SettlementState.FAILED, SettlementState.REJECTED})


class PaymentMethod(models.TextChoices):
    ESCROW = "escrow"
    MOCK = "mock"


class Settlement(models.Model):
    channel = models.ForeignKey(Channel, on_delete=models.PROTECT, related_name="settlements")
    requested_by = models.ForeignKey(
        Peer, null=True, blank=True, on_delete=models.PROTECT, related_name="requested_settlements",
        help_text="Empty when the operator (a command or back office) proposed it",
    )
    payment_method = models.CharField(max_length=16, choices=PaymentMethod.choices)
    chain_id = models.PositiveBigIntegerField()
    markets = models.JSONField(help_text="Markets settled, as requested")
    ledger = models.JSONField(help_text="Per QUOTE asset: what each side owes the other (net), decimal strings")
    positions = models.ManyToManyField(Position, related_name="settlements", blank=True)
    state = models.CharField(max_length=16, choices=SettlementState.choices, default=SettlementState.PROPOSED)
    accept_by_policy = models.BooleanField(
        default=False, help_text="Made under the auto acceptance policy: the operator accepts it (at once, or the "
        "payment worker's next round if that was cut off)")
    payment_reference = models.CharField(max_length=200, blank=True, help_text="From the payment method")
    escrow = models.JSONField(
        null=True, blank=True, help_text="The escrow as brokers see it (docs/escrow.md section 4): contract, id, "
        "deadline, legs with their funded flags, transactions; recorded before the worker waits on the chain")
    payment_state = models.JSONField(
        default=dict, blank=True, help_text="The payment worker's own bookkeeping (a transaction signed and recorded "
        "before it was sent, so a restarted worker finds it again); never shown to brokers")
    last_error = models.TextField(blank=True, help_text="The payment worker's latest error while retrying; empty once "
                                  "a step succeeds")
    attempts = models.PositiveIntegerField(default=0, help_text="Failed attempts of the current step (backoff)")
    next_attempt_at = models.DateTimeField(null=True, blank=True, help_text="The worker retries the step from then")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        permissions = [("act_on_settlement", "Can accept, reject, fail or retry a settlement")]
        constraints = [
            models.UniqueConstraint(
                fields=["channel"],
                condition=~Q(state__in=sorted(s.value for s in TERMINAL_STATES)),  # sorted: a set has no stable order
                name="one_active_settlement_per_channel",
            )
        ]

    def __str__(self):
        return f"Settlement {self.pk} of {self.channel.channel_id[:10]}… ({self.state})"

    @property
    def is_active(self) -> bool:
        return self.state not in TERMINAL_STATES


class SettlementTransition(models.Model):
    settlement = models.ForeignKey(Settlement, on_delete=models.CASCADE, related_name="transitions")
    from_state = models.CharField(max_length=16, blank=True)
    to_state = models.CharField(max_length=16, choices=SettlementState.choices)
    actor = models.CharField(max_length=100, help_text='"peer:0x…", "operator" (policy/payment) or "admin:<user>"')
    note = models.TextField(blank=True)
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["at", "id"]

    def __str__(self):
        return f"{self.from_state or '∅'} → {self.to_state} by {self.actor}"


class SettlementLogEntry(models.Model):
    """What the payment worker met while driving a settlement: each distinct error once, and what it adopted."""

    settlement = models.ForeignKey(Settlement, on_delete=models.CASCADE, related_name="log")
    state = models.CharField(max_length=16, help_text="The settlement's state when it happened")
    message = models.TextField()
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["at", "id"]
        verbose_name_plural = "settlement log entries"

    def __str__(self):
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.state}: {self.message[:80]}"


class WorkerLease(models.Model):
    """Who may send payment transactions now: one holder at a time (the operator key has one nonce sequence).

    A worker holds the lease while it renews it; a standby takes it over once it expires (its holder died)."""

    name = models.CharField(max_length=64, unique=True)
    holder = models.CharField(max_length=200)
    expires_at = models.DateTimeField()

    def __str__(self):
        return f"{self.name}: {self.holder} until {self.expires_at:%H:%M:%S}"
