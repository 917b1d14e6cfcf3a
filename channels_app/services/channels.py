"""Proposing, consenting to, opening and closing channels."""
from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.db import transaction
from django.utils import timezone
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
    """``initiator`` proposes a channel to ``responder_address``, or consents to the one proposed to it.

    Under the ``consent`` policy (the default, docs/protocol.md section 4) a channel opens only when both parties
    asked for it: if the counterparty proposed a channel to ``initiator`` with the same deposit, still ``opening``
    and not expired, this opens that one (the oldest if several); otherwise a new proposal is created ``opening``.
    Under ``auto`` (testing) the new channel opens at once. Either way both parties hear ``channelOpened`` with the
    channel's status. ``responder_address`` is EIP-55 checksummed; ``margin_deposit`` > 0, parsed exactly.
    """
    if responder_address.lower() == initiator.address.lower():
        raise DomainError(Code.INVALID_INPUT, "cannot open a channel with yourself")
    with transaction.atomic():
        # The initiator's row serializes its opens, so two at once cannot take the same nonce (nor both accept).
        Peer.objects.select_for_update().get(pk=initiator.pk)
        responder, _ = Peer.objects.get_or_create(address=responder_address)
        if responder.is_disabled:
            raise DomainError(Code.PEER_DISABLED, "the counterparty is disabled")
        if settings.CHANNEL_ACCEPT_POLICY == "consent":
            proposal = _proposal_to_accept(proposer=responder, accepter=initiator, margin_deposit=margin_deposit)
            if proposal is not None:
                return _open(proposal)
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
        channel.initiator, channel.responder = initiator, responder
        if settings.CHANNEL_ACCEPT_POLICY == "auto":
            return _open(channel)
        notify_channel(channel, StreamAction.CHANNEL_OPENED)  # channel_status "opening": a proposal
    return channel


def acceptance_deadline():
    """Proposals created before this have expired (``expire_proposals`` closes them)."""
    return timezone.now() - timedelta(seconds=settings.CHANNEL_ACCEPT_SECONDS)


def _proposal_to_accept(*, proposer: Peer, accepter: Peer, margin_deposit: Decimal) -> Channel | None:
    candidates = Channel.objects.select_for_update(of=("self",)).select_related("initiator", "responder").filter(
        initiator=proposer, responder=accepter, status=ChannelStatus.OPENING, created_at__gt=acceptance_deadline(),
    ).order_by("id")
    # Compared as decimals ("1000" is "1000.00"): the column is text on SQLite.
    return next((c for c in candidates if c.margin_deposit == margin_deposit), None)


def _open(channel: Channel) -> Channel:
    """Both parties agreed (or the policy is ``auto``): the embedded default funds at once, and both balances start
    at the deposit. The caller holds the channel's row."""
    transition_channel(channel, ChannelStatus.OPENED)
    notify_channel(channel, StreamAction.CHANNEL_OPENED)
    return channel


def expire_proposals() -> int:
    """Close every proposal not accepted within ``CHANNEL_ACCEPT_SECONDS``; both parties hear ``channelClosed``.
    Run by the payment worker's rounds; idempotent (each proposal is taken under its row lock)."""
    expired = 0
    for pk in Channel.objects.filter(status=ChannelStatus.OPENING, created_at__lte=acceptance_deadline()).order_by(
            "pk").values_list("pk", flat=True):
        with transaction.atomic():
            channel = Channel.objects.select_for_update(of=("self",)).select_related("initiator", "responder").get(
                pk=pk)
            if channel.status != ChannelStatus.OPENING:
                continue  # accepted or withdrawn meanwhile
            transition_channel(channel, ChannelStatus.CLOSED)
            notify_channel(channel, StreamAction.CHANNEL_CLOSED)
            expired += 1
    return expired


def close_channel(*, peer: Peer, channel_id: str) -> Channel:
    """Either party closes an ``opened`` channel whose positions are all flat or settled (margins are released),
    or withdraws (declines) a proposal still ``opening``."""
    with transaction.atomic():
        channel = selectors.participant_channel(peer=peer, channel_id=channel_id, lock=True)
        if channel.status == ChannelStatus.OPENING:
            transition_channel(channel, ChannelStatus.CLOSED)
            notify_channel(channel, StreamAction.CHANNEL_CLOSED)
            return channel
        if channel.status != ChannelStatus.OPENED:
            raise DomainError(Code.INVALID_CHANNEL_STATE, f"channel is {channel.status}; only an opened "
                              "channel can be closed (or a proposal withdrawn)")
        live = channel.positions.filter(status__in=LIVE_POSITION_STATUSES).values_list("market", flat=True)
        if live:
            raise DomainError(Code.OPEN_POSITIONS, "positions still open in " + ", ".join(sorted(set(live))))
        transition_channel(channel, ChannelStatus.CLOSING)
        transition_channel(channel, ChannelStatus.CLOSED)  # the embedded default releases margins at once
        notify_channel(channel, StreamAction.CHANNEL_CLOSED)
    return channel
