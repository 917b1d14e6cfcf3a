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

from channels_app import pipeline, selectors
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


@dataclass(frozen=True)
class Signature:
    """What an authentication's signature says, found without I/O: the address it recovers to, or the refusal it
    earned (``code``, ``message``). ``check`` runs on the event loop, beside the frames: on a database thread its
    hashing and recovery (a dozen calls into C, each letting the interpreter lock go and taking it back) contended
    with the event loop and cost 7-10% of a handshake (bench/RESULTS.md). ``sign_in`` acts on it after the lock-out
    check, so a locked-out address is told so whatever it sent."""

    address: str | None = None
    refusal: tuple[Code, str] | None = None

    @classmethod
    def check(cls, *, outstanding: Challenge | None, challenge: str, signature: bytes) -> "Signature":
        try:
            return cls(address=recover_signer(outstanding=outstanding, challenge=challenge, signature=signature))
        except DomainError as exc:
            return cls(refusal=(exc.code, exc.message))


def sign_in(*, signature: Signature, client_ip: str, channel_name: str = "", client_address: str = "") -> Peer:
    """An authentication as one unit: lock-out, the signature's verdict (``Signature.check``), admission.

    Every refusal but the connection limit counts as a failed authentication of ``client_ip`` (``refuse``).
    """
    check_lockout(client_ip=client_ip)
    try:
        if signature.refusal is not None:
            raise DomainError(*signature.refusal)
        return admit_peer(address=signature.address, channel_name=channel_name, client_address=client_address)
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
    """Record the peer's sign-in (and its connection, for presence), or refuse it when disabled, not on
    OPERATOR_ALLOWED_PEERS, or at its connection limit.

    Under the peer's row lock, so two sign-ins cannot both take the last connection. On PostgreSQL one round trip
    (``_admit_in_one_round_trip``): a handshake waits on nothing else of the database.
    """
    allowed = {a.lower() for a in settings.OPERATOR_ALLOWED_PEERS}
    if allowed and address.lower() not in allowed:
        raise DomainError(Code.PEER_DISABLED, "this peer is not allowed on this operator")
    if pipeline.own_transaction():
        return _admit_in_one_round_trip(address=address, channel_name=channel_name, client_address=client_address)
    now = timezone.now()
    with transaction.atomic():
        peer, _ = Peer.objects.select_for_update().get_or_create(address=address)
        if peer.is_disabled:
            raise DomainError(Code.PEER_DISABLED, "this peer is disabled")
        limit = settings.MAX_CONNECTIONS_PER_PEER
        if channel_name and limit:  # counted under the peer's row lock: two sign-ins cannot both take the last
            live = PeerConnection.objects.filter(selectors.LIVE, peer=peer).exclude(channel_name=channel_name).count()
            if live >= limit:
                raise _connection_limit(live, limit)
        peer.first_seen = peer.first_seen or now
        peer.last_seen = now
        peer.save(update_fields=["first_seen", "last_seen"])
        if channel_name:
            presence.connected(peer=peer, channel_name=channel_name, client_address=client_address)
    return peer


def _connection_limit(live: int, limit: int) -> DomainError:
    return DomainError(Code.CONNECTION_LIMIT, f"this peer already has {live} live connections (limit {limit}); "
                       "close one first")


PEER, CONNECTION = Peer._meta.db_table, PeerConnection._meta.db_table
# The peer row (created if new), then locked; then, on a snapshot taken under the lock, the live connections
# counted and, only if the peer may come in, its sign-in times and its connection written: the same rules as the
# ORM branch of ``admit_peer``, in one round trip with BEGIN and COMMIT.
CREATE_PEER = pipeline.Prepared("admit_create_peer", (
    f"INSERT INTO {PEER} (address, name, url, is_disabled, created_at) VALUES (%s, '', '', false, %s) "
    "ON CONFLICT (address) DO NOTHING"))
LOCK_PEER = pipeline.Prepared(
    "admit_lock_peer", f"SELECT id, is_disabled, name, url, first_seen FROM {PEER} WHERE address = %s FOR UPDATE")
ADMIT = pipeline.Prepared("admit", (
    f"WITH p AS (SELECT id, is_disabled FROM {PEER} WHERE address = %s), "
    f"live AS (SELECT count(*) AS n FROM {CONNECTION} c, p WHERE c.peer_id = p.id AND c.expires_at > now() "
    "AND c.channel_name <> %s), "
    "ok AS (SELECT p.id FROM p, live WHERE NOT p.is_disabled AND (%s::text = '' OR %s::int = 0 OR live.n < %s::int)), "
    f"seen AS (UPDATE {PEER} SET first_seen = COALESCE(first_seen, %s), last_seen = %s "
    "WHERE id IN (SELECT id FROM ok) RETURNING id), "
    f"present AS (INSERT INTO {CONNECTION} (channel_name, peer_id, server, client_address, connected_at, expires_at) "
    "SELECT %s::text, ok.id, %s::text, %s::text, %s::timestamptz, now() + make_interval(secs => %s) FROM ok "
    "WHERE %s::text <> '' "
    "ON CONFLICT (channel_name) DO UPDATE SET peer_id = EXCLUDED.peer_id, server = EXCLUDED.server, "
    "client_address = EXCLUDED.client_address, expires_at = EXCLUDED.expires_at RETURNING id) "
    "SELECT live.n, (SELECT count(*) FROM seen) FROM live"))


def _admit_in_one_round_trip(*, address: str, channel_name: str, client_address: str) -> Peer:
    now = timezone.now()
    limit = settings.MAX_CONNECTIONS_PER_PEER
    (peer_row,), ((live, admitted),) = pipeline.run([
        pipeline.BEGIN, (CREATE_PEER, [address, now]), (LOCK_PEER, [address]),
        (ADMIT, [address, channel_name, channel_name, limit, limit, now, now, channel_name, presence.SERVER,
                 client_address[:100], now, settings.PRESENCE_LEASE_SECONDS, channel_name]),
        pipeline.COMMIT])[1:]
    key, disabled, name, url, first_seen = peer_row
    if disabled:
        raise DomainError(Code.PEER_DISABLED, "this peer is disabled")
    if not admitted:
        raise _connection_limit(live, limit)
    return Peer(id=key, address=address, name=name, url=url, is_disabled=False, first_seen=first_seen or now,
                last_seen=now)
