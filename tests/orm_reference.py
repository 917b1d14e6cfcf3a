"""The trade path's reference: the same rules (``services.trades.fresh_items``, ``decide``, ``announce``) with the
database work done by the ORM, as before the plain SQL (channels_app/tradestore.py): what the plain-SQL path
stores must be what this stores, on any history (tests/test_trade_path.py)."""
from django.db import transaction

from channels_app import selectors
from channels_app.models import Peer, Position, Trade
from channels_app.services import trades


def record_trades(*, peer: Peer, channel_id: str, trades_in: list[trades.TradeInput]) -> None:
    with transaction.atomic():
        channel = selectors.participant_channel(peer=peer, channel_id=channel_id, lock=True)
        stored = {t.external_id: t for t in channel.trades.filter(
            external_id__in=[item.external_id for item in trades_in])}
        fresh = trades.fresh_items(channel=channel, role=channel.role_of(peer.id), trades=trades_in, stored=stored)
        if not fresh:
            return
        positions = selectors.live_positions_of(channel)
        marks = selectors.marks_for({*(item.market for _, item, _ in fresh), *(p.market for p in positions)})
        decision = trades.decide(channel=channel, fresh=fresh, positions=positions, marks=marks)
        for position in decision.touched:
            if position.pk is not None:
                position.save()
        Position.objects.bulk_create(decision.created)
        Trade.objects.bulk_create([
            Trade(channel=channel, external_id=t.external_id, recorded_by=peer, market=t.market, direction=t.direction,
                  initiator_direction=t.initiator_direction, amount=t.amount, price=t.price,
                  executed_at=t.executed_at, position=t.position)
            for t in decision.new_trades])
        if decision.channel_fields:
            type(channel).objects.filter(pk=channel.pk).update(**decision.channel_fields)
        trades.announce(channel, decision, marks)
