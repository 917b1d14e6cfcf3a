"""Opening, funding and closing channels."""
from decimal import Decimal

from django.conf import settings
from django.db import transaction
from eth_abi import encode
from eth_utils import keccak

from channels_app import selectors
from channels_app.errors import Code, DomainError
from channels_app.models import CHANNEL_TRANSITIONS, LIVE_POSITION_STATUSES, Channel, ChannelStatus, Peer
from channels_app.notices import StreamAction, notify_channel
from channels_app.statemachine import InvalidTransition, move


def derive_channel_id(initiator: str, responder: str, nonce: int) -> str:
    """Nitro's channel id: keccak256(abi.encode(participants, channelNonce, appDefinition, challengeDuration))."""
    encoded = encode(
        ["address[]", "uint64", "address", "uint48"],
        [[initiator, responder], nonce, settings.CHANNEL_APP_DEFINITION, settings.CHANNEL_CHALLENGE_DURATION],
    )
    return "0x" + keccak(encoded).hex()


def transition_channel(channel: Channel, target: ChannelStatus) -> None:
    """Apply a status change the table allows; anything else is invalid_channel_state."""
    try:
        move(channel, target, table=CHANNEL_TRANSITIONS)
    except InvalidTransition:
        raise DomainError(
            Code.INVALID_CHANNEL_STATE, f"channel is {channel.status}; it cannot become {target}"
        ) from None
    channel.save(update_fields=["status", "updated_at"])


def open_channel(*, initiator: Peer, responder_address: str, margin_deposit: Decimal, responder_name: str = "",
                 responder_url: str = "") -> Channel:
    """Create the channel (``opening``) with the next nonce of the ordered pair, then fund it.

    ``responder_address`` is EIP-55 checksummed; ``margin_deposit`` > 0 (the caller parsed it exactly).
    """
    if responder_address.lower() == initiator.address.lower():
        raise DomainError(Code.INVALID_INPUT, "cannot open a channel with yourself")
    with transaction.atomic():
        # The initiator's row serializes its opens, so two at once cannot take the same nonce.
        Peer.objects.select_for_update().get(pk=initiator.pk)
        responder, _ = Peer.objects.get_or_create(address=responder_address)
        if responder.is_disabled:
            raise DomainError(Code.PEER_DISABLED, "the counterparty is disabled")
        nonce = Channel.objects.filter(initiator=initiator, responder=responder).count()
        channel = Channel.objects.create(
            channel_id=derive_channel_id(initiator.address, responder.address, nonce),
            initiator=initiator,
            responder=responder,
            nonce=nonce,
            margin_deposit=margin_deposit,
            responder_name=responder_name,
            responder_url=responder_url,
        )
    return fund_channel(channel_pk=channel.pk)


def fund_channel(*, channel_pk: int) -> Channel:
    """Funding completed: the embedded default funds at once. Both balances start at the deposit."""
    with transaction.atomic():
        channel = Channel.objects.select_for_update(of=("self",)).select_related("initiator", "responder").get(
            pk=channel_pk
        )
        transition_channel(channel, ChannelStatus.OPENED)
        notify_channel(channel, StreamAction.CHANNEL_OPENED)
    return channel


def close_channel(*, peer: Peer, channel_id: str) -> Channel:
    """Either party closes an ``opened`` channel whose positions are all flat or settled; margins are released."""
    with transaction.atomic():
        channel = selectors.participant_channel(peer=peer, channel_id=channel_id, lock=True)
        if channel.status != ChannelStatus.OPENED:
            raise DomainError(Code.INVALID_CHANNEL_STATE, f"channel is {channel.status}; only an opened "
                              "channel can be closed")
        live = channel.positions.filter(status__in=LIVE_POSITION_STATUSES).values_list("market", flat=True)
        if live:
            raise DomainError(Code.OPEN_POSITIONS, "positions still open in " + ", ".join(sorted(set(live))))
        transition_channel(channel, ChannelStatus.CLOSING)
        transition_channel(channel, ChannelStatus.CLOSED)  # the embedded default releases margins at once
        notify_channel(channel, StreamAction.CHANNEL_CLOSED)
    return channel
