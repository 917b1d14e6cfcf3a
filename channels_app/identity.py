"""The operator's keys: its Ethereum identity (secp256k1) and the ES256 key (P-256) that signs channel JWTs.

Each comes from the environment or, when unset, is generated once into ``VAR_DIR`` (mode 0600) and reused on
every later start, so a restarted node keeps its identity and the JWTs it issued stay verifiable.
"""
import base64
import hashlib
import json
import os
import secrets
from functools import lru_cache
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from eth_account import Account
from jwt.algorithms import ECAlgorithm

OPERATOR_KEY_FILE = "operator_key.hex"
JWT_KEY_FILE = "jwt_key.pem"
SECRET_KEY_FILE = "secret_key.txt"


def _read_or_create(path: Path, create) -> str:
    """Return the file's text, first writing ``create()`` into it (0600, exclusively) if it does not exist."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    value = create().strip()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process won the race: use its key
        return path.read_text().strip()
    with os.fdopen(fd, "w") as fh:
        fh.write(value + "\n")
    return value


def load_or_create_secret_key(var_dir: Path) -> str:
    return _read_or_create(Path(var_dir) / SECRET_KEY_FILE, lambda: secrets.token_urlsafe(50))


def load_or_create_operator_key(var_dir: Path) -> str:
    return _read_or_create(Path(var_dir) / OPERATOR_KEY_FILE, lambda: "0x" + secrets.token_hex(32))


def load_or_create_jwt_key(var_dir: Path) -> str:
    def create():
        key = ec.generate_private_key(ec.SECP256R1())
        return key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()

    return _read_or_create(Path(var_dir) / JWT_KEY_FILE, create)


def jwk_thumbprint(public_jwk: dict) -> str:
    """RFC 7638 thumbprint of an EC public JWK: the ``kid`` a verifier uses to pick the key."""
    canonical = json.dumps({k: public_jwk[k] for k in ("crv", "kty", "x", "y")}, separators=(",", ":"))
    return base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()).rstrip(b"=").decode()


class OperatorKeys:
    """The loaded keys, with what the protocol derives from them (address, JWKS, kid)."""

    def __init__(self, operator_private_key: str, jwt_private_pem: str):
        self.account = Account.from_key(operator_private_key)
        self.jwt_private_key = serialization.load_pem_private_key(jwt_private_pem.encode(), password=None)
        if not isinstance(self.jwt_private_key, ec.EllipticCurvePrivateKey) or not isinstance(
            self.jwt_private_key.curve, ec.SECP256R1
        ):
            raise ValueError("JWT_PRIVATE_KEY must be a P-256 (prime256v1) EC private key for ES256")
        self.jwt_public_key = self.jwt_private_key.public_key()
        public_jwk = ECAlgorithm.to_jwk(self.jwt_public_key, as_dict=True)
        self.kid = jwk_thumbprint(public_jwk)
        self.public_jwk = {**public_jwk, "kid": self.kid, "use": "sig", "alg": "ES256"}

    @property
    def address(self) -> str:
        return self.account.address

    def jwks(self) -> dict:
        return {"keys": [self.public_jwk]}


@lru_cache(maxsize=1)
def operator_keys() -> OperatorKeys:
    from django.conf import settings

    return OperatorKeys(
        settings.OPERATOR_PRIVATE_KEY or load_or_create_operator_key(settings.VAR_DIR),
        settings.JWT_PRIVATE_KEY or load_or_create_jwt_key(settings.VAR_DIR),
    )
