"""docs/protocol.md section 6: notifications go to every subscribed connection of a party, and only to them."""
import asyncio
import os
import threading

import pytest

from tests.client import SUBSCRIPTION_REQID, trade

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


async def test_notifications_that_arrive_during_a_request_follow_its_reply_all_of_them(pair):
    """A connection that keeps requests coming still hears everything at once: the notifications that arrive while
    one of its requests waits go out right after that request's reply, all of them, before the next request is
    answered. (Channels hands a consumer one channel-layer message per request it handles: a busy connection's
    notifications used to fall ever further behind, bench/RESULTS.md.)"""

    from channels_app import outbox, selectors
    from channels_app.models import Channel
    from channels_app.notices import ChannelNotice, StreamAction
    from operatorapi.dbthreads import on_thread_of

    alice, bob, channel_id = pair

    def news():
        return ChannelNotice(StreamAction.MARGIN_UPDATED,
                             selectors.channel_view(Channel.objects.get(channel_id=channel_id)))

    notice = await on_thread_of(channel_id, news)()  # (a database thread gives its connection back)
    gate = threading.Event()
    held = asyncio.ensure_future(on_thread_of(channel_id, gate.wait)())  # the thread that serves alice's request
    try:
        first = await alice.send("positions", {"channel_id": channel_id})  # waits for that thread
        later = [await alice.send("positions", {"channel_id": channel_id}) for _ in range(2)]
        for _ in range(5):  # five transactions' worth of news, while alice's request waits
            outbox.publish([notice])
        await asyncio.sleep(0.5)  # delivered to alice's consumer meanwhile
    finally:
        gate.set()
        await held
    frames = [await alice.recv() for _ in range(8)]
    assert [(f["event"], f["reqid"]) for f in frames] == [
        ("positions", first), *[("stream_notification", SUBSCRIPTION_REQID)] * 5,
        *[("positions", reqid) for reqid in later]]
    assert all(f["data"]["action"] == "marginUpdated" for f in frames[1:6])


@pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="send_many is the Redis layer's (operatorapi/compat)")
async def test_the_redis_layer_sends_many_messages_in_order_in_one_call(channel_layer):
    """What the publisher hands the Redis layer at once (operatorapi.publisher): groups and single channels, every
    message delivered, each recipient's in the order given."""
    first, second = await channel_layer.new_channel(), await channel_layer.new_channel()
    await channel_layer.group_add("peer.test-a", first)
    await channel_layer.group_add("peer.test-b", second)
    messages = []
    for n in range(150):
        messages.append((True, "peer.test-a", {"type": "notify", "n": n}))
        messages.append((True, "peer.test-b", {"type": "notify", "n": n}))
    messages.append((False, first, {"type": "peer_disabled"}))
    await channel_layer.send_many(messages)
    heard_first = [await asyncio.wait_for(channel_layer.receive(first), 3) for _ in range(151)]
    heard_second = [await asyncio.wait_for(channel_layer.receive(second), 3) for _ in range(150)]
    assert [m.get("n") for m in heard_first] == [*range(150), None]
    assert heard_first[-1]["type"] == "peer_disabled"
    assert [m["n"] for m in heard_second] == list(range(150))


@pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="the inbox is the Redis layer's (operatorapi/compat)")
async def test_on_redis_connections_come_and_go_without_subscribing_and_their_messages_still_arrive(connect):
    """Each event loop subscribes one Redis channel for all its consumers (operatorapi/compat/redis_pubsub.py): a
    connection's start and end send Redis nothing, and a message to a consumer's channel still reaches it (from the
    back office's process: tests/test_admin.py, tests/e2e)."""
    import redis.asyncio
    from channels.layers import get_channel_layer

    from channels_app.models import PeerConnection

    watcher = redis.asyncio.from_url(os.environ["REDIS_URL"])
    try:
        clients = [await connect() for _ in range(4)]
        await clients[0].close()
        subscribed = set(await watcher.pubsub_channels())  # (Redis-wide: other processes' too)
        names = [row.channel_name async for row in PeerConnection.objects.all()]
        assert len(names) == 3
        for name in names:
            inbox, _, own = name.partition("!")
            assert own and inbox.encode() in subscribed and name.encode() not in subscribed
        assert len({name.partition("!")[0] for name in names}) == 1  # one inbox for the loop's consumers
        name = (await PeerConnection.objects.aget(peer__address=clients[1].address)).channel_name
        await get_channel_layer().send(name, {"type": "peer_disabled"})
        assert await clients[1].comm.receive_output(timeout=3) == {"type": "websocket.close", "code": 4403}
        assert (await clients[2].ok("channels"))["data"] == {"channels": []}  # the others are untouched
    finally:
        await watcher.aclose()


async def test_a_trade_the_server_cancels_while_it_is_being_written_is_stored_and_its_parties_hear_of_it(
        pair, monkeypatch):
    """Daphne cancels a connection's request 10 s after its client left, and at the end of a shutdown's grace. A
    trade it cancels while its transaction is on its way to the database still commits and is announced, on either
    path (operatorapi.dbthreads.to_the_end): its parties' books follow what is stored. (Until 2026-11-29, on the
    event loop's trade path, a trade cancelled while its COMMIT was on its way was stored and never announced.)"""
    from channels.db import database_sync_to_async

    from channels_app.models import Trade
    from channels_app.services import trades

    alice, bob, channel_id = pair
    loop = asyncio.get_running_loop()
    decide = trades.decide

    def decided_then_cancelled(**kwargs):  # the store comes next: the server gives up on alice's request meanwhile
        loop.call_soon_threadsafe(alice.comm.future.cancel)
        return decide(**kwargs)

    monkeypatch.setattr(trades, "decide", decided_then_cancelled)
    await alice.send("record_trade", trade(channel_id, external_id="cut", amount="2", price="10"))
    note = await bob.notification("position_notification", timeout=5)
    assert (note["data"]["direction"], note["data"]["amount"]) == ("sell", "2")
    with pytest.raises(asyncio.CancelledError):  # alice's connection was cancelled indeed: she got no reply
        await alice.comm.future
    stored = await database_sync_to_async(Trade.objects.filter(channel__channel_id=channel_id).count)()
    assert stored == 1
