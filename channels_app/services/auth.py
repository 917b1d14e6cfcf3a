"""Challenge authentication (EIP-191 personal_sign) and admission of a peer."""
import time
import uuid
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from eth_account import Account
from eth_account.messages import encode_defunct

from channels_app.errors import ErrorCode, ProtocolError
from channels_app.models import Peer
from channels_app.schemas import AuthenticateData
from channels_app.services import presence


@dataclass(frozen=True)
class Challenge:
    """A challenge belongs to one connection, is single-use, and expires (the consumer keeps it)."""

    value: str
    expires_at: float  # time.monotonic()

    @classmethod
    def issue(cls) -> "Challenge":
        return cls(str(uuid.uuid4()), time.monotonic() + settings.CHALLENGE_TTL_SECONDS)


def recover_signer(outstanding: Challenge | None, data: AuthenticateData) -> str:
    """The checksummed address that signed the outstanding challenge, or a refusal.

    The signature is checked over *our* challenge text: a signature over any other text would still recover
    some address, so the client's copy of the challenge is only compared, never signed-over.
    """
    if outstanding is None or data.challenge != outstanding.value:
        raise ProtocolError(ErrorCode.INVALID_CHALLENGE, "unknown or already used challenge")
    if time.monotonic() > outstanding.expires_at:
        raise ProtocolError(ErrorCode.INVALID_CHALLENGE, "challenge expired")
    try:
        return Account.recover_message(encode_defunct(text=outstanding.value), signature=data.signature)
    except Exception:  # eth-keys raises BadSignature / ValidationError / ValueError for a malformed one
        raise ProtocolError(ErrorCode.INVALID_SIGNATURE, "signature does not recover to an address") from None


def admit_peer(*, address: str, channel_name: str = "", client_address: str = "") -> Peer:
    """Record the peer's sign-in (and its connection, for presence), or refuse it when disabled or not on
    OPERATOR_ALLOWED_PEERS."""
    allowed = {a.lower() for a in settings.OPERATOR_ALLOWED_PEERS}
    if allowed and address.lower() not in allowed:
        raise ProtocolError(ErrorCode.PEER_DISABLED, "this peer is not allowed on this operator")
    now = timezone.now()
    with transaction.atomic():
        peer, _ = Peer.objects.select_for_update().get_or_create(address=address)
        if peer.is_disabled:
            raise ProtocolError(ErrorCode.PEER_DISABLED, "this peer is disabled")
        peer.first_seen = peer.first_seen or now
        peer.last_seen = now
        peer.save(update_fields=["first_seen", "last_seen"])
        if channel_name:
            presence.connected(peer=peer, channel_name=channel_name, client_address=client_address)
    return peer
