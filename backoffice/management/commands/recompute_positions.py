from django.core.management.base import BaseCommand, CommandError

from backoffice import actions
from backoffice.management.commands import _common
from channels_app.errors import DomainError
from channels_app.money import fmt


class Command(BaseCommand):
    help = ("Rebuild every position (or one channel's) from the trade ledger, and each channel's running total of "
            "closed PnL from its rows, and report any drift from what is stored. With --fix, drifted positions and "
            "totals are rewritten (audited); settled positions never are. Exit status 1 while drift remains.")

    def add_arguments(self, parser):
        parser.add_argument("--channel", metavar="ID", help="only this channel")
        parser.add_argument("--fix", action="store_true", help="rewrite drifted positions from the ledger")

    def handle(self, *args, channel, fix, **options):
        if channel is not None:
            channel = _common.channel(channel).channel_id

        def progress(done, total):
            if done == total or done % 100 == 0:
                self.stderr.write(f"channel {done}/{total}")

        try:
            report = actions.fix_positions(actor=_common.ACTOR(), channel_id=channel, fix=fix, progress=progress)
        except DomainError as exc:
            raise CommandError(exc.message) from None
        for drift in report.positions:
            p, stored, expected = drift.position, drift.stored, drift.expected
            self.stdout.write(
                f"{'FIXED' if drift.fixed else 'DRIFT'} position {p.pk} {p.market} ({p.status}) of channel "
                f"{p.channel.channel_id}: stored quantity {fmt(stored.quantity)} cost {fmt(stored.cost)} realized "
                f"{fmt(stored.realized_pnl)}; ledger says quantity {fmt(expected.quantity)} cost "
                f"{fmt(expected.cost)} realized {fmt(expected.realized_pnl)}"
            )
        for drift in report.totals:
            self.stdout.write(
                f"{'FIXED' if drift.fixed else 'DRIFT'} closed-PnL total of channel {drift.channel.channel_id}: "
                f"stored {fmt(drift.stored)}; its closed positions sum to {fmt(drift.expected)}"
            )
        fixed_positions = sum(d.fixed for d in report.positions)
        fixed_totals = sum(d.fixed for d in report.totals)
        self.stdout.write(f"{len(report.positions)} drifted position(s), {fixed_positions} fixed; "
                          f"{len(report.totals)} drifted channel total(s), {fixed_totals} fixed")
        if report.unfixed:
            positions = sum(not d.fixed for d in report.positions)
            totals = sum(not d.fixed for d in report.totals)
            raise CommandError(f"{positions} position(s) and {totals} channel total(s) differ from the ledger"
                               + ("" if fix else "; run with --fix to rewrite them"))
