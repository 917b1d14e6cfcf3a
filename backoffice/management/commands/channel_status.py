from backoffice.management.commands import _common
from channels_app import selectors
from channels_app.money import fmt
from channels_app.values import INITIATOR


class Command(_common.PipedCommand):
    help = ("Show a channel: status, parties, margin balances, positions (initiator's side) and settlements. A "
            "reader that stops early (| head) ends it quietly, exit status 141.")

    def add_arguments(self, parser):
        parser.add_argument("channel", help="the channel id")

    def handle(self, *args, channel, **options):
        channel = _common.channel(channel)
        initiator_balance, responder_balance = selectors.margins(channel)
        out = self.stdout
        out.write(f"channel {channel.channel_id}")
        out.write(f"  status: {channel.status}   opened {channel.created_at:%Y-%m-%d %H:%M:%S} UTC")
        out.write(f"  initiator: {channel.initiator}   margin balance {fmt(initiator_balance)}")
        out.write(f"  responder: {channel.responder}   margin balance {fmt(responder_balance)}")
        out.write(f"  margin deposit: {fmt(channel.margin_deposit)} each")
        positions = list(channel.positions.order_by("market", "id"))
        marks = selectors.marks_for(p.market for p in positions)
        out.write(f"  positions ({len(positions)}), initiator's side:")
        for p in positions:
            view = selectors.position_view(p, marks)
            side = view.side(INITIATOR)
            out.write(f"    {p.pk} {p.market} {p.status}: {side.direction if side.amount else 'flat'} "
                      f"{fmt(side.amount)} cost {fmt(side.cost)} mark {fmt(view.mark)} unrealized {fmt(side.pnl)} "
                      f"realized {fmt(side.realized_pnl)}")
        settlements = list(channel.settlements.order_by("id"))
        out.write(f"  settlements ({len(settlements)}):")
        for s in settlements:
            out.write(f"    {s.pk} {s.state} {s.payment_method} markets {', '.join(s.markets)} "
                      f"created {s.created_at:%Y-%m-%d %H:%M:%S}")
        out.write(f"  trades: {channel.trades.count()}")
