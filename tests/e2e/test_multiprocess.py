"""Several Daphne processes sharing the database (and Redis) behave as one server: a channel opened through one is
usable through another, and what is recorded through one reaches subscribers connected to another."""
import os

import pytest
from channels.db import database_sync_to_async

from channels_app.models import Trade
from tests.client import NetworkClient, trade
from tests.e2e.servers import daphne

pytestmark = pytest.mark.e2e

needs_redis = pytest.mark.skipif(
    not os.environ.get("REDIS_URL"),
    reason="notifications cross processes only through a shared Redis channel layer; without REDIS_URL each "
           "process has its own in-memory layer (CI runs this on PostgreSQL + Redis)")


@database_sync_to_async  # and gives the connection back, so the test database can be dropped at the end
def stored_external_ids(channel_id):
    return sorted(Trade.objects.filter(channel__channel_id=channel_id).values_list("external_id", flat=True))


async def connected(host, port, account=None, subscribe=True):
    client = await (await NetworkClient(f"ws://{host}:{port}/", account=account).connect()).login()
    return await client.subscribe() if subscribe else client


async def test_requests_on_either_process_work_on_one_book(daphne_env):
    """Request/reply needs only the shared database, so this holds on SQLite (two writers queue on the file) too."""
    with daphne(daphne_env) as first, daphne(daphne_env) as second:
        alice = await connected(*first, subscribe=False)
        bob = await connected(*second, subscribe=False)
        try:
            channel_id = await alice.open_channel(bob, deposit="1000")  # through process 1
            await bob.record(channel_id, external_id="b-1", direction="sell", amount="2", price="100")  # process 2
            await alice.record(channel_id, external_id="a-1", direction="sell", amount="1", price="110")
            # the same execution reported by alice through process 1: a replay, answered the same, stored once
            replay = await alice.record(channel_id, external_id="b-1", direction="buy", amount="2", price="100")
            assert replay["data"] == {"channel_id": channel_id, "external_id": "b-1"}
            # the same id with other content is refused, whichever process it reaches
            await alice.error("record_trade", trade(channel_id, external_id="b-1", direction="buy", amount="3",
                                                    price="100"), code="duplicate_trade")

            # alice bought 2 @100 and sold 1 @110: long 1, cost 100, realized +10, marked at 110: +10 more
            mine, theirs = (await alice.positions(channel_id))["ETH/USD"], (await bob.positions(channel_id))["ETH/USD"]
            assert (mine["direction"], mine["amount"], mine["cost"], mine["pnl"], mine["realized_pnl"]) == (
                "buy", "1", "100", "10", "10")
            assert (theirs["direction"], theirs["amount"], theirs["cost"], theirs["pnl"], theirs["realized_pnl"]) == (
                "sell", "1", "100", "-10", "-10")
            for client in (alice, bob):
                [listed] = (await client.ok("channels"))["data"]["channels"]
                assert (listed["channel_id"], listed["initiator_margin_balance"],
                        listed["follower_margin_balance"]) == (channel_id, "1020", "980")
            assert await stored_external_ids(channel_id) == ["a-1", "b-1"]
        finally:
            await alice.close()
            await bob.close()


@needs_redis
async def test_trades_recorded_through_one_process_reach_subscribers_on_the_other(daphne_env):
    with daphne(daphne_env) as first, daphne(daphne_env) as second:
        alice = await connected(*first)
        bob = await connected(*second)
        bob_too = await connected(*first, account=bob.account)  # bob's second connection, on process 1
        try:
            channel_id = await alice.open_channel(bob, deposit="1000")  # opened through process 1 ...
            for client in (bob, bob_too):  # ... bob hears it on process 2 and on process 1
                opened = await client.notification("stream_notification", action="channelOpened",
                                                   channel_status="opened")
                assert opened["data"]["channel_id"] == channel_id and opened["data"]["my_role"] == "Responder"

            await alice.record(channel_id, external_id="p1-1", direction="buy", amount="2", price="100")  # process 1
            for client in (bob, bob_too):
                note = await client.notification("position_notification")
                assert (note["data"]["direction"], note["data"]["amount"], note["data"]["cost"]) == ("sell", "2", "200")

            await bob.record(channel_id, external_id="p2-1", direction="buy", amount="1", price="120")  # process 2
            # alice sold 1 of her 2 @120: realized +20, the other marked at 120: +20; margins 1040 / 960
            await alice.notification("position_notification", amount="2")  # her own trade's, from process 1
            note = await alice.notification("position_notification")
            assert (note["data"]["direction"], note["data"]["amount"], note["data"]["cost"], note["data"]["pnl"],
                    note["data"]["realized_pnl"]) == ("buy", "1", "100", "20", "20")
            for client in (alice, bob, bob_too):
                margin = await client.notification("stream_notification", action="marginUpdated")
                assert (margin["data"]["initiator_margin_balance"], margin["data"]["follower_margin_balance"]) == (
                    "1040", "960")

            await alice.record(channel_id, external_id="p1-2", direction="sell", amount="1", price="90")  # process 1
            # flat: realized 20 - 10 = +10
            for client in (bob, bob_too):
                await client.notification("position_notification", amount="1")  # the one of trade p2-1
                note = await client.notification("position_notification")
                assert (note["data"]["status"], note["data"]["realized_pnl"]) == ("closed", "-10")
            await alice.notification("position_notification", status="closed")
            for client in (alice, bob, bob_too):
                margin = await client.notification("stream_notification", action="marginUpdated")
                assert (margin["data"]["initiator_margin_balance"], margin["data"]["follower_margin_balance"]) == (
                    "1010", "990")
            assert await bob.positions(channel_id) == await bob_too.positions(channel_id) == {}
            for client in (alice, bob, bob_too):
                await client.expect_nothing()  # each notification arrived once, not once per process
        finally:
            for client in (alice, bob, bob_too):
                await client.close()
