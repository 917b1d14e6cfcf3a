"""docs/protocol.md section 5: trades, positions (average cost), both sides' views, exact decimals, margin."""
import time
from decimal import Decimal

import pytest
from channels.db import database_sync_to_async

from channels_app.models import Position, Trade
from channels_app.services.marks import set_mark
from tests.client import trade

pytestmark = pytest.mark.django_db(transaction=True)


async def test_record_trade_replies_after_commit_and_both_sides_see_mirrored_positions(pair):
    alice, bob, channel_id = pair
    reply = await alice.request("record_trade", trade(channel_id, external_id="x-1", amount="2", price="100"),
                                reqid=41)
    assert reply == {"event": "record_trade", "reqid": 41, "data": {"channel_id": channel_id, "external_id": "x-1"}}
    assert await Trade.objects.filter(external_id="x-1").aexists()  # committed before the reply

    alice_view = (await alice.positions(channel_id))["ETH/USD"]
    bob_view = (await bob.positions(channel_id))["ETH/USD"]
    assert {k: alice_view[k] for k in ("direction", "amount", "cost", "market_value", "pnl", "status")} == {
        "direction": "buy", "amount": "2", "cost": "200", "market_value": "200", "pnl": "0", "status": "open"}
    assert bob_view["direction"] == "sell" and bob_view["amount"] == "2" and bob_view["cost"] == "200"
    assert alice_view["id"] == bob_view["id"] and alice_view["channel_id"] == channel_id

    for client, direction in ((alice, "buy"), (bob, "sell")):
        note = await client.notification("position_notification")
        assert note["reqid"] == 9000
        assert note["data"]["direction"] == direction and note["data"]["market"] == "ETH/USD"  # flat, not wrapped


async def test_direction_is_from_the_recording_peers_side(pair):
    alice, bob, channel_id = pair
    await bob.record(channel_id, external_id="b1", direction="buy", amount="3", price="10")  # bob long
    assert (await bob.positions(channel_id))["ETH/USD"]["direction"] == "buy"
    assert (await alice.positions(channel_id))["ETH/USD"]["direction"] == "sell"


async def test_average_cost_partial_close_realizes_pnl_and_a_bigger_trade_flips(pair):
    alice, bob, channel_id = pair
    await alice.record(channel_id, external_id="1", direction="buy", amount="2", price="100")
    await alice.record(channel_id, external_id="2", direction="buy", amount="2", price="110")  # avg 105, cost 420
    await alice.record(channel_id, external_id="3", direction="sell", amount="1", price="120")  # realize +15
    view = (await alice.positions(channel_id))["ETH/USD"]
    assert view["amount"] == "3" and view["cost"] == "315" and view["realized_pnl"] == "15"
    assert view["market_value"] == "360" and view["pnl"] == "45"  # mark = last trade price 120
    mirror = (await bob.positions(channel_id))["ETH/USD"]
    assert mirror["direction"] == "sell" and mirror["pnl"] == "-45" and mirror["realized_pnl"] == "-15"

    await alice.record(channel_id, external_id="4", direction="sell", amount="5", price="100")  # close 3, short 2
    view = (await alice.positions(channel_id))["ETH/USD"]
    assert view["direction"] == "sell" and view["amount"] == "2" and view["cost"] == "200"
    assert view["realized_pnl"] == "0"  # 15 + (300 - 315): the closed lot's PnL stays with it
    assert view["pnl"] == "0"


async def test_a_flat_position_closes_and_leaves_the_live_book(pair):
    alice, bob, channel_id = pair
    await alice.record(channel_id, external_id="1", direction="buy", amount="1.5", price="10")
    await alice.record(channel_id, external_id="2", direction="sell", amount="1.5", price="12")
    assert await alice.positions(channel_id) == {}
    closed = await Position.objects.aget(channel__channel_id=channel_id)
    assert closed.status == "closed" and closed.realized_pnl == Decimal("3")
    await alice.record(channel_id, external_id="3", direction="sell", amount="1", price="12")
    assert (await alice.positions(channel_id))["ETH/USD"]["direction"] == "sell"  # a new position


async def test_exact_decimals_at_the_limits_of_precision(pair):
    alice, bob, channel_id = pair
    await alice.record(channel_id, external_id="tiny", amount="0.000000000000000001", price="123456789012345678.5",
                       market="BTC/USDT")
    view = (await alice.positions(channel_id))["BTC/USDT"]
    assert view["amount"] == "0.000000000000000001"
    assert view["cost"] == "0.1234567890123456785"
    assert view["market_value"] == "0.1234567890123456785"
    stored = await Position.objects.aget(market="BTC/USDT")
    assert stored.cost == Decimal("0.1234567890123456785")  # the database kept every digit
    await alice.record(channel_id, external_id="big", amount="1234567890123456789012.123456789012345678",
                       price="0.000000000000000001", market="DOGE/USDT")
    big = (await bob.positions(channel_id))["DOGE/USDT"]
    assert big["cost"] == "1234.567890123456789012123456789012345678"
    assert big["direction"] == "sell"


async def test_trailing_zeros_are_not_written_back(pair):
    alice, bob, channel_id = pair
    await alice.record(channel_id, external_id="z", amount="1.500", price="2.000")
    view = (await alice.positions(channel_id))["ETH/USD"]
    assert view["amount"] == "1.5" and view["cost"] == "3"


@pytest.mark.parametrize(
    "field, value, code",
    [
        ("amount", "0", "invalid_decimal"),
        ("amount", "-1", "invalid_decimal"),
        ("amount", "1e3", "invalid_decimal"),
        ("amount", "1.0000000000000000001", "invalid_decimal"),  # 19 places
        ("amount", "1" * 41, "invalid_decimal"),  # 41 significant digits
        pytest.param("amount", "1" * 201, "invalid_decimal", id="amount-201-digits"),  # beyond the arithmetic's
        pytest.param("price", "9" * 60000, "invalid_decimal", id="price-60000-digits"),  # precision, to the frame cap
        pytest.param("price", "0." + "5" * 500, "invalid_decimal", id="price-500-places"),
        ("external_id", "fill\u0000-1", "invalid_message"),  # NUL: PostgreSQL cannot store it; refused on both
        ("external_id", "fill\x1f", "invalid_message"),
        ("external_id", "fill\x7f", "invalid_message"),
        ("external_id", "fill\u0085", "invalid_message"),
        ("amount", " 1", "invalid_decimal"),
        ("amount", "NaN", "invalid_decimal"),
        ("amount", 1.5, "invalid_message"),  # a JSON number is not a decimal string
        ("price", "", "invalid_decimal"),
        ("price", "1.", "invalid_decimal"),
        ("market", "eth/usd", "invalid_market"),
        ("market", "ETHUSD", "invalid_market"),
        ("market", "ABCDEFGHIJKLMNOPQ/USD", "invalid_market"),
        ("direction", "long", "invalid_message"),
        ("external_id", "", "invalid_message"),
        ("external_id", "x" * 129, "invalid_message"),
        ("executed_at", 0, "invalid_message"),
        ("executed_at", "1590000000", "invalid_message"),
        ("executed_at", int(time.time()) + 3600, "invalid_message"),
        ("channel_id", "0x1234", "invalid_message"),
    ],
)
async def test_bad_trade_fields_are_refused_naming_the_field_and_nothing_is_stored(pair, field, value, code):
    alice, bob, channel_id = pair
    error = await alice.error("record_trade", {**trade(channel_id), field: value}, code=code)
    assert error["error"].startswith(f"data.{field}")
    assert not await Trade.objects.aexists()
    await alice.record(channel_id)  # the connection stays usable


async def test_missing_trade_field_is_invalid_message(pair):
    alice, bob, channel_id = pair
    data = trade(channel_id)
    del data["price"]
    assert (await alice.error("record_trade", data, code="invalid_message"))["error"].startswith("data.price")


async def test_replaying_a_trade_is_idempotent_from_either_side(pair):
    alice, bob, channel_id = pair
    data = trade(channel_id, external_id="e-1", direction="buy", amount="2")
    first = await alice.ok("record_trade", data)
    again = await alice.ok("record_trade", {**data, "amount": "2.0"})  # the same number, written differently
    assert again["data"] == first["data"]
    # the counterparty reporting the same execution from its side is the same trade
    from_bob = await bob.ok("record_trade", {**data, "direction": "sell"})
    assert from_bob["data"] == first["data"]
    assert await Trade.objects.acount() == 1
    assert (await alice.positions(channel_id))["ETH/USD"]["amount"] == "2"


async def test_a_replay_answers_as_a_replay_where_the_same_trade_new_would_be_refused(pair):
    """The trade path decides a request as new before it knows which of its trades are stored
    (services.trades' ``_recording``): a refusal it reaches so must still give way to the replay it was."""
    alice, bob, channel_id = pair
    data = trade(channel_id, external_id="r-1", direction="buy", amount="10", price="100")
    first = await alice.ok("record_trade", data)
    await database_sync_to_async(set_mark)(market="ETH/USD", price=Decimal("200"), source="test")
    # bob's balance is 0 now (red): a new trade that grows the position is refused...
    await alice.error("record_trade", {**data, "external_id": "r-2"}, code="margin_call")
    # ...the same trade again is a replay, from either side
    assert (await alice.ok("record_trade", data))["data"] == first["data"]
    assert (await bob.ok("record_trade", {**data, "direction": "sell"}))["data"] == first["data"]
    # and in a batch with a new trade, that new trade is still refused, by its index
    items = [{k: v for k, v in item.items() if k != "channel_id"} for item in (data, trade(channel_id, "r-3"))]
    error = await alice.error("record_trades", {"channel_id": channel_id, "trades": items}, code="margin_call")
    assert error["error"].startswith("data.trades[1]: margin call")
    assert await Trade.objects.acount() == 1
    assert (await alice.positions(channel_id))["ETH/USD"]["amount"] == "10"


async def test_same_external_id_with_different_content_is_duplicate_trade(pair):
    alice, bob, channel_id = pair
    await alice.record(channel_id, external_id="d-1", amount="2", price="100")
    stored = await Trade.objects.aget()
    for change in ({"amount": "3"}, {"price": "101"}, {"direction": "sell"}, {"market": "BTC/USD"},
                   {"executed_at": stored.executed_at - 1}):
        data = trade(channel_id, external_id="d-1", amount="2", price="100", executed_at=stored.executed_at)
        await alice.error("record_trade", {**data, **change}, code="duplicate_trade")
    await bob.error("record_trade", trade(channel_id, external_id="d-1", direction="buy", amount="2", price="100",
                                          executed_at=stored.executed_at), code="duplicate_trade")
    assert await Trade.objects.acount() == 1
    # the same id on another channel is another trade
    other = await alice.open_channel(bob)
    await alice.record(other, external_id="d-1")


async def test_margin_moves_with_pnl_and_both_parties_get_margin_updated(pair):
    alice, bob, channel_id = pair
    await alice.record(channel_id, external_id="1", direction="buy", amount="10", price="100")
    await bob.record(channel_id, external_id="2", direction="buy", amount="1", price="130")  # alice sells 1 @130
    # alice: long 9 @100 at mark 130 => unrealized 270, realized 30: balance 1300; bob 700
    for client, role in ((alice, "Initiator"), (bob, "Responder")):
        note = await client.notification("stream_notification", action="marginUpdated")
        assert note["data"]["my_role"] == role
        assert (note["data"]["initiator_margin_balance"], note["data"]["follower_margin_balance"]) == ("1300", "700")


async def test_a_trade_that_would_leave_a_balance_below_zero_is_refused_and_nothing_is_stored(pair):
    alice, bob, channel_id = pair
    await alice.record(channel_id, external_id="1", direction="buy", amount="10", price="100")
    # at 200 alice would gain 10 x 100 = 1000 more than bob's 1000 deposit allows (+ this trade realizes nothing)
    error = await alice.error("record_trade", trade(channel_id, external_id="2", direction="buy", amount="1",
                                                    price="201"), code="margin_exceeded")
    assert "margin" in error["error"]
    assert await Trade.objects.acount() == 1
    view = (await alice.positions(channel_id))["ETH/USD"]
    assert view["amount"] == "10" and view["market_value"] == "1000"
    await alice.record(channel_id, external_id="3", direction="buy", amount="1", price="200")  # exactly zero is ok


async def test_a_mark_price_revalues_positions_and_margins_for_both_parties(pair):
    alice, bob, channel_id = pair
    await alice.record(channel_id, external_id="1", direction="buy", amount="2", price="100")
    await database_sync_to_async(set_mark)(market="ETH/USD", price=Decimal("90.5"), source="test")
    alice_note = await alice.notification("position_notification", market_value="181")
    assert alice_note["data"]["pnl"] == "-19" and alice_note["data"]["mark_price"] == "90.5"
    bob_note = await bob.notification("position_notification", market_value="181")
    assert bob_note["data"]["pnl"] == "19"
    margin = await bob.notification("stream_notification", action="marginUpdated")
    assert margin["data"]["initiator_margin_balance"] == "981" and margin["data"]["follower_margin_balance"] == "1019"
    # a later trade does not move the mark once back office has set one
    await alice.record(channel_id, external_id="2", direction="buy", amount="1", price="95")
    view = (await alice.positions(channel_id))["ETH/USD"]
    assert view["mark_price"] == "90.5" and view["market_value"] == "271.5" and view["pnl"] == "-23.5"


async def test_trailing_zeros_do_not_count_toward_the_decimal_limits(pair):
    """docs/protocol.md section 10: "1.50000000000000000000000" is 1.5 (18 places and 40 digits are counted after
    trailing zeros after the point are dropped); the value is stored and answered exactly."""
    alice, bob, channel_id = pair
    await alice.record(channel_id, external_id="z", amount="1.5" + "0" * 300, price="100.000000000000000000000")
    position = (await alice.positions(channel_id))["ETH/USD"]
    assert (position["amount"], position["cost"]) == ("1.5", "150")
    assert (await Trade.objects.aget()).amount == Decimal("1.5")
