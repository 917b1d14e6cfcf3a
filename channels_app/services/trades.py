"""Recording trades: the trade, its position update and the margin check commit together or not at all."""
from dataclasses import dataclass

from django.db import transaction

from channels_app import accounting
from channels_app.errors import ErrorCode, ProtocolError
from channels_app.events import StreamAction
from channels_app.models import (
    INITIATOR,
    POSITION_TRANSITIONS,
    TRADING_STATUSES,
    Channel,
    Peer,
    Position,
    PositionStatus,
    Trade,
    marks_for,
)
from channels_app.notifications import notify_positions, notify_stream
from channels_app.schemas import RecordTradeData
from channels_app.services.channels import participant_channel
from channels_app.statemachine import move
from channels_app.valuation import balances, unsettled_positions


@dataclass(frozen=True)
class Recorded:
    channel: Channel
    trade: Trade
    replayed: bool  # True: the same trade was already stored; nothing changed


def _same_trade(stored: Trade, data: RecordTradeData, initiator_direction: str) -> bool:
    """Content compared from the initiator's side, so either party may report the same execution."""
    return (
        stored.market == data.market
        and stored.initiator_direction == initiator_direction
        and stored.amount == data.amount
        and stored.price == data.price
        and stored.executed_at == data.executed_at
    )


def record_trade(*, peer: Peer, data: RecordTradeData) -> Recorded:
    with transaction.atomic():
        # The channel row lock serializes everything on this channel: idempotency check, position, margin.
        channel = participant_channel(peer, data.channel_id, lock=True)
        role = channel.role_of(peer.id)
        initiator_direction = data.direction if role == INITIATOR else accounting.opposite(data.direction)

        stored = channel.trades.filter(external_id=data.external_id).first()
        if stored is not None:
            if _same_trade(stored, data, initiator_direction):
                return Recorded(channel, stored, replayed=True)
            raise ProtocolError(ErrorCode.DUPLICATE_TRADE, f"external_id {data.external_id!r} was already recorded "
                                "with different content")
        if channel.status not in TRADING_STATUSES:
            raise ProtocolError(ErrorCode.INVALID_CHANNEL_STATE, f"channel is {channel.status}; trades are recorded "
                                "only on an opened or settling channel")

        positions = unsettled_positions(channel)
        marks = marks_for({data.market, *(p.market for p in positions)})
        before = balances(channel, positions, marks)

        position = next((p for p in positions if p.market == data.market and p.status == PositionStatus.OPEN), None)
        if position is None:  # first trade in this market, or the previous position is flat, frozen or settled
            position = Position(channel=channel, market=data.market, last_price=data.price)
            positions.append(position)
        position.set_book(accounting.apply_trade(position.book, initiator_direction, data.amount, data.price))
        position.last_price = data.price
        if position.book.is_flat:
            move(position, PositionStatus.CLOSED, table=POSITION_TRANSITIONS)

        after = balances(channel, positions, marks)
        if min(after) < 0:
            raise ProtocolError(ErrorCode.MARGIN_EXCEEDED, "this trade would leave a margin balance below zero "
                                f"(initiator {after[0]}, responder {after[1]})")
        position.save()
        trade = Trade.objects.create(
            channel=channel,
            external_id=data.external_id,
            recorded_by=peer,
            market=data.market,
            direction=data.direction,
            initiator_direction=initiator_direction,
            amount=data.amount,
            price=data.price,
            executed_at=data.executed_at,
            position=position,
        )
        notify_positions(channel, [position], marks)
        if after != before:
            notify_stream(channel, StreamAction.MARGIN_UPDATED, after)
    return Recorded(channel, trade, replayed=False)
