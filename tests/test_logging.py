"""Structured logs: one JSON line per request with the peer, its client address, event, reqid and outcome; no
secret (signature, keys) in any of them."""
import json
import logging

import pytest
from django.conf import settings

from channels_app.identity import operator_keys
from tests.client import sign

pytestmark = pytest.mark.django_db(transaction=True)


def rendered(caplog) -> list[dict]:
    """The request records as the configured (JSON) formatter writes them."""
    formatter = logging.getLogger().handlers[0].formatter
    return [json.loads(formatter.format(r)) for r in caplog.records if r.name == "operatorapi.requests"]


async def test_each_request_is_one_json_line_with_peer_reqid_and_outcome(connect, caplog):
    caplog.set_level(logging.INFO, logger="operatorapi.requests")
    client = await connect(login=False)
    signature = sign(client.account, client.challenge)
    await client.ok("authenticate", {"challenge": client.challenge, "signature": signature})
    await client.error("positions", {"channel_id": "0x" + "00" * 32}, code="channel_not_found")
    await client.send_raw(text="{nope")
    await client.recv()

    auth, positions, garbage = rendered(caplog)
    assert auth["event"] == "authenticate" and auth["outcome"] == "ok" and auth["level"] == "INFO"
    assert auth["peer"] == client.address  # known once signed in
    assert positions["event"] == "positions" and positions["reqid"] == 2
    assert positions["outcome"] == "channel_not_found" and positions["peer"] == client.address
    assert garbage["event"] is None and garbage["outcome"] == "invalid_json" and garbage["reqid"] == 0
    assert all({"time", "logger", "client", "ms"} <= set(line) for line in (auth, positions, garbage))

    everything = "\n".join(logging.getLogger().handlers[0].formatter.format(r) for r in caplog.records)
    keys = operator_keys()
    for secret in (signature[2:], settings.SECRET_KEY, keys.account.key.hex()):
        assert secret not in everything
