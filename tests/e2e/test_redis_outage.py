"""Redis stopped and restarted under a running server (docs/reliability.md): requests keep being answered while it
is down, no connection drops, /healthz says 503, and notifications flow again within 5 s of Redis returning, to the
same connections, without reconnecting or resubscribing. Runs against a private redis-server of its own."""
import asyncio
import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.client import NetworkClient
from tests.e2e.servers import daphne, free_port

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server"),
]


class PrivateRedis:
    """A redis-server on its own port (never the shared one), stopped and started at will on that port."""

    def __init__(self, workdir: Path):
        self.port, self.workdir, self.process = free_port(), workdir, None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self):
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while subprocess.run(["redis-cli", "-p", str(self.port), "ping"], capture_output=True).stdout != b"PONG\n":
            assert time.monotonic() < deadline, "private redis-server did not start"
            time.sleep(0.05)

    def stop(self):
        self.process.kill()
        self.process.wait()


def health(host, port) -> int:
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/healthz", timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.fixture
def redis(tmp_path):
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    if server.process.poll() is None:
        server.stop()


async def test_requests_survive_a_redis_outage_and_notifications_resume_within_5_s(daphne_env, redis, tmp_path):
    env = {**daphne_env, "REDIS_URL": redis.url}
    with daphne(env) as (host, port):
        url = f"ws://{host}:{port}/"
        alice = await (await NetworkClient(url).connect()).login()
        bob = await (await NetworkClient(url).connect()).login()
        try:
            await alice.subscribe()
            await bob.subscribe()
            channel_id = await alice.open_channel(bob, deposit="1000")
            await alice.record(channel_id, external_id="before", amount="1", price="100")
            assert (await bob.notification("position_notification"))["data"]["amount"] == "1"

            redis.stop()
            await alice.record(channel_id, external_id="during-1", amount="1", price="100")
            await bob.record(channel_id, external_id="during-2", direction="buy", amount="3", price="100")
            assert (await alice.positions(channel_id))["ETH/USD"]["amount"] == "1"  # 2 bought, then 3 sold to bob
            assert health(host, port) == 503
            newcomer = await (await NetworkClient(url).connect()).login()  # connecting works during the outage
            await newcomer.subscribe()
            assert (await newcomer.ok("channels"))["data"]["channels"] == []

            redis.start()  # an empty Redis on the same port
            returned = time.monotonic()
            while health(host, port) != 200:
                assert time.monotonic() - returned < 5, "healthz still failing 5 s after Redis returned"
                await asyncio.sleep(0.1)
            # notifications flow again to the same connections: probe until one arrives, within 5 s
            heard, attempt = None, 0
            while heard is None:
                assert time.monotonic() - returned < 5, "no notification within 5 s of Redis returning"
                attempt += 1
                await alice.record(channel_id, external_id=f"after-{attempt}", amount="1", price="100")
                try:
                    heard = await bob.notification("position_notification", timeout=0.5)
                except TimeoutError:
                    pass
            bob.notes.clear()
            await bob.record(channel_id, external_id="after-bob", direction="buy", amount="1", price="100")
            assert (await alice.notification("position_notification", timeout=3))["data"]["market"] == "ETH/USD"
            await newcomer.close()
        finally:
            await alice.close()
            await bob.close()
        log = (Path(env["VAR_DIR"]).parent / f"daphne-{port}.log").read_text()
    records = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert not [r for r in records if r.get("outcome") == "internal_error"]
    assert "Traceback" not in log  # the outage is logged as warnings, not crashes
    warnings = [r["message"] for r in records if r["logger"] == "operatorapi.compat.redis_pubsub"]
    assert any("unreachable" in w for w in warnings) and any("is back" in w for w in warnings)
