from django.core.management.base import BaseCommand

from backoffice.management.commands import _common
from channels_app import accounting
from channels_app.models import marks_for
from channels_app.money import fmt
from channels_app.valuation import balances, position_mark


class Command(BaseCommand):
    help = "Show a channel: status, parties, margin balances, positions (initiator's side) and settlements."

    def add_arguments(self, parser):
        parser.add_argument("channel", help="the channel id")

    def handle(self, *args, channel, **options):
        channel = _common.channel(channel)
        initiator_balance, responder_balance = balances(channel)
        out = self.stdout
        out.write(f"channel {channel.channel_id}")
        out.write(f"  status: {channel.status}   opened {channel.created_at:%Y-%m-%d %H:%M:%S} UTC")
        out.write(f"  initiator: {channel.initiator}   margin balance {fmt(initiator_balance)}")
        out.write(f"  responder: {channel.responder}   margin balance {fmt(responder_balance)}")
        out.write(f"  margin deposit: {fmt(channel.margin_deposit)} each")
        positions = list(channel.positions.order_by("market", "id"))
        marks = marks_for(p.market for p in positions)
        out.write(f"  positions ({len(positions)}), initiator's side:")
        for p in positions:
            book, mark = p.book, position_mark(p, marks)
            out.write(f"    {p.pk} {p.market} {p.status}: {book.direction or 'flat'} {fmt(book.amount)} cost "
                      f"{fmt(book.cost)} mark {fmt(mark)} unrealized {fmt(accounting.unrealized_pnl(book, mark))} "
                      f"realized {fmt(book.realized_pnl)}")
        settlements = list(channel.settlements.order_by("id"))
        out.write(f"  settlements ({len(settlements)}):")
        for s in settlements:
            out.write(f"    {s.pk} {s.state} {s.payment_method} markets {', '.join(s.markets)} "
                      f"created {s.created_at:%Y-%m-%d %H:%M:%S}")
        out.write(f"  trades: {channel.trades.count()}")
