"""Channel JWTs (ES256) that let a party of a channel into Finex."""
import time
import uuid

import jwt
from django.conf import settings

from channels_app import selectors
from channels_app.errors import Code, DomainError
from channels_app.identity import operator_keys
from channels_app.models import INITIATOR, TRADING_STATUSES, Peer

JWT_ALGORITHM = "ES256"
REQUIRED_CLAIMS = ["iss", "sub", "aud", "channel_id", "role", "counterparty", "iat", "exp", "jti"]


def issue_channel_jwt(*, peer: Peer, channel_id: str) -> str:
    channel = selectors.participant_channel(peer=peer, channel_id=channel_id)
    if channel.status not in TRADING_STATUSES:
        raise DomainError(Code.INVALID_CHANNEL_STATE, f"channel is {channel.status}; a JWT is issued only "
                            "for an opened or settling channel")
    role = channel.role_of(peer.id)
    counterparty = channel.responder if role == INITIATOR else channel.initiator
    keys = operator_keys()
    now = int(time.time())
    claims = {
        "iss": keys.address,
        "sub": peer.address,
        "aud": settings.JWT_AUDIENCE,
        "channel_id": channel.channel_id,
        "role": role,
        "counterparty": counterparty.address,
        "iat": now,
        "exp": now + settings.JWT_TTL_SECONDS,
        "jti": str(uuid.uuid4()),
    }
    return jwt.encode(claims, keys.jwt_private_key, algorithm=JWT_ALGORITHM, headers={"kid": keys.kid})


def verify_channel_jwt(token: str) -> dict:
    """How a verifier (Finex, the tests) checks a token: signature, audience, issuer, every claim present."""
    keys = operator_keys()
    return jwt.decode(
        token,
        keys.jwt_public_key,
        algorithms=[JWT_ALGORITHM],
        audience=settings.JWT_AUDIENCE,
        issuer=keys.address,
        options={"require": REQUIRED_CLAIMS},
    )
