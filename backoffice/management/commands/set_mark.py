from django.core.management.base import BaseCommand

from backoffice import actions
from backoffice.management.commands import _common
from channels_app.models import Position, PositionStatus


class Command(BaseCommand):
    help = ("Set MARKET's mark price: every open position in it is revalued and both parties of each channel "
            "get position_notification and marginUpdated. Audited.")

    def add_arguments(self, parser):
        parser.add_argument("market", help="BASE/QUOTE, e.g. ETH/USDT")
        parser.add_argument("price", help="a positive decimal string, e.g. 1834.25")

    def handle(self, *args, market, price, **options):
        market, price = _common.market(market), _common.price(price)
        mark = actions.set_mark(actor=_common.ACTOR(), market=market, price=price)
        revalued = Position.objects.filter(market=market, status=PositionStatus.OPEN).values("channel").distinct()
        self.stdout.write(f"{mark.market} marked at {mark.price}; {revalued.count()} channel(s) revalued")
