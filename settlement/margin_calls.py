"""Margin calls: the forced settlement of a channel that entered red (docs/protocol.md section 7).

The write that moved the channel into red recorded the intent (``Channel.margin_call_due_at``,
channels_app/services/zones.py); the payment worker's rounds start it here, outside that request: the operator
proposes a settlement of every market with an open position, at the mark (the ``settle`` path, with
``MARGIN_FORCED_SETTLEMENT_METHOD``), then applies the acceptance policy. Once per entry into red: the intent is
cleared in the same transaction as the proposal; a channel that left red meanwhile, or already has a settlement
under way, gets none. A method not available yet (escrow before its chain was checked) leaves the intent due,
with the reason on the channel, and the next round tries again.
"""
import logging

from django.conf import settings
from django.db import transaction

from channels_app import risk, selectors
from channels_app.errors import DomainError
from channels_app.models import Channel, ChannelStatus, PositionStatus
from settlement import services
from settlement.models import TERMINAL_STATES, Settlement
from settlement.payments.base import get_backend

logger = logging.getLogger(__name__)


def start_due() -> int:
    """Start every due margin call; the number of settlements proposed."""
    started = 0
    for channel_pk in Channel.objects.filter(margin_call_due_at__isnull=False).order_by("pk").values_list(
            "pk", flat=True):
        settlement = start(channel_pk=channel_pk)
        if settlement is not None:
            started += 1
            services.apply_accept_policy(settlement_pk=settlement.pk)
    return started


def start(*, channel_pk: int) -> Settlement | None:
    """The forced settlement of one channel, if its margin call is still due (one transaction, channel locked)."""
    with transaction.atomic():
        channel = Channel.objects.select_for_update(of=("self",)).select_related("initiator", "responder").get(
            pk=channel_pk)
        if channel.margin_call_due_at is None:
            return None  # another worker started it, or the channel left red
        balances = selectors.margins(channel)
        zones = risk.zones(balances, channel.margin_deposit)
        busy = channel.settlements.exclude(state__in=[s.value for s in TERMINAL_STATES]).exists()
        if zones.worst != risk.MarginZone.RED or busy or channel.status != ChannelStatus.OPENED:
            _clear(channel)  # out of red, or a settlement already under way: nothing is duplicated
            return None
        markets = sorted(set(channel.positions.filter(status=PositionStatus.OPEN).values_list("market", flat=True)))
        if not markets:  # red from realized losses alone: settle the flat positions that carry them
            markets = sorted(set(channel.positions.filter(status=PositionStatus.CLOSED).values_list(
                "market", flat=True)))
        if not markets:
            _clear(channel)
            return None
        method = settings.MARGIN_FORCED_SETTLEMENT_METHOD
        note = ("margin call: " + ", ".join(f"{name} balance {balance} in {zone}" for name, balance, zone in zip(
            ("initiator", "responder"), balances, zones)) + f"; forced settlement of {', '.join(markets)}")
        try:
            with transaction.atomic():  # a refusal leaves nothing of the proposal behind
                settlement = services.propose_forced(channel, payment_method=method, markets=markets, note=note,
                                                     chain_id=get_backend(method).operator_chain_id())
        except DomainError as exc:
            if exc.message[:2000] != channel.margin_call_error:  # said once per distinct reason
                logger.warning("margin call on %s cannot start yet: %s", channel.channel_id, exc.message)
                Channel.objects.filter(pk=channel.pk).update(margin_call_error=exc.message[:2000])
            return None
        _clear(channel)
    logger.info("margin call on %s: settlement %s proposed (%s)", channel.channel_id, settlement.pk, note)
    return settlement


def _clear(channel: Channel) -> None:
    Channel.objects.filter(pk=channel.pk).update(margin_call_due_at=None, margin_call_error="")
