"""Opening, funding and closing channels, and reading a channel's book."""
from collections import defaultdict

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from eth_abi import encode
from eth_utils import keccak

from channels_app.errors import ErrorCode, ProtocolError, channel_not_found
from channels_app.events import StreamAction
from channels_app.models import (
    CHANNEL_TRANSITIONS,
    LIVE_POSITION_STATUSES,
    UNSETTLED_POSITION_STATUSES,
    Channel,
    ChannelStatus,
    Peer,
    Position,
    marks_for,
)
from channels_app.notifications import channel_payload, notify_stream, position_payload
from channels_app.schemas import OpenChannelData
from channels_app.statemachine import InvalidTransition, move
from channels_app.valuation import balances, position_mark


def derive_channel_id(initiator: str, responder: str, nonce: int) -> str:
    """Nitro's channel id: keccak256(abi.encode(participants, channelNonce, appDefinition, challengeDuration))."""
    encoded = encode(
        ["address[]", "uint64", "address", "uint48"],
        [[initiator, responder], nonce, settings.CHANNEL_APP_DEFINITION, settings.CHANNEL_CHALLENGE_DURATION],
    )
    return "0x" + keccak(encoded).hex()


def participant_channel(peer: Peer, channel_id: str, *, lock: bool = False) -> Channel:
    """The channel if ``peer`` is one of its two parties; otherwise channel_not_found, exactly as if absent."""
    qs = Channel.objects.select_related("initiator", "responder")
    if lock:
        qs = qs.select_for_update(of=("self",))
    channel = qs.filter(channel_id=channel_id).first()
    if channel is None or channel.role_of(peer.id) is None:
        raise channel_not_found()
    return channel


def transition_channel(channel: Channel, target: ChannelStatus) -> None:
    """Apply a status change the table allows; anything else is invalid_channel_state."""
    try:
        move(channel, target, table=CHANNEL_TRANSITIONS)
    except InvalidTransition:
        raise ProtocolError(
            ErrorCode.INVALID_CHANNEL_STATE, f"channel is {channel.status}; it cannot become {target}"
        ) from None
    channel.save(update_fields=["status", "updated_at"])


def open_channel(*, initiator: Peer, data: OpenChannelData) -> Channel:
    """Create the channel (``opening``) with the next nonce of the ordered pair, then fund it."""
    if data.peer.address == initiator.address:
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, "data.peer.address: cannot open a channel with yourself")
    with transaction.atomic():
        # The initiator's row serializes its opens, so two at once cannot take the same nonce.
        Peer.objects.select_for_update().get(pk=initiator.pk)
        responder, _ = Peer.objects.get_or_create(address=data.peer.address)
        if responder.is_disabled:
            raise ProtocolError(ErrorCode.PEER_DISABLED, "the counterparty is disabled")
        nonce = Channel.objects.filter(initiator=initiator, responder=responder).count()
        channel = Channel.objects.create(
            channel_id=derive_channel_id(initiator.address, responder.address, nonce),
            initiator=initiator,
            responder=responder,
            nonce=nonce,
            margin_deposit=data.margin_deposit,
            responder_name=data.peer.name or "",
            responder_url=data.peer.url or "",
        )
    return fund_channel(channel_pk=channel.pk)


def fund_channel(*, channel_pk: int) -> Channel:
    """Funding completed: the embedded default funds at once. Both balances start at the deposit."""
    with transaction.atomic():
        channel = Channel.objects.select_for_update(of=("self",)).select_related("initiator", "responder").get(
            pk=channel_pk
        )
        transition_channel(channel, ChannelStatus.OPENED)
        notify_stream(channel, StreamAction.CHANNEL_OPENED)
    return channel


def close_channel(*, peer: Peer, channel_id: str) -> Channel:
    """Either party closes an ``opened`` channel whose positions are all flat or settled; margins are released."""
    with transaction.atomic():
        channel = participant_channel(peer, channel_id, lock=True)
        if channel.status != ChannelStatus.OPENED:
            raise ProtocolError(ErrorCode.INVALID_CHANNEL_STATE, f"channel is {channel.status}; only an opened "
                                "channel can be closed")
        live = channel.positions.filter(status__in=LIVE_POSITION_STATUSES).values_list("market", flat=True)
        if live:
            raise ProtocolError(ErrorCode.OPEN_POSITIONS, "positions still open in " + ", ".join(sorted(set(live))))
        transition_channel(channel, ChannelStatus.CLOSING)
        transition_channel(channel, ChannelStatus.CLOSED)  # the embedded default releases margins at once
        notify_stream(channel, StreamAction.CHANNEL_CLOSED)
    return channel


def live_positions(*, peer: Peer, channel_id: str) -> list[dict]:
    """The live book (open and in settlement) as ``peer`` sees it."""
    channel = participant_channel(peer, channel_id)
    role = channel.role_of(peer.id)
    positions = list(channel.positions.filter(status__in=LIVE_POSITION_STATUSES).order_by("market", "id"))
    marks = marks_for(p.market for p in positions)
    return [{"position": position_payload(p, role, position_mark(p, marks))} for p in positions]


def peer_channels(*, peer: Peer, status: ChannelStatus | None = None) -> list[dict]:
    """Every channel of ``peer`` (optionally in one status) with both margin balances, in three queries."""
    channels = Channel.objects.filter(Q(initiator=peer) | Q(responder=peer)).select_related("initiator", "responder")
    if status is not None:
        channels = channels.filter(status=status)
    channels = list(channels.order_by("id"))
    positions_of = defaultdict(list)
    for position in Position.objects.filter(channel__in=channels, status__in=UNSETTLED_POSITION_STATUSES):
        positions_of[position.channel_id].append(position)
    marks = marks_for({p.market for ps in positions_of.values() for p in ps})
    return [
        channel_payload(c, c.role_of(peer.id), balances(c, positions_of[c.id], marks)) for c in channels
    ]
