"""Outside development a host never makes up its keys (README "Production", docs/protocol.md section 9).

With ``OPERATOR_DEV_KEYS`` off (the default) a missing SECRET_KEY, OPERATOR_PRIVATE_KEY or JWT_PRIVATE_KEY is the
system check error ``operatorapi.E001``: every ``manage.py`` command and ``check --deploy`` report it, and the
server (Daphne, which runs no checks itself: operatorapi/asgi.py runs them) refuses to start, naming each variable.
Nothing is generated into VAR_DIR. With ``OPERATOR_DEV_KEYS=true`` (scripts/run's embedded default, this test suite)
missing keys are generated once into VAR_DIR (mode 0600) and reused.
"""
import json
import os
import secrets
import socket
import stat
import subprocess
import sys
import time
import urllib.request

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from django.core.exceptions import ImproperlyConfigured
from django.core.management import CommandError, call_command

from channels_app.identity import operator_keys
from tests.e2e.servers import REPO, daphne, free_port

VARIABLES = ("SECRET_KEY", "OPERATOR_PRIVATE_KEY", "JWT_PRIVATE_KEY")
KEY_FILES = ("secret_key.txt", "operator_key.hex", "jwt_key.pem")


def production_environment(tmp_path, **extra) -> dict:
    """The suite's environment minus DEBUG, the three keys and OPERATOR_DEV_KEYS; its own VAR_DIR and SQLite file."""
    drop = {"DEBUG", "TLS", "OPERATOR_DEV_KEYS", "BACKOFFICE_2FA", "DATABASE_URL", "REDIS_URL", *VARIABLES}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    (tmp_path / "var").mkdir(exist_ok=True)
    env.update(DJANGO_SETTINGS_MODULE="operatorapi.settings", VAR_DIR=str(tmp_path / "var"), PYTHONUNBUFFERED="1",
               DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}", **extra)
    return env


def p256_pem() -> str:
    return ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()


def check_deploy(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "manage.py", "check", "--deploy", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)


def test_check_deploy_without_the_keys_fails_naming_each_and_generates_nothing(tmp_path):
    env = production_environment(tmp_path)
    done = check_deploy(env)
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    for variable in VARIABLES:
        assert f"(operatorapi.E001) {variable} is not set" in output, output
        assert f"HINT: Set {variable} to" in output
    assert output.count("OPERATOR_DEV_KEYS=true") == 3  # each says how development gets its keys instead
    assert sorted(os.listdir(tmp_path / "var")) == []  # no key made up


@pytest.mark.e2e
def test_daphne_without_the_keys_exits_naming_them_and_never_listens(tmp_path):
    env, port = production_environment(tmp_path), free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "operatorapi.asgi:application"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline, accepted = time.monotonic() + 60, False
        while process.poll() is None and time.monotonic() < deadline:
            with socket.socket() as sock:
                sock.settimeout(0.2)
                accepted = accepted or sock.connect_ex(("127.0.0.1", port)) == 0
            time.sleep(0.05)
        assert process.poll() is not None, "daphne kept running without its keys"
        output = process.stdout.read()
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
        process.stdout.close()
    assert process.returncode != 0 and not accepted, output
    assert "the server refuses to start" in output
    for variable in VARIABLES:
        assert f"(operatorapi.E001) {variable} is not set" in output, output
    assert os.listdir(tmp_path / "var") == []


@pytest.mark.e2e
def test_with_operator_dev_keys_the_server_generates_its_keys_once_and_reuses_them(tmp_path):
    env = production_environment(tmp_path, OPERATOR_DEV_KEYS="true")
    var = tmp_path / "var"

    def served_kid() -> str:
        with daphne(env) as (host, port):
            with urllib.request.urlopen(f"http://{host}:{port}/.well-known/jwks.json", timeout=5) as response:
                return json.loads(response.read())["keys"][0]["kid"]

    kid = served_kid()
    contents = {}
    for name in KEY_FILES:
        assert stat.S_IMODE(os.stat(var / name).st_mode) == 0o600, name
        contents[name] = (var / name).read_text()
    assert served_kid() == kid  # restarted: the same keys, from VAR_DIR
    assert {name: (var / name).read_text() for name in KEY_FILES} == contents


def test_check_deploy_with_the_three_keys_given_is_clean(tmp_path):
    operator_key, jwt_pem = "0x" + secrets.token_hex(32), p256_pem()
    env = production_environment(tmp_path, SECRET_KEY=secrets.token_urlsafe(50), OPERATOR_PRIVATE_KEY=operator_key,
                                 JWT_PRIVATE_KEY=jwt_pem.replace("\n", "\\n"),  # one line, as in many secret stores
                                 TLS="true", ALLOWED_HOSTS="operator.example.com")
    done = check_deploy(env, "--fail-level", "WARNING")
    assert done.returncode == 0 and "operatorapi." not in done.stdout + done.stderr, done.stdout + done.stderr
    assert os.listdir(tmp_path / "var") == []


def test_given_keys_that_do_not_parse_are_named_without_being_quoted(settings):
    from channels_app import checks as key_checks

    settings.OPERATOR_PRIVATE_KEY = "0x" + "zz" * 32
    settings.JWT_PRIVATE_KEY = p256_pem().replace("BEGIN PRIVATE KEY", "BEGIN NOTHING")
    found = {e.id: str(e) for e in key_checks.check_operator_keys()}
    assert set(found) == {"operatorapi.E002", "operatorapi.E003"}
    assert "OPERATOR_PRIVATE_KEY is not a secp256k1 private key" in found["operatorapi.E002"]
    assert "JWT_PRIVATE_KEY is not an unencrypted PEM private key" in found["operatorapi.E003"]
    assert "zzzz" not in found["operatorapi.E002"]
    assert settings.JWT_PRIVATE_KEY.splitlines()[1] not in found["operatorapi.E003"]  # never the key itself

    settings.OPERATOR_PRIVATE_KEY = "0x" + "00" * 32  # not a valid secp256k1 scalar
    settings.JWT_PRIVATE_KEY = ec.generate_private_key(ec.SECP384R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    found = {e.id: str(e) for e in key_checks.check_operator_keys()}
    assert set(found) == {"operatorapi.E002", "operatorapi.E003"}
    assert "JWT_PRIVATE_KEY must be a P-256" in found["operatorapi.E003"]


def test_without_the_switch_operator_keys_raises_instead_of_generating(settings, tmp_path):
    from channels_app import checks as key_checks

    settings.VAR_DIR, settings.GENERATE_MISSING_KEYS = tmp_path, False
    settings.OPERATOR_PRIVATE_KEY = settings.JWT_PRIVATE_KEY = ""
    operator_keys.cache_clear()
    try:
        with pytest.raises(ImproperlyConfigured, match="OPERATOR_PRIVATE_KEY is not set.*JWT_PRIVATE_KEY is not set"):
            operator_keys()
        with pytest.raises(CommandError, match="OPERATOR_PRIVATE_KEY and JWT_PRIVATE_KEY not set.*OPERATOR_DEV_KEYS"):
            call_command("operator_keys", create=True)
        assert [e.id for e in key_checks.check_operator_keys()] == ["operatorapi.E001"] * 2  # SECRET_KEY is set
        assert os.listdir(tmp_path) == []

        settings.JWT_PRIVATE_KEY = p256_pem()
        with pytest.raises(ImproperlyConfigured, match="OPERATOR_PRIVATE_KEY is not set") as refused:
            operator_keys()
        assert "JWT_PRIVATE_KEY" not in str(refused.value)  # only what is missing
        settings.OPERATOR_PRIVATE_KEY = "0x" + secrets.token_hex(32)
        assert operator_keys().address and key_checks.check_operator_keys() == []
    finally:
        operator_keys.cache_clear()
