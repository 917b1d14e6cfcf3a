"""The one place wire payloads are built, from the domain's values, for one recipient (every figure from its side).

Replies and notifications use the same builders, so a figure is formatted one way only (``money.fmt``: decimal
strings, never floats).
"""
from channels_app.money import fmt
from channels_app.notices import ChannelNotice, PositionNotice
from channels_app.values import ChannelView, PositionView
from operatorapi.events import Event
from settlement.values import SettlementNotice, SettlementView


def position_payload(position: PositionView, role: str) -> dict:
    side = position.side(role)
    return {
        "id": position.id,
        "channel_id": position.channel_id,
        "market": position.market,
        "direction": side.direction,
        "amount": fmt(side.amount),
        "cost": fmt(side.cost),
        "market_value": fmt(side.market_value),
        "pnl": fmt(side.pnl),
        "realized_pnl": fmt(side.realized_pnl),
        "mark_price": fmt(position.mark),
        "status": position.status,
    }


def counterparty_payload(channel: ChannelView, role: str) -> dict:
    party = channel.counterparty(role)
    info = {"address": party.address}
    if party.url:
        info["url"] = party.url
    if party.name:
        info["name"] = party.name
    return info


def channel_payload(channel: ChannelView, role: str) -> dict:
    """A channel as one party sees it (``channels`` replies and every stream notification)."""
    return {
        "channel_id": channel.channel_id,
        "channel_status": channel.status,
        "my_role": role,
        "peer": counterparty_payload(channel, role),
        "margin_deposit": fmt(channel.margin_deposit),
        "initiator_margin_balance": fmt(channel.margins.initiator),
        "follower_margin_balance": fmt(channel.margins.responder),
        "initiator_margin_zone": str(channel.zones.initiator),
        "follower_margin_zone": str(channel.zones.responder),
    }


def settlement_payload(settlement: SettlementView, role: str) -> dict:
    payload = {
        "channel_id": settlement.channel_id,
        "settlement_id": settlement.id,
        "state": settlement.state,
        "settlement_state": settlement.state,
        "payment_method": settlement.payment_method,
        "chain_id": settlement.chain_id,
        "markets": list(settlement.markets),
        "ledger": [
            {"asset": line.asset, "initiator_owes": line.initiator_owes, "responder_owes": line.responder_owes,
             "shortfall": line.shortfall}
            for line in settlement.ledger
        ],
        "my_role": role,
    }
    if settlement.escrow is not None:
        payload["escrow"] = escrow_payload(settlement.escrow)
    return payload


ESCROW_FIELDS = ("chain_id", "contract", "escrow_id", "deadline", "legs", "transactions")


def escrow_payload(escrow: dict) -> dict:
    """The escrow object of docs/escrow.md section 4 (what is stored is already in that shape)."""
    return {key: escrow[key] for key in ESCROW_FIELDS if key in escrow}


def settlement_history_payload(settlement: SettlementView, role: str) -> dict:
    """A settlement with the times of its states (``settlements`` replies); actors stay internal."""
    return {
        **settlement_payload(settlement, role),
        "created_at": settlement.created_at.isoformat(),
        "history": [{"state": state, "at": at.isoformat()} for state, at in settlement.history],
    }


def notification_frame(notice, role: str) -> dict:
    """The notification a recipient of ``notice`` receives (its ``reqid`` is added by the recipient's connection)."""
    if isinstance(notice, ChannelNotice):
        return {"event": str(Event.STREAM_NOTIFICATION),
                "data": {"action": str(notice.action), **channel_payload(notice.channel, role)}}
    if isinstance(notice, PositionNotice):
        return {"event": str(Event.POSITION_NOTIFICATION), "data": position_payload(notice.position, role)}
    if isinstance(notice, SettlementNotice):
        return {"event": str(Event.SETTLEMENT_NOTIFICATION), "data": settlement_payload(notice.settlement, role)}
    raise TypeError(f"no notification for {type(notice).__name__}")
