"""Rebuilding positions from the trade ledger: the check that stored books are what the trades say they are."""
from collections.abc import Callable
from dataclasses import dataclass

from django.db import transaction
from django.db.models import Q

from channels_app import accounting
from channels_app.models import POSITION_TRANSITIONS, Channel, Position, PositionStatus, Trade
from channels_app.statemachine import move
from channels_app.valuation import refresh_closed_pnl


@dataclass(frozen=True)
class Drift:
    position: Position
    stored: accounting.Book
    expected: accounting.Book
    fixed: bool


def expected_book(position: Position) -> accounting.Book:
    """The book the ledger gives: this position's trades, and those of positions merged into it, in order."""
    if position.merged_into_id is not None:
        return accounting.Book()  # its trades now live in the position it was merged into
    trades = Trade.objects.filter(Q(position=position) | Q(position__merged_into=position)).order_by("id")
    return accounting.replay(trades.values_list("initiator_direction", "amount", "price"))


def recompute_positions(*, channel_id: str | None = None, fix: bool = False,
                        progress: Callable[[int, int], None] | None = None,
                        on_fix: Callable[[Drift], None] | None = None) -> list[Drift]:
    """Compare every position (of one channel, or all) with its ledger rebuild; ``fix`` rewrites drifted ones.

    Settled positions are reported but never rewritten: their PnL has been paid. ``on_fix`` runs inside the
    transaction of each rewrite (the audit entry commits with it). ``fix`` also re-sums ``Channel.closed_pnl``.
    """
    channels = Channel.objects.order_by("id")
    if channel_id is not None:
        channels = channels.filter(channel_id=channel_id.lower())
        if not channels.exists():
            raise Channel.DoesNotExist(f"no channel {channel_id}")
    drifts: list[Drift] = []
    total = channels.count()
    for done, channel in enumerate(channels.iterator(), start=1):
        with transaction.atomic():
            Channel.objects.select_for_update().filter(pk=channel.pk).first()  # no trade lands meanwhile
            for position in channel.positions.order_by("id"):
                expected, stored = expected_book(position), position.book
                if expected == stored:
                    continue
                fixable = fix and position.status != PositionStatus.SETTLED
                if fixable:
                    position.set_book(expected)
                    if expected.is_flat and position.status == PositionStatus.OPEN:
                        move(position, PositionStatus.CLOSED, table=POSITION_TRANSITIONS)
                    position.save()
                drift = Drift(position, stored, expected, fixable)
                if fixable and on_fix:
                    on_fix(drift)
                drifts.append(drift)
            if fix:
                refresh_closed_pnl(channel)  # fixed books may have closed a position or changed a closed one's PnL
        if progress:
            progress(done, total)
    return drifts
