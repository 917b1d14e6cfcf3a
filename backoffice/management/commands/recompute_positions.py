from django.core.management.base import BaseCommand, CommandError

from backoffice import actions
from backoffice.management.commands import _common
from channels_app.models import Channel
from channels_app.money import fmt


class Command(BaseCommand):
    help = ("Rebuild every position (or one channel's) from the trade ledger and report any drift from the stored "
            "books. With --fix, drifted positions are rewritten (audited); settled ones never are. Exit status 1 "
            "while drift remains.")

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
            drifts = actions.fix_positions(actor=_common.ACTOR(), channel_id=channel, fix=fix, progress=progress)
        except Channel.DoesNotExist as exc:
            raise CommandError(str(exc)) from None
        for drift in drifts:
            p, stored, expected = drift.position, drift.stored, drift.expected
            self.stdout.write(
                f"{'FIXED' if drift.fixed else 'DRIFT'} position {p.pk} {p.market} ({p.status}) of channel "
                f"{p.channel.channel_id}: stored quantity {fmt(stored.quantity)} cost {fmt(stored.cost)} realized "
                f"{fmt(stored.realized_pnl)}; ledger says quantity {fmt(expected.quantity)} cost "
                f"{fmt(expected.cost)} realized {fmt(expected.realized_pnl)}"
            )
        unfixed = [d for d in drifts if not d.fixed]
        self.stdout.write(f"{len(drifts)} drifted position(s), {len(drifts) - len(unfixed)} fixed")
        if unfixed:
            raise CommandError(f"{len(unfixed)} position(s) differ from the ledger"
                               + ("" if fix else "; run with --fix to rewrite them"))
