import csv
import sys

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from backoffice import actions
from backoffice.management.commands import _common


class Command(BaseCommand):
    help = ("Set many marks from a CSV file with the header 'market,price' ('-' reads standard input). Every "
            "line is checked first; if any is bad, each bad line is reported with its number and nothing changes.")

    def add_arguments(self, parser):
        parser.add_argument("file", help="CSV path, or - for standard input")

    def handle(self, *args, file, **options):
        rows = self.read(file)
        progress = _common.Progress("marks set", total=len(rows), every=500, stream=self.stderr)
        actor = _common.ACTOR()
        with transaction.atomic():  # all or nothing; notifications go out once it committed
            for market, price in rows:
                actions.set_mark(actor=actor, market=market, price=price, source=f"import_marks {file}")
                progress.step()
        self.stdout.write(f"{len(rows)} mark(s) set")

    def read(self, file):
        try:
            handle = sys.stdin if file == "-" else open(file, newline="", encoding="utf-8")
        except OSError as exc:
            raise CommandError(f"cannot read {file}: {exc.strerror}") from None
        with handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if header is None or [h.strip().lower() for h in header] != ["market", "price"]:
                raise CommandError("line 1: the header must be 'market,price'")
            rows, errors, seen = [], [], {}
            for line, fields in enumerate(reader, start=2):
                if not fields:
                    continue
                try:
                    if len(fields) != 2:
                        raise CommandError(f"expected 2 fields, got {len(fields)}")
                    market = _common.market(fields[0].strip())
                    price = _common.price(fields[1].strip())
                    if market in seen:
                        raise CommandError(f"{market} already on line {seen[market]}")
                except CommandError as exc:
                    errors.append(f"line {line}: {exc}")
                    continue
                seen[market] = line
                rows.append((market, price))
        if errors:
            raise CommandError(f"{len(errors)} bad line(s), nothing imported:\n" + "\n".join(errors))
        if not rows:
            raise CommandError("no marks in the file")
        return rows
