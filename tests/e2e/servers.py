"""Real Daphne processes for end-to-end tests, on the same database the test run uses.

The servers connect to pytest-django's test database, so the test can check what they stored with the ORM: on
SQLite that is a file (settings: never in-memory; WAL, IMMEDIATE transactions), on PostgreSQL the test database.
Tables are there; the test must use ``transactional_db`` so they are flushed afterwards. With REDIS_URL set, the
servers share that Redis (notifications cross processes); without it each has its own in-memory channel layer.
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
        assert not connection.is_in_memory_db(), "the servers need the test database in a file"
        env["DATABASE_URL"] = f"sqlite:///{db['NAME']}"
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
        [sys.executable, "-m", "operatorapi.serve", *listen, *extra_args],  # Daphne, its cap from the settings
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


class DaphneProcess:
    """A Daphne that a test kills (SIGKILL) and starts again on the same port, as a crash and a restart."""

    def __init__(self, env: dict):
        self.env, self.port, self.process, self.starts = env, free_port(), None, 0
        self.log = open(Path(env["VAR_DIR"]).parent / f"daphne-{self.port}.log", "a")

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "operatorapi.serve", "-b", "127.0.0.1", "-p", str(self.port)],
            cwd=REPO, env=self.env, stdout=self.log, stderr=subprocess.STDOUT,
        )
        self.starts += 1
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"daphne did not come up on port {self.port}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=1) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.05)

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
        self.log.close()
