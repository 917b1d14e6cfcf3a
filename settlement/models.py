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
    payment_reference = models.CharField(max_length=200, blank=True, help_text="From the payment method")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        permissions = [("act_on_settlement", "Can accept, reject, fail, retry or resume a settlement")]
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
