"""docs/protocol.md section 6: notifications go to every subscribed connection of a party, and only to them."""
import asyncio
import os

import pytest

pytestmark = pytest.mark.django_db(transaction=True)


async def test_all_subscribed_connections_of_a_peer_get_notifications_and_unsubscribed_ones_do_not(pair, connect):
    alice, bob, channel_id = pair
    bob_second = await (await connect(bob.account)).subscribe()
    bob_quiet = await connect(bob.account)  # authenticated, never subscribed
    await alice.record(channel_id, external_id="1", amount="2", price="10")
    for client in (bob, bob_second):
        note = await client.notification("position_notification")
        assert note["data"]["direction"] == "sell"
    await bob_quiet.expect_nothing()


async def test_subscribers_hear_of_channels_opened_after_they_subscribed(connect):
    alice = await connect()
    bob = await (await connect()).subscribe()
    channel_id = await alice.open_channel(bob)
    note = await bob.notification("stream_notification", action="channelOpened", channel_status="opened")
    assert note["data"]["channel_id"] == channel_id and note["data"]["my_role"] == "Responder"
    await alice.expect_nothing()  # alice did not subscribe


async def test_an_outsider_never_hears_of_other_peers_channels(pair, connect):
    alice, bob, channel_id = pair
    mallory = await (await connect()).subscribe()
    await alice.record(channel_id, external_id="1", amount="2", price="10")
    await bob.record(channel_id, external_id="2", amount="1", price="12")
    await mallory.expect_nothing(timeout=0.5)


@pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="the idle time-out concerns channels-redis only")
async def test_a_subscriber_idle_longer_than_redis_timeouts_still_gets_its_notification(pair):
    alice, bob, channel_id = pair
    await asyncio.sleep(11)  # longer than redis-py's and channels-redis' 5 s socket/blocking timeouts
    await alice.record(channel_id, external_id="late", amount="1", price="10")
    note = await bob.notification("position_notification", timeout=5)
    assert note["data"]["market"] == "ETH/USD"
