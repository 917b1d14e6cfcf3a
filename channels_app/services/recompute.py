"""Rebuilding positions from the trade ledger, and each channel's running total from its rows: the check that
what is stored is what the trades say."""
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from django.db import transaction
from django.db.models import Q

from channels_app import accounting, selectors
from channels_app.errors import Code, DomainError
from channels_app.models import POSITION_TRANSITIONS, Channel, ChannelStatus, Position, PositionStatus, Trade
from channels_app.services import zones
from channels_app.statemachine import move


@dataclass(frozen=True)
class Drift:
    position: Position
    stored: accounting.Book
    expected: accounting.Book
    fixed: bool


@dataclass(frozen=True)
class TotalDrift:
    """``Channel.closed_pnl`` differs from the sum of its closed, unsettled rows (after any position fix)."""

    channel: Channel
    stored: Decimal
    expected: Decimal
    fixed: bool


@dataclass(frozen=True)
class Report:
    positions: list[Drift]
    totals: list[TotalDrift]

    @property
    def unfixed(self) -> int:
        return sum(not d.fixed for d in self.positions) + sum(not d.fixed for d in self.totals)


def expected_book(position: Position) -> accounting.Book:
    """The book the ledger gives: this position's trades, and those of positions merged into it, in order."""
    if position.merged_into_id is not None:
        return accounting.Book()  # its trades now live in the position it was merged into
    trades = Trade.objects.filter(Q(position=position) | Q(position__merged_into=position)).order_by("id")
    return accounting.replay(trades.values_list("initiator_direction", "amount", "price"))


def refresh_closed_pnl(channel: Channel) -> None:
    """Re-sum ``Channel.closed_pnl`` after positions left or joined the closed ones other than by a trade
    (settlement paid or failed, ledger rebuild). A trade adds to it directly. The caller holds the channel lock."""
    channel.closed_pnl = selectors.closed_pnl_from_rows(channel)
    channel.save(update_fields=["closed_pnl"])


def recompute_positions(*, channel_id: str | None = None, fix: bool = False,
                        progress: Callable[[int, int], None] | None = None,
                        on_fix: Callable[[Drift | TotalDrift], None] | None = None) -> Report:
    """Compare every position (of one channel, or all) with its ledger rebuild, and each channel's running total
    of closed PnL with its rows; ``fix`` rewrites what drifted.

    Settled positions are reported but never rewritten: their PnL has been paid. ``on_fix`` runs inside the
    transaction of each rewrite (the audit entry commits with it).
    """
    channels = Channel.objects.order_by("id")
    if channel_id is not None:
        channels = channels.filter(channel_id=channel_id.lower())
        if not channels.exists():
            raise DomainError(Code.CHANNEL_NOT_FOUND, f"no channel {channel_id}")
    drifts: list[Drift] = []
    totals: list[TotalDrift] = []
    total = channels.count()
    for done, channel in enumerate(channels.iterator(), start=1):
        with transaction.atomic():
            channel = Channel.objects.select_for_update().get(pk=channel.pk)  # no trade lands meanwhile
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
            # After the position fixes: a fixed book may have closed a position or changed a closed one's PnL.
            expected_total = selectors.closed_pnl_from_rows(channel)
            if expected_total != channel.closed_pnl:
                total_drift = TotalDrift(channel, channel.closed_pnl, expected_total, fix)
                if fix:
                    refresh_closed_pnl(channel)
                    if on_fix:
                        on_fix(total_drift)
                totals.append(total_drift)
            if fix and channel.status != ChannelStatus.CLOSED:  # fixed balances: the zones follow (a margin call)
                zones.track(channel, selectors.margins(channel))
        if progress:
            progress(done, total)
    return Report(drifts, totals)
