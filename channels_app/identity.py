"""The operator's keys: its Ethereum identity (secp256k1) and the ES256 key (P-256) that signs channel JWTs.

Each comes from the environment (``OPERATOR_PRIVATE_KEY``, ``JWT_PRIVATE_KEY``). Only in development
(``OPERATOR_DEV_KEYS=true``, settings ``GENERATE_MISSING_KEYS``: ``scripts/run`` on the embedded default, the tests)
is an unset one generated once into ``VAR_DIR`` (mode 0600) and reused on every later start, so a restarted node
keeps its identity and the JWTs it issued stay verifiable. Anywhere else a missing key is an error (the system
check ``operatorapi.E001``, channels_app/checks.py): two hosts must never announce two identities.
"""
import base64
import hashlib
import json
import os
import secrets
from functools import lru_cache
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
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


def load_jwt_private_key(pem: str) -> ec.EllipticCurvePrivateKey:
    """The ES256 signing key from its unencrypted PEM; ValueError unless it is a P-256 EC private key."""
    try:
        key = serialization.load_pem_private_key(pem.encode(), password=None)
    except (TypeError, ValueError, UnsupportedAlgorithm) as exc:  # the message never quotes the key
        raise ValueError(f"JWT_PRIVATE_KEY is not an unencrypted PEM private key ({type(exc).__name__})") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ValueError("JWT_PRIVATE_KEY must be a P-256 (prime256v1) EC private key for ES256")
    return key


# What each key is and how to provide it: the system check (operatorapi.E001) and operator_keys() say the same.
KEY_VARIABLES = {
    "SECRET_KEY": "Django's secret key (back-office sessions, CSRF, password reset): a long random string, the same "
                  "on every host, e.g. the output of python -c \"import secrets; print(secrets.token_urlsafe(50))\"",
    "OPERATOR_PRIVATE_KEY": "the operator's Ethereum identity: a secp256k1 private key, 0x and 64 hex digits, the "
                            "same on every host",
    "JWT_PRIVATE_KEY": "the ES256 key that signs channel JWTs: a P-256 (prime256v1) private key in PEM, the same on "
                       "every host, e.g. from openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256",
}
DEV_KEYS_HINT = ("OPERATOR_DEV_KEYS=true instead generates missing keys into VAR_DIR (mode 0600), for development "
                 "only: each host would make up its own.")


def missing_key_message(variable: str) -> str:
    return f"{variable} is not set: outside development the keys come from the environment only."


def missing_key_hint(variable: str) -> str:
    return f"Set {variable} to {KEY_VARIABLES[variable]}. {DEV_KEYS_HINT}"


def jwk_thumbprint(public_jwk: dict) -> str:
    """RFC 7638 thumbprint of an EC public JWK: the ``kid`` a verifier uses to pick the key."""
    canonical = json.dumps({k: public_jwk[k] for k in ("crv", "kty", "x", "y")}, separators=(",", ":"))
    return base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()).rstrip(b"=").decode()


class OperatorKeys:
    """The loaded keys, with what the protocol derives from them (address, JWKS, kid)."""

    def __init__(self, operator_private_key: str, jwt_private_pem: str):
        self.account = Account.from_key(operator_private_key)
        self.jwt_private_key = load_jwt_private_key(jwt_private_pem)
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
    """The operator's keys from the settings; missing ones generated into VAR_DIR only when GENERATE_MISSING_KEYS."""
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured

    operator_key, jwt_key = settings.OPERATOR_PRIVATE_KEY, settings.JWT_PRIVATE_KEY
    if getattr(settings, "GENERATE_MISSING_KEYS", False):
        operator_key = operator_key or load_or_create_operator_key(settings.VAR_DIR)
        jwt_key = jwt_key or load_or_create_jwt_key(settings.VAR_DIR)
    missing = [name for name, value in (("OPERATOR_PRIVATE_KEY", operator_key), ("JWT_PRIVATE_KEY", jwt_key))
               if not value]
    if missing:
        raise ImproperlyConfigured(" ".join(f"{missing_key_message(name)} {missing_key_hint(name)}"
                                            for name in missing))
    return OperatorKeys(operator_key, jwt_key)
