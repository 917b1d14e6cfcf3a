from django.core.management.base import BaseCommand

from backoffice import actions
from backoffice.management.commands import _common
from channels_app.errors import DomainError


NEXT = {  # what happens to it now; "proposed" is a stop (nothing is paid yet), said plainly, not as an aside
    "proposed": ". Nothing is paid yet: the acceptance policy is manual (SETTLEMENT_ACCEPT_POLICY), so a clerk must "
                "accept it in the back office (Settlements, settlement {pk}) before anything is paid; a rejection "
                "reopens the positions.",
    "accepted": " (the payment worker pays it; both parties hear each state)",
}


class Command(BaseCommand):
    help = ("Settle MARKETS of a channel as the operator: the positions are frozen at the mark, the ledger "
            "computed, the acceptance policy applied and (once accepted) the payment method run. Both parties get "
            "every settlement_notification. Audited.")

    def add_arguments(self, parser):
        parser.add_argument("channel", help="the channel id")
        parser.add_argument("--markets", nargs="+", required=True, metavar="MARKET", help="markets to settle")
        parser.add_argument("--method", choices=["mock", "escrow"], required=True, help="payment method")
        parser.add_argument("--chain-id", type=int, default=1, help="chain id (escrow), default 1")

    def handle(self, *args, channel, markets, method, chain_id, **options):
        channel = _common.channel(channel)
        for m in markets:
            _common.market(m, where="--markets")
        if chain_id <= 0:
            raise _common.CommandError("--chain-id must be a positive integer")
        try:
            settlement = actions.propose_settlement(actor=_common.ACTOR(), channel_id=channel.channel_id,
                                                    markets=markets, method=method, chain_id=chain_id)
        except DomainError as exc:
            raise _common.refused(exc) from None
        self.stdout.write(f"settlement {settlement.pk} of {channel.channel_id}: {settlement.state}"
                          + NEXT.get(settlement.state, "").format(pk=settlement.pk))
        for line in settlement.ledger:
            self.stdout.write(f"  {line['asset']}: initiator owes {line['initiator_owes']}, responder owes "
                              f"{line['responder_owes']}")
