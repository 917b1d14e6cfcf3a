"""Margin zones (docs/protocol.md section 5): each party's balance as a share of the deposit, against the
maintenance margin rate (0.10 by default): green >= 20%, orange >= 10%, red below.

In green any trade within margin is accepted; in orange or red (either party's) only trades that reduce the
position, even when a balance is below zero; others get ``margin_call``. Entering red makes the operator start a
forced settlement of the open markets at the mark, once per entry. Every channel notification carries both zones.

The channel: deposit 100; Alice (initiator) buys 10 ETH/USD @ 10 (cost 100), so at mark m Bob's (the responder's)
balance is 100 - 10 x (m - 10): green down to m = 18 (balance 20), orange to m = 19 (balance 10), red above.
"""
import asyncio
from decimal import Decimal

import pytest
from channels.db import database_sync_to_async
from django.db import connection

from channels_app import aiodb
from channels_app.models import Channel
from channels_app.services import marks
from settlement import margin_calls
from settlement import services as settlement_services
from settlement.models import Settlement, SettlementState
from tests.client import trade

pytestmark = pytest.mark.django_db(transaction=True)

set_mark = database_sync_to_async(marks.set_mark)


@pytest.fixture
async def long_ten(connect):
    alice = await (await connect()).subscribe()
    bob = await (await connect()).subscribe()
    channel_id = await alice.open_channel(bob, deposit="100")
    await alice.record(channel_id, external_id="open", amount="10", price="10")
    for client in (alice, bob):
        client.notes.clear()
    return alice, bob, channel_id


async def margin_update(client, channel_id, **match):
    return (await client.notification("stream_notification", action="marginUpdated", channel_id=channel_id,
                                      **match))["data"]


async def mark(clients, channel_id, price: str) -> list[dict]:
    """Set the ETH/USD mark; each client's marginUpdated for it."""
    await set_mark(market="ETH/USD", price=Decimal(price))
    return [await margin_update(c, channel_id) for c in clients]


async def zones_of(channel_id):
    channel = await Channel.objects.aget(channel_id=channel_id)
    return channel.initiator_zone, channel.responder_zone


@pytest.mark.parametrize("price, balance, zone", [
    ("18", "20", "green"),  # exactly 20%: green
    ("18.000000000000000001", "19.99999999999999999", "orange"),
    ("19", "10", "orange"),  # exactly 10%: orange
    ("19.000000000000000001", "9.99999999999999999", "red"),
])
async def test_each_zone_boundary_is_exact_and_both_parties_hear_the_zones(long_ten, price, balance, zone,
                                                                           settings):
    settings.SETTLEMENT_ACCEPT_POLICY = "manual"  # red starts a forced settlement: leave it proposed
    alice, bob, channel_id = long_ten
    for data in await mark((alice, bob), channel_id, price):
        assert data["follower_margin_balance"] == balance
        assert (data["initiator_margin_zone"], data["follower_margin_zone"]) == ("green", zone)
    assert await zones_of(channel_id) == ("green", zone)
    listed = await bob.ok("channels", {})
    assert listed["data"]["channels"][0]["follower_margin_zone"] == zone


async def test_the_zone_rate_is_a_setting(long_ten, settings):
    settings.MARGIN_MAINTENANCE_RATE = "0.25"  # orange below 50, red below 25
    alice, bob, channel_id = long_ten
    data, _ = await mark((alice, bob), channel_id, "15")  # Bob at 50: green
    assert data["follower_margin_zone"] == "green"
    data, _ = await mark((alice, bob), channel_id, "15.5")  # Bob at 45
    assert data["follower_margin_zone"] == "orange"


async def test_in_orange_only_reducing_trades_are_accepted_by_either_party(long_ten):
    alice, bob, channel_id = long_ten
    await mark((alice, bob), channel_id, "18.5")  # Bob at 15: orange
    # Increasing (Alice buys more; Bob sells more from his side), flipping, and a new market: margin_call.
    for client, kwargs in ((alice, {"direction": "buy", "amount": "1"}),
                           (bob, {"direction": "sell", "amount": "1"}),
                           (alice, {"direction": "sell", "amount": "11"}),  # long 10 -> short 1: a flip
                           (bob, {"direction": "buy", "amount": "10.5"}),  # the same flip, recorded by Bob
                           (alice, {"direction": "buy", "amount": "1", "market": "BTC/USD"})):
        error = await client.error("record_trade", trade(channel_id, external_id="no", price="18.5", **kwargs),
                                   code="margin_call")
        assert "responder's margin balance 15 is in orange" in error["error"], error
        assert "reduces the position" in error["error"]
    # Reducing, recorded by either party (Bob's buy is Alice's sell): accepted, down to flat.
    await bob.record(channel_id, external_id="r1", direction="buy", amount="4", price="18.5")
    await alice.record(channel_id, external_id="r2", direction="sell", amount="6", price="18.5")
    positions = await alice.positions(channel_id)
    assert positions == {}  # flat: nothing live


async def test_a_batch_follows_the_zone_item_by_item(long_ten):
    alice, bob, channel_id = long_ten
    await mark((alice, bob), channel_id, "18.5")
    items = [{k: v for k, v in trade(channel_id, external_id=e, direction=d, amount="1", price="18.5").items()
              if k != "channel_id"} for e, d in (("b1", "sell"), ("b2", "buy"))]
    error = await alice.error("record_trades", {"channel_id": channel_id, "trades": items}, code="margin_call")
    assert error["error"].startswith("data.trades[1]: margin call")
    assert (await alice.positions(channel_id))["ETH/USD"]["amount"] == "10"  # all or nothing


async def test_in_red_a_reducing_trade_is_accepted_even_below_zero_and_others_are_refused(long_ten, settings):
    """The issue's margin trap: deposit 100, A buys 10 @ 10, a mark of 25 puts B at -50. Trades that reduce the
    position are accepted (they used to be refused with margin_exceeded); others get margin_call."""
    settings.SETTLEMENT_ACCEPT_POLICY = "manual"
    alice, bob, channel_id = long_ten
    data, _ = await mark((alice, bob), channel_id, "25")
    assert (data["follower_margin_balance"], data["follower_margin_zone"]) == ("-50", "red")
    settlement = await wait_for_settlements(channel_id, 1)
    await reject(settlement[0], alice, bob)  # a clerk rejects the forced settlement: the position is open again
    await bob.error("record_trade", trade(channel_id, external_id="more", direction="sell", price="25"),
                    code="margin_call")
    await bob.record(channel_id, external_id="less", direction="buy", amount="5", price="25")
    (listed,) = (await bob.ok("channels", {}))["data"]["channels"]
    assert (listed["follower_margin_balance"], listed["follower_margin_zone"]) == ("-50", "red")
    await alice.record(channel_id, external_id="flat", direction="sell", amount="5", price="25")
    assert await alice.positions(channel_id) == {}


async def reject(settlement, *clients):
    """A clerk rejects ``settlement``; each client's marginUpdated of its positions returning is consumed."""
    await database_sync_to_async(settlement_services.transition)(
        settlement_pk=settlement.pk, target=SettlementState.REJECTED, actor="clerk")
    channel_id = (await Channel.objects.aget(pk=settlement.channel_id)).channel_id
    for client in clients:
        await client.notification("settlement_notification", state="rejected")
        await margin_update(client, channel_id)


async def test_green_still_refuses_a_trade_past_the_margin(long_ten, settings):
    settings.SETTLEMENT_ACCEPT_POLICY = "manual"  # the margin call it leads to stays proposed
    alice, _, channel_id = long_ten
    error = await alice.error("record_trade", trade(channel_id, external_id="big", amount="1", price="211"),
                              code="margin_exceeded")
    assert "below zero" in error["error"]
    # A trade from green into red (Bob at 5 after it) is within margin: accepted.
    await alice.record(channel_id, external_id="into-red", amount="1", price="19.5")
    assert await zones_of(channel_id) == ("green", "red")


async def wait_for_settlements(channel_id, count, timeout=5.0):
    """The channel's settlements once there are ``count`` (the payment worker's round starts a margin call)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        found = [s async for s in Settlement.objects.filter(channel__channel_id=channel_id).order_by("id")]
        if len(found) >= count or asyncio.get_running_loop().time() > deadline:
            assert len(found) == count, found
            return found
        await asyncio.sleep(0.05)


async def test_entering_red_starts_one_forced_settlement_at_the_mark_and_both_parties_follow_it(long_ten):
    alice, bob, channel_id = long_ten
    await mark((alice, bob), channel_id, "19.5")  # Bob at 5: red
    for client, role in ((alice, "Initiator"), (bob, "Responder")):
        proposed = await client.notification("settlement_notification", state="proposed")
        assert proposed["data"]["markets"] == ["ETH/USD"] and proposed["data"]["my_role"] == role
        assert proposed["data"]["ledger"] == [{"asset": "USD", "initiator_owes": "0", "responder_owes": "95",
                                               "shortfall": "0"}]
        await client.notification("settlement_notification", state="completed")
        settled = await client.notification("stream_notification", action="channelSettled")
        assert (settled["data"]["initiator_margin_zone"], settled["data"]["follower_margin_zone"]) == \
            ("green", "green")
    (settlement,) = await wait_for_settlements(channel_id, 1)
    assert settlement.requested_by_id is None and settlement.payment_method == "mock"
    first = await settlement.transitions.order_by("id").afirst()
    assert first.actor == "operator" and first.note.startswith("margin call: ")
    assert await zones_of(channel_id) == ("green", "green")
    assert (await Channel.objects.aget(channel_id=channel_id)).margin_call_due_at is None


async def test_a_margin_call_comes_once_per_entry_into_red(long_ten, settings):
    settings.SETTLEMENT_ACCEPT_POLICY = "manual"
    alice, bob, channel_id = long_ten
    await mark((alice, bob), channel_id, "19.5")  # into red
    (first,) = await wait_for_settlements(channel_id, 1)
    assert first.state == "proposed"
    await reject(first, alice, bob)
    # Still red: neither the rejection (positions back to open) nor another red mark calls again.
    await mark((alice, bob), channel_id, "19.6")
    await asyncio.sleep(1)  # four rounds of the worker
    await wait_for_settlements(channel_id, 1)
    # Out of red (orange), then back in: a new margin call.
    data, _ = await mark((alice, bob), channel_id, "18.5")
    assert data["follower_margin_zone"] == "orange"
    await mark((alice, bob), channel_id, "19.5")
    first, second = await wait_for_settlements(channel_id, 2)
    assert second.state == "proposed" and second.markets == ["ETH/USD"]


async def test_a_margin_call_does_not_duplicate_a_settlement_under_way(long_ten, settings):
    settings.SETTLEMENT_ACCEPT_POLICY = "manual"
    alice, bob, channel_id = long_ten
    await alice.record(channel_id, external_id="btc", market="BTC/USD", amount="1", price="10")
    await alice.ok("request_settlement", {"channel_id": channel_id, "payment_method": "mock", "chain_id": 1,
                                          "markets": ["BTC/USD"]})
    await mark((alice, bob), channel_id, "19.5")  # ETH/USD puts Bob in red while BTC/USD is being settled
    await asyncio.sleep(1)
    (only,) = await wait_for_settlements(channel_id, 1)
    assert only.markets == ["BTC/USD"]
    assert (await Channel.objects.aget(channel_id=channel_id)).margin_call_due_at is None


async def test_a_mark_jumping_past_red_bills_what_is_owed_with_its_shortfall(long_ten, settings):
    settings.SETTLEMENT_ACCEPT_POLICY = "manual"
    alice, bob, channel_id = long_ten
    await mark((alice, bob), channel_id, "25")  # Bob at -50: owes 150 against a deposit of 100
    for client in (alice, bob):
        proposed = await client.notification("settlement_notification", state="proposed")
        assert proposed["data"]["ledger"] == [{"asset": "USD", "initiator_owes": "0", "responder_owes": "150",
                                               "shortfall": "50"}]
    history = await bob.ok("settlements", {"channel_id": channel_id})
    assert history["data"]["settlements"][0]["ledger"][0]["shortfall"] == "50"


async def test_the_margin_call_waits_while_its_method_is_unavailable(long_ten, settings):
    settings.MARGIN_FORCED_SETTLEMENT_METHOD = "escrow"  # no chain configured here: unavailable
    alice, bob, channel_id = long_ten
    await mark((alice, bob), channel_id, "19.5")
    await asyncio.sleep(1)
    await wait_for_settlements(channel_id, 0)
    channel = await Channel.objects.aget(channel_id=channel_id)
    assert channel.margin_call_due_at is not None and "escrow is not available" in channel.margin_call_error
    settings.MARGIN_FORCED_SETTLEMENT_METHOD = "mock"  # the method is back: the next round starts it
    await wait_for_settlements(channel_id, 1)
    await alice.notification("settlement_notification", state="completed")  # the worker done before teardown


@pytest.fixture
async def waiting_margin_call(long_ten, settings):
    """Bob at 5 (the mark at 19.5): red, a margin call due that cannot start (escrow, no chain configured here); the
    worker's round called here, so nothing runs in between. The channel as the worker left it."""
    settings.SETTLEMENT_WORKER_IN_PROCESS = False
    settings.MARGIN_FORCED_SETTLEMENT_METHOD = "escrow"
    alice, bob, channel_id = long_ten
    await mark((alice, bob), channel_id, "19.5")
    channel = await Channel.objects.aget(channel_id=channel_id)
    assert await database_sync_to_async(margin_calls.start)(channel_pk=channel.pk) is None  # it cannot start yet
    return alice, await Channel.objects.aget(pk=channel.pk)


async def close_alices_position(alice, channel: Channel) -> Channel:
    """Alice closes her position at the mark: the channel's closed PnL changes (the trade writes the channel's
    fields back), Bob stays at 5, in red."""
    await alice.record(channel.channel_id, external_id="close", direction="sell", amount="10", price="19.5")
    channel = await Channel.objects.aget(pk=channel.pk)
    assert channel.closed_pnl == Decimal("95") and channel.responder_zone == "red"
    return channel


async def test_a_trade_in_red_keeps_the_reason_the_margin_call_waits(waiting_margin_call):
    """The trade path writes the channel's fields in one statement; the one it does not change (why the forced
    settlement could not start) stays as the worker wrote it, for the back office to show."""
    alice, waiting = waiting_margin_call
    assert "escrow is not available" in waiting.margin_call_error
    channel = await close_alices_position(alice, waiting)
    assert channel.margin_call_due_at is not None and channel.margin_call_error == waiting.margin_call_error


@database_sync_to_async
def set_database_time_zone(zone: str | None) -> None:
    """The database's own default zone for new sessions (``None``: the server's); Django's connections set theirs."""
    with connection.cursor() as cursor:
        name = connection.ops.quote_name(connection.settings_dict["NAME"])
        cursor.execute(f"ALTER DATABASE {name} SET timezone TO '{zone}'" if zone else
                       f"ALTER DATABASE {name} RESET timezone")


@pytest.mark.skipif(connection.vendor != "postgresql", reason="a PostgreSQL server's zone for its sessions")
async def test_a_trade_keeps_the_margin_calls_time_whatever_the_database_servers_zone(waiting_margin_call):
    """Django's loader reads a ``timestamptz`` as UTC because Django sets each of its connections' zone to UTC; the
    trade path's own connections (channels_app/aiodb.py) must be set so too, or the due time the lock reads and the
    trade writes back moves by the server's offset with every trade that changes the channel."""
    alice, waiting = waiting_margin_call
    assert waiting.margin_call_due_at is not None
    await set_database_time_zone("America/New_York")
    try:
        await aiodb.close()  # the trade path's next connections are new sessions, in that zone
        channel = await close_alices_position(alice, waiting)
        assert channel.margin_call_due_at == waiting.margin_call_due_at
    finally:
        await set_database_time_zone(None)
        await aiodb.close()


async def test_recompute_positions_fix_rezones_channels_after_the_rate_changed(long_ten, settings):
    from django.core.management import call_command

    alice, bob, channel_id = long_ten
    await mark((alice, bob), channel_id, "18.5")  # Bob at 15: orange at the default rate (10% / 20%)
    assert await zones_of(channel_id) == ("green", "orange")
    settings.MARGIN_MAINTENANCE_RATE = "0.05"  # green from 10: Bob's 15 is green now
    await database_sync_to_async(call_command)("recompute_positions")  # a report changes nothing
    assert await zones_of(channel_id) == ("green", "orange")
    await database_sync_to_async(call_command)("recompute_positions", "--fix")
    assert await zones_of(channel_id) == ("green", "green")
