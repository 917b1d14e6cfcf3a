"""HTTP beside the WebSocket (/healthz, JWKS) and the operator's keys (docs/protocol.md sections 1, 4, 9)."""
import os
import stat

import pytest
from django.test import AsyncClient

from channels_app.identity import OperatorKeys, load_or_create_jwt_key, load_or_create_operator_key

pytestmark = pytest.mark.django_db(transaction=True)


async def test_healthz_is_200_with_database_and_channel_layer_reachable():
    response = await AsyncClient().get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": True, "channel_layer": True}


async def test_healthz_is_503_when_the_channel_layer_is_unreachable(settings):
    from channels.layers import channel_layers

    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels_redis.core.RedisChannelLayer",
                                           "CONFIG": {"hosts": ["redis://127.0.0.1:1/0"]}}}
    channel_layers.backends.pop("default", None)
    try:
        response = await AsyncClient().get("/healthz")
    finally:
        channel_layers.backends.pop("default", None)
    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "database": True, "channel_layer": False}


async def test_jwks_serves_the_es256_public_key():
    response = await AsyncClient().get("/.well-known/jwks.json")
    assert response.status_code == 200
    (key,) = response.json()["keys"]
    assert key["kty"] == "EC" and key["crv"] == "P-256" and key["alg"] == "ES256" and key["kid"]
    assert "d" not in key  # never the private part


def test_keys_are_generated_once_with_mode_0600_and_reused(tmp_path):
    operator_key = load_or_create_operator_key(tmp_path)
    jwt_key = load_or_create_jwt_key(tmp_path)
    for name in ("operator_key.hex", "jwt_key.pem"):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o600
    assert load_or_create_operator_key(tmp_path) == operator_key
    assert load_or_create_jwt_key(tmp_path) == jwt_key
    first, again = OperatorKeys(operator_key, jwt_key), OperatorKeys(operator_key, jwt_key)
    assert first.address == again.address and first.kid == again.kid


def test_a_jwt_key_that_is_not_p256_is_refused():
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    pem = ec.generate_private_key(ec.SECP384R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    with pytest.raises(ValueError, match="P-256"):
        OperatorKeys("0x" + "11" * 32, pem)


def test_check_deploy_is_clean_with_a_production_environment(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    env = {k: v for k, v in os.environ.items() if k not in ("DEBUG", "TLS", "BACKOFFICE_2FA")}
    env.update(DEBUG="false", TLS="true", VAR_DIR=str(tmp_path / "var"), ALLOWED_HOSTS="operator.example.com")
    repo = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
                          cwd=repo, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no issues" in done.stdout

    env.pop("TLS")  # plain http in production: the deploy check says what is missing
    done = subprocess.run([sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
                          cwd=repo, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "SECURE_SSL_REDIRECT" in done.stderr + done.stdout
