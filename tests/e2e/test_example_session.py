"""End to end: the README's example session (``examples/session.py``) run as a broker would, against a real Daphne.

It must go through every step of "The protocol in one session", close included, print every frame, exit 0, and
leave the channel ``closed`` in the server's database; a step the server refuses must end it with a non-zero exit
and a clear message.
"""
import json
import re
import subprocess
import sys

import pytest

from channels_app.models import Channel
from tests.e2e.servers import REPO, daphne

pytestmark = pytest.mark.e2e

FRAME = re.compile(r"^  (alice|bob) (<-|->) (\{.*\})$")


def run_example(url: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "examples/session.py", url], cwd=REPO, capture_output=True, text=True,
                          timeout=120)


def frames(stdout: str) -> dict[tuple[str, str], list[dict]]:
    """The frames the example printed, by (broker, direction): ``("alice", "->")`` are the ones Alice sent."""
    seen: dict[tuple[str, str], list[dict]] = {}
    for line in stdout.splitlines():
        if match := FRAME.match(line):
            seen.setdefault((match[1], match[2]), []).append(json.loads(match[3]))
    return seen


def test_the_example_session_runs_every_step_through_close(daphne_server):
    host, port = daphne_server
    result = run_example(f"ws://{host}:{port}/")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    seen = frames(result.stdout)

    sent = {who: [f["event"] for f in seen.get((who, "->"), [])] for who in ("alice", "bob")}
    received = {who: seen.get((who, "<-"), []) for who in ("alice", "bob")}
    for who in ("alice", "bob"):
        events = [f["event"] for f in received[who]]
        assert events[:3] == ["version", "identity_address", "challenge"], events  # 1. connect
        assert sent[who][:2] == ["authenticate", "subscribe_notifications"]  # 2., 3.
        assert "error" not in events, received[who]
        actions = [f["data"].get("action") for f in received[who] if f["event"] == "stream_notification"]
        states = [f["data"]["state"] for f in received[who] if f["event"] == "settlement_notification"]
        opened = [f["data"]["channel_status"] for f in received[who] if f["event"] == "stream_notification"
                  and f["data"]["action"] == "channelOpened"]
        assert opened == ["opening", "opened"], opened  # 4. proposed, then consented to
        assert "position_notification" in events and "marginUpdated" in actions  # 5.
        assert states == ["proposed", "accepted", "initiated", "prepared", "executed", "completed"], states  # 8.
        assert "channelSettled" in actions
        assert actions[-1] == "channelClosed", actions  # 9.: both parties hear it, last
        closed = [f for f in received[who] if f["event"] == "stream_notification"][-1]
        assert closed["data"]["channel_status"] == "closed"

    replies = {f["event"]: f for who in ("alice", "bob") for f in received[who]
               if f["event"] not in ("stream_notification", "position_notification", "settlement_notification")}
    for event in ("authenticate", "open_channel", "record_trade", "positions", "channel_jwt", "request_settlement",
                  "close_channel"):
        assert event in replies, f"no reply to {event} in:\n{result.stdout}"
    assert sent["alice"][2:] == ["open_channel", "record_trade", "positions", "channel_jwt", "request_settlement",
                                 "close_channel"]
    assert sent["bob"][2:] == ["open_channel", "record_trade", "positions"]

    channel_id = replies["open_channel"]["data"]["channel_id"]
    assert replies["close_channel"]["data"] == {"channel_id": channel_id}
    assert Channel.objects.get(channel_id=channel_id).status == "closed"  # the server's database
    assert Channel.objects.count() == 1


def test_the_example_session_stops_with_a_clear_message_when_a_step_is_refused(daphne_env):
    daphne_env["OPERATOR_ALLOWED_PEERS"] = "0x" + "00" * 19 + "01"  # the example's fresh keys may not authenticate
    with daphne(daphne_env) as (host, port):
        result = run_example(f"ws://{host}:{port}/")
    assert result.returncode != 0
    assert "authenticate" in result.stderr and "peer_disabled" in result.stderr, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert Channel.objects.count() == 0
