"""Reads of the settlement domain: keyword arguments in, domain values out."""
from channels_app import selectors as channel_selectors
from channels_app.models import Peer
from settlement.values import SettlementView, settlement_view


def channel_settlements(*, peer: Peer, channel_id: str) -> tuple[str, list[SettlementView]]:
    """``peer``'s role and its channel's settlements, newest first, with ledgers and state times."""
    channel = channel_selectors.participant_channel(peer=peer, channel_id=channel_id)
    settlements = channel.settlements.select_related("channel").prefetch_related("transitions").order_by("-id")
    return channel.role_of(peer.id), [settlement_view(s, with_history=True) for s in settlements]
