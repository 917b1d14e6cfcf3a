"""Challenge authentication (EIP-191 personal_sign) and admission of a peer."""
import logging
import time
import uuid
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import caches
from django.db import transaction
from django.utils import timezone
from eth_account import Account
from eth_account.messages import encode_defunct

from channels_app import selectors
from channels_app.errors import Code, DomainError
from channels_app.models import Peer, PeerConnection
from channels_app.services import presence

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Challenge:
    """A challenge belongs to one connection, is single-use, and expires (the consumer keeps it)."""

    value: str
    expires_at: float  # time.monotonic()

    @classmethod
    def issue(cls) -> "Challenge":
        return cls(str(uuid.uuid4()), time.monotonic() + settings.CHALLENGE_TTL_SECONDS)


def recover_signer(*, outstanding: Challenge | None, challenge: str, signature: bytes) -> str:
    """The checksummed address that signed the outstanding challenge, or a refusal.

    The signature is checked over *our* challenge text: a signature over any other text would still recover
    some address, so the client's copy of the challenge is only compared, never signed-over.
    """
    if outstanding is None or challenge != outstanding.value:
        raise DomainError(Code.INVALID_CHALLENGE, "unknown or already used challenge")
    if time.monotonic() > outstanding.expires_at:
        raise DomainError(Code.INVALID_CHALLENGE, "challenge expired")
    try:
        return Account.recover_message(encode_defunct(text=outstanding.value), signature=signature)
    except Exception:  # eth-keys raises BadSignature / ValidationError / ValueError for a malformed one
        raise DomainError(Code.INVALID_SIGNATURE, "signature does not recover to an address") from None


def sign_in(*, outstanding: Challenge | None, challenge: str, signature: bytes, client_ip: str,
            channel_name: str = "", client_address: str = "") -> Peer:
    """An authentication as one unit: lock-out, the signature, admission.

    Every refusal but the connection limit counts as a failed authentication of ``client_ip`` (``refuse``).
    """
    check_lockout(client_ip=client_ip)
    try:
        address = recover_signer(outstanding=outstanding, challenge=challenge, signature=signature)
        return admit_peer(address=address, channel_name=channel_name, client_address=client_address)
    except DomainError as exc:
        if exc.code != Code.CONNECTION_LIMIT:
            _count_failure(client_ip)
        raise


def refuse(*, client_ip: str) -> None:
    """An authentication request too malformed to check: it counts as a failure of ``client_ip`` (a locked-out
    address is told so instead)."""
    check_lockout(client_ip=client_ip)
    _count_failure(client_ip)


def check_lockout(*, client_ip: str) -> None:
    """Past AUTH_LOCKOUT_FAILURES within AUTH_LOCKOUT_SECONDS an address is refused outright until the window
    ends, on every process sharing the cache."""
    if _failures(client_ip) >= settings.AUTH_LOCKOUT_FAILURES:
        raise DomainError(Code.LOCKED_OUT, "too many failed authentications from this address; "
                          f"try again in up to {settings.AUTH_LOCKOUT_SECONDS} s")


def _lockout_key(client_ip: str) -> str:
    return f"auth-failures:{client_ip}"


def _with_cache(operation):
    """Run ``operation(cache)`` on the shared cache, or on this process's own while the shared one (Redis) is
    unreachable: authentication never depends on Redis; the lock-out is then counted per process."""
    try:
        return operation(caches["default"])
    except Exception as exc:
        logger.warning("shared cache unavailable (%s): lock-out counted in this process", type(exc).__name__)
        return operation(caches["local"])


def _failures(client_ip: str) -> int:
    # No address (an in-process test harness, never Daphne): nothing to attribute failures to.
    return _with_cache(lambda cache: cache.get(_lockout_key(client_ip), 0)) if client_ip else 0


def _count_failure(client_ip: str) -> None:
    def count(cache):
        key = _lockout_key(client_ip)
        cache.add(key, 0, timeout=settings.AUTH_LOCKOUT_SECONDS)  # the window starts at the first failure
        try:
            cache.incr(key)
        except ValueError:  # expired between add and incr: a new window
            cache.add(key, 1, timeout=settings.AUTH_LOCKOUT_SECONDS)

    if client_ip:
        _with_cache(count)


def admit_peer(*, address: str, channel_name: str = "", client_address: str = "") -> Peer:
    """Record the peer's sign-in (and its connection, for presence), or refuse it when disabled or not on
    OPERATOR_ALLOWED_PEERS."""
    allowed = {a.lower() for a in settings.OPERATOR_ALLOWED_PEERS}
    if allowed and address.lower() not in allowed:
        raise DomainError(Code.PEER_DISABLED, "this peer is not allowed on this operator")
    now = timezone.now()
    with transaction.atomic():
        peer, _ = Peer.objects.select_for_update().get_or_create(address=address)
        if peer.is_disabled:
            raise DomainError(Code.PEER_DISABLED, "this peer is disabled")
        limit = settings.MAX_CONNECTIONS_PER_PEER
        if channel_name and limit:  # counted under the peer's row lock: two sign-ins cannot both take the last
            live = PeerConnection.objects.filter(selectors.LIVE, peer=peer).exclude(channel_name=channel_name).count()
            if live >= limit:
                raise DomainError(Code.CONNECTION_LIMIT, f"this peer already has {live} live connections "
                                    f"(limit {limit}); close one first")
        peer.first_seen = peer.first_seen or now
        peer.last_seen = now
        peer.save(update_fields=["first_seen", "last_seen"])
        if channel_name:
            presence.connected(peer=peer, channel_name=channel_name, client_address=client_address)
    return peer
