"""End to end: a real Daphne process, real sockets, the ``websockets`` client; every frame checked against the spec."""
import json
import urllib.request

import jwt
import pytest

from tests.client import NetworkClient, trade

pytestmark = pytest.mark.e2e


def http_json(host, port, path):
    with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=5) as response:
        return response.status, json.loads(response.read())


async def test_a_broker_pair_session_over_a_real_daphne(daphne_server):
    host, port = daphne_server
    url = f"ws://{host}:{port}/"
    alice = await (await NetworkClient(url).connect()).login()
    bob = await (await NetworkClient(url).connect()).login()
    try:
        assert alice.greeting[0]["data"] == {"version": "1.0.0"}
        await alice.subscribe()
        await bob.subscribe()
        channel_id = await alice.open_channel(bob, deposit="1000", name="Bob")
        for client, role in ((alice, "Initiator"), (bob, "Responder")):
            opened = await client.notification("stream_notification", action="channelOpened", channel_status="opened")
            assert opened["data"]["my_role"] == role and opened["data"]["channel_status"] == "opened"

        await alice.record(channel_id, external_id="a-1", direction="buy", amount="2", price="100")
        await bob.record(channel_id, external_id="b-1", direction="sell", amount="1", price="110")  # alice buys 1
        await alice.record(channel_id, external_id="a-1", direction="buy", amount="2", price="100")  # a replay
        # alice long 3, cost 310, mark 110 => pnl +20; bob the mirror
        mine, theirs = (await alice.positions(channel_id))["ETH/USD"], (await bob.positions(channel_id))["ETH/USD"]
        assert (mine["direction"], mine["amount"], mine["cost"], mine["market_value"], mine["pnl"]) == (
            "buy", "3", "310", "330", "20")
        assert (theirs["direction"], theirs["amount"], theirs["cost"], theirs["pnl"]) == ("sell", "3", "310", "-20")
        margin = await bob.notification("stream_notification", action="marginUpdated",
                                        initiator_margin_balance="1020")
        assert margin["data"]["follower_margin_balance"] == "980"

        token = (await bob.ok("channel_jwt", {"channel_id": channel_id}))["data"]["jwt"]
        status, jwks = http_json(host, port, "/.well-known/jwks.json")
        claims = jwt.decode(token, jwt.PyJWK(jwks["keys"][0]).key, algorithms=["ES256"], audience="finex",
                            options={"require": ["exp", "iat", "iss", "sub", "jti"]})
        assert claims["sub"] == bob.address and claims["role"] == "Responder" and claims["channel_id"] == channel_id

        await alice.ok("request_settlement", {"channel_id": channel_id, "payment_method": "mock", "chain_id": 1,
                                              "markets": ["ETH/USD"]})
        for client in (alice, bob):
            states = []
            while not states or states[-1] != "completed":
                states.append((await client.notification("settlement_notification"))["data"]["state"])
            assert states == ["proposed", "accepted", "initiated", "prepared", "executed", "completed"]
            settled = await client.notification("stream_notification", action="channelSettled")
            assert settled["data"]["initiator_margin_balance"] == "1000"
        assert await alice.positions(channel_id) == {}
        await bob.ok("close_channel", {"channel_id": channel_id})
        assert (await alice.notification("stream_notification", action="channelClosed"))["data"][
            "channel_status"] == "closed"

        error = await alice.error("record_trade", trade(channel_id, external_id="late"), code="invalid_channel_state")
        assert error["error"]
        await alice.send_raw(text="{broken")
        assert (await alice.recv())["data"]["code"] == "invalid_json"
        assert http_json(host, port, "/healthz") == (200, {"status": "ok", "database": True, "channel_layer": True})
    finally:
        await alice.close()
        await bob.close()


async def test_hostile_frames_do_not_hurt_a_real_server(daphne_server):
    """Deep nesting (a C-stack overflow in json.loads before the recursion limit was restored), binary frames, a
    flood: each answered, the connection and the process alive."""
    host, port = daphne_server
    client = await (await NetworkClient(f"ws://{host}:{port}/").connect()).login()
    try:
        await client.send_raw(text="[" * 200000 + "]" * 200000)
        assert (await client.recv())["data"]["code"] == "invalid_json"
        await client.send_raw(binary=b"\x00\xff" * 1000)
        assert (await client.recv())["data"]["code"] == "invalid_message"
        for reqid in range(1, 301):
            await client.send("positions", {"channel_id": "0x" + "00" * 32}, reqid=reqid)
        codes = {(await client.recv())["data"]["code"] for _ in range(300)}
        assert codes == {"channel_not_found"}
        assert (await client.ok("channels"))["data"] == {"channels": []}
        assert http_json(host, port, "/healthz")[0] == 200
    finally:
        await client.close()
