import signal
import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import close_old_connections

from settlement.chain.deploy import ChainError
from settlement.payments.base import get_backend
from settlement.worker import PaymentWorker


class Command(BaseCommand):
    help = ("Run the payment worker: it drives every settlement in accepted, initiated, prepared or executed one "
            "step at a time (docs/escrow.md section 5). One worker sends at a time (a lease in the database); a "
            "second one stands by and takes over when the first dies. SIGTERM or Ctrl-C stops it after its step.")

    def add_arguments(self, parser):
        parser.add_argument("--once", action="store_true", help="one round, then exit (for cron or a check)")

    def handle(self, *args, once, **options):
        if settings.ESCROW_RPC_URL:  # the start-up check: the escrow is there and is this operator's
            try:
                chain_id = get_backend("escrow").verify()
            except ChainError as exc:
                raise CommandError(f"escrow: {exc}") from None
            self.stdout.write(f"escrow on chain {chain_id} at {settings.ESCROW_CONTRACT}: operator checked")
        worker = PaymentWorker()
        stopping = []
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stopping.append(True))
        self.stdout.write(f"payment worker {worker.name}: polling every {settings.SETTLEMENT_WORKER_POLL_SECONDS:g} s")
        self.stdout.flush()
        holding = None
        try:
            while not stopping:
                close_old_connections()
                moved = worker.run_once()
                if moved:
                    self.stdout.write(f"{moved} settlement state change(s)")
                now_holding = worker.holds_lease()
                if now_holding != holding:
                    holding = now_holding
                    self.stdout.write("holding the lease: sending" if holding else "standing by")
                self.stdout.flush()
                if once:
                    break
                time.sleep(settings.SETTLEMENT_WORKER_POLL_SECONDS)
        finally:
            worker.release_lease()
            close_old_connections()
        self.stdout.write("payment worker stopped")
