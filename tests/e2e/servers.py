"""Real Daphne processes for end-to-end tests, on the same database the test run uses.

SQLite: the server gets a fresh file, migrated by ``manage.py migrate`` (the in-process test database is not
visible to another process). PostgreSQL: the server connects to pytest-django's test database (tables are there;
the test must use ``transactional_db`` so they are flushed afterwards) and to the same Redis.
"""
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT = 30


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_environment(tmp_path: Path) -> dict:
    from django.db import connection

    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(DJANGO_SETTINGS_MODULE="operatorapi.settings", VAR_DIR=str(tmp_path / "var"), PYTHONUNBUFFERED="1")
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        env["DATABASE_URL"] = f"sqlite:///{tmp_path / 'e2e.sqlite3'}"
        subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v0"], cwd=REPO, env=env, check=True)
    else:
        env["DATABASE_URL"] = f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
        if os.environ.get("REDIS_URL"):
            env["REDIS_URL"] = os.environ["REDIS_URL"]
    return env


@contextmanager
def daphne(env: dict, *extra_args: str, tls: tuple[Path, Path] | None = None):
    """A Daphne process serving the project; yields its ``(host, port)`` once /healthz answers 200.

    ``tls=(certificate, private key)``: served over TLS (Daphne's endpoint syntax), so ``https://`` / ``wss://``.
    """
    port = free_port()
    log = open(Path(env["VAR_DIR"]).parent / f"daphne-{port}.log", "w+")
    if tls:
        cert, key = tls
        listen = ["-e", f"ssl:{port}:privateKey={key}:certKey={cert}:interface=127.0.0.1"]
        context = ssl.create_default_context(cafile=str(cert))
        health = f"https://localhost:{port}/healthz"
    else:
        listen, context, health = ["-b", "127.0.0.1", "-p", str(port)], None, f"http://127.0.0.1:{port}/healthz"
    process = subprocess.Popen(
        [sys.executable, "-m", "daphne", *listen, *extra_args, "operatorapi.asgi:application"],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                raise RuntimeError(f"daphne did not come up on port {port}:\n{log.read()[-4000:]}")
            try:
                with urllib.request.urlopen(health, timeout=1, context=context) as response:
                    if response.status == 200:
                        break
            except OSError:
                time.sleep(0.1)
        yield ("localhost" if tls else "127.0.0.1"), port
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
