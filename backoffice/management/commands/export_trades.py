import csv
import json

from django.core.management.base import BaseCommand, CommandError

from backoffice.management.commands import _common
from channels_app.models import Trade
from channels_app.money import fmt

FIELDS = ["channel_id", "external_id", "market", "direction", "initiator_direction", "amount", "price",
          "executed_at", "recorded_by", "recorded_at"]


def row(trade: Trade) -> dict:
    return {
        "channel_id": trade.channel.channel_id,
        "external_id": trade.external_id,
        "market": trade.market,
        "direction": trade.direction,  # as the recording party reported it
        "initiator_direction": trade.initiator_direction,
        "amount": fmt(trade.amount),
        "price": fmt(trade.price),
        "executed_at": trade.executed_at,
        "recorded_by": trade.recorded_by.address,
        "recorded_at": trade.recorded_at.isoformat(),
    }


class Command(BaseCommand):
    help = ("Export recorded trades (all, or one channel's) in recording order as CSV or JSON, amounts and prices "
            "as exact decimal strings. Standard output unless --output is given.")

    def add_arguments(self, parser):
        parser.add_argument("--channel", metavar="ID", help="only this channel")
        parser.add_argument("--format", choices=["csv", "json"], default="csv")
        parser.add_argument("--output", metavar="FILE", help="write here instead of standard output")

    def handle(self, *args, channel, format, output, **options):
        trades = Trade.objects.select_related("channel", "recorded_by").order_by("id")
        if channel is not None:
            trades = trades.filter(channel=_common.channel(channel))
        try:
            out = open(output, "w", newline="", encoding="utf-8") if output else self.stdout
        except OSError as exc:
            raise CommandError(f"cannot write {output}: {exc.strerror}") from None
        if not output:
            self.stdout.ending = ""  # the writers end their own lines
        progress = _common.Progress("trades exported", every=10000, stream=self.stderr) if output else None
        count = 0
        try:
            writer = csv.DictWriter(out, fieldnames=FIELDS) if format == "csv" else None
            if writer:
                writer.writeheader()
            else:
                out.write("[")
            for trade in trades.iterator(chunk_size=2000):
                if writer:
                    writer.writerow(row(trade))
                else:
                    out.write(("," if count else "") + "\n" + json.dumps(row(trade)))
                count += 1
                if progress:
                    progress.step()
            if not writer:
                out.write("\n]\n")
        finally:
            if output:
                out.close()
        if output:
            self.stderr.write(f"{count} trade(s) written to {output}")
