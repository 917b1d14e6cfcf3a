import csv
import json
from datetime import UTC, datetime

from django.core.management.base import CommandError

from backoffice.management.commands import _common
from channels_app.models import Trade
from channels_app.money import fmt

FIELDS = ["channel_id", "external_id", "market", "direction", "initiator_direction", "amount", "price",
          "executed_at", "executed_at_unix", "recorded_by", "recorded_at"]


def iso_utc(moment: datetime) -> str:
    """ISO 8601 in UTC with a Z (2026-11-27T10:59:13Z): what a spreadsheet or a reader takes for a time, where raw
    Unix seconds read as a number. Sub-second digits only when there are some."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + (f".{moment.microsecond:06d}" if moment.microsecond else "") + "Z"


def executed_at(seconds: int) -> str:
    try:
        return iso_utc(datetime.fromtimestamp(seconds, tz=UTC))
    except (OverflowError, OSError, ValueError):  # outside what a date can say (the protocol refuses these)
        return ""


def row(trade: Trade) -> dict:
    return {
        "channel_id": trade.channel.channel_id,
        "external_id": trade.external_id,
        "market": trade.market,
        "direction": trade.direction,  # as the recording party reported it
        "initiator_direction": trade.initiator_direction,
        "amount": fmt(trade.amount),
        "price": fmt(trade.price),
        "executed_at": executed_at(trade.executed_at),
        "executed_at_unix": trade.executed_at,  # as the broker sent it, for a program that wants the number
        "recorded_by": trade.recorded_by.address,
        "recorded_at": iso_utc(trade.recorded_at),
    }


class Command(_common.PipedCommand):
    help = ("Export recorded trades (all, or one channel's) in recording order as CSV or JSON, amounts and prices "
            "as exact decimal strings, times in ISO 8601 UTC (executed_at, recorded_at; executed_at_unix is the "
            "broker's Unix seconds). Standard output unless --output is given; a reader that stops early "
            "(| head) ends it quietly, exit status 141.")

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
