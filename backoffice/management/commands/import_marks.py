import csv
import io
import os
import sys

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from backoffice import actions
from backoffice.management.commands import _common


class Command(BaseCommand):
    help = ("Set many marks from a CSV file with the header 'market,price' ('-' reads standard input), in UTF-8 "
            "(with or without the byte-order mark Excel writes). Every line is checked first; if any is bad, each "
            "bad line is reported with its number and nothing changes.")

    def add_arguments(self, parser):
        parser.add_argument("file", help="CSV path, or - for standard input")

    def handle(self, *args, file, **options):
        rows = self.read(file)
        progress = _common.Progress("marks set", total=len(rows), every=500, stream=self.stderr)
        actor = _common.ACTOR()
        # the mark's source holds 64 characters: the file's name, not its path (a long path failed on PostgreSQL)
        source = f"import_marks {'stdin' if file == '-' else os.path.basename(file)}"[:64]
        with transaction.atomic():  # all or nothing; notifications go out once it committed
            for market, price in rows:
                actions.set_mark(actor=actor, market=market, price=price, source=source)
                progress.step()
        self.stdout.write(f"{len(rows)} mark(s) set")

    @staticmethod
    def text(file) -> str:
        """The whole file as text. UTF-8, and a byte-order mark is dropped (Excel's "CSV UTF-8" writes one, which would
        else stick to the header's first name). Any other encoding is refused in one line naming where, rather than
        guessed: a mis-decoded market name would be refused later anyway, a price could be read wrong."""
        try:
            if file == "-":
                stream = getattr(sys.stdin, "buffer", None)
                data = stream.read() if stream is not None else sys.stdin.read()  # a text stream has no bytes
            else:
                with open(file, "rb") as handle:
                    data = handle.read()
        except OSError as exc:
            raise CommandError(f"cannot read {file}: {exc.strerror}") from None
        if isinstance(data, str):
            return data.removeprefix("\ufeff")
        try:
            return data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            line = data.count(b"\n", 0, exc.start) + 1
            column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
            raise CommandError(f"line {line}: byte {column} (0x{data[exc.start]:02x}) is not UTF-8: save the file "
                               "as UTF-8 (in Excel: \"CSV UTF-8\") and import it again") from None

    def read(self, file):
        reader = csv.reader(io.StringIO(self.text(file), newline=""))
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
