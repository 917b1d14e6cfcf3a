"""Several Daphne processes sharing PostgreSQL and Redis behave as one server: what is recorded through one
reaches subscribers connected to another."""
import os

import pytest

from tests.client import NetworkClient
from tests.e2e.servers import daphne

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="notifications cross processes through Redis "
                       "(CI runs this on PostgreSQL + Redis)"),
]


async def test_two_processes_act_as_one_server(daphne_env):
    with daphne(daphne_env) as (host1, port1), daphne(daphne_env) as (host2, port2):
        alice = await (await NetworkClient(f"ws://{host1}:{port1}/").connect()).login()
        bob = await (await NetworkClient(f"ws://{host2}:{port2}/").connect()).login()
        bob_too = await (await NetworkClient(f"ws://{host1}:{port1}/", account=bob.account).connect()).login()
        try:
            for client in (alice, bob, bob_too):
                await client.subscribe()
            channel_id = await alice.open_channel(bob, deposit="1000")  # opened through process 1
            for client in (bob, bob_too):  # bob hears it on process 2 and on his second connection on process 1
                opened = await client.notification("stream_notification", action="channelOpened")
                assert opened["data"]["channel_id"] == channel_id and opened["data"]["my_role"] == "Responder"

            await bob.record(channel_id, external_id="p2-1", direction="buy", amount="2", price="100")  # process 2
            note = await alice.notification("position_notification")  # ... reaches alice on process 1
            assert (note["data"]["direction"], note["data"]["amount"]) == ("sell", "2")
            await alice.record(channel_id, external_id="p1-1", direction="buy", amount="1", price="120")
            # alice was short 2 @100 and bought 1 @120: realized -20, short 1 marked at 120: -20 more
            for client in (alice, bob, bob_too):
                margin = await client.notification("stream_notification", action="marginUpdated")
                assert (margin["data"]["initiator_margin_balance"], margin["data"]["follower_margin_balance"]) == (
                    "960", "1040")
            view2 = (await bob.positions(channel_id))["ETH/USD"]
            view1 = (await bob_too.positions(channel_id))["ETH/USD"]
            assert view1 == view2  # one book, whichever process answers
        finally:
            for client in (alice, bob, bob_too):
                await client.close()
