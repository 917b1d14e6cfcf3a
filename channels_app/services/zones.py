"""Keeping a channel's margin zones, and recording a margin call when it enters red.

Every write that moves a channel's balances (a trade, a mark, a settlement completing or failing) calls ``track``
with the new balances, in its transaction and holding the channel's row lock. Entering red records the intent of a
forced settlement (``Channel.margin_call_due_at``); the payment worker starts it (settlement/margin_calls.py),
outside the request, so a trade or a mark never waits on a payment method.
"""
from django.utils import timezone

from channels_app import risk
from channels_app.models import Channel
from channels_app.risk import MarginZone, Zones
from channels_app.values import Margins


def track(channel: Channel, balances: Margins) -> Zones:
    """Store the zones of ``balances``; an entry into red (from green or orange) makes a margin call due, and
    leaving red before the worker acted withdraws it. Returns the zones."""
    now, fields = changes(channel, balances)
    if fields:
        Channel.objects.filter(pk=channel.pk).update(**fields)
    return now


def changes(channel: Channel, balances: Margins) -> tuple[Zones, dict]:
    """The zones of ``balances`` and the channel fields that change with them (set on ``channel`` too), for a caller
    that writes them itself (the trade path, in its one write)."""
    now = risk.zones(balances, channel.margin_deposit)
    was_red = MarginZone.RED in (channel.initiator_zone, channel.responder_zone)
    is_red = now.worst == MarginZone.RED
    fields = {}
    if (channel.initiator_zone, channel.responder_zone) != tuple(now):
        fields.update(initiator_zone=now.initiator.value, responder_zone=now.responder.value)
    if is_red and not was_red:
        fields.update(margin_call_due_at=timezone.now(), margin_call_error="")
    elif not is_red and channel.margin_call_due_at is not None:
        fields.update(margin_call_due_at=None, margin_call_error="")
    for name, value in fields.items():
        setattr(channel, name, value)
    return now, fields
