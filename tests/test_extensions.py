"""docs/protocol.md section 8: record_trades (batches, all or nothing), channels, settlements."""
import pytest

from channels_app.models import Position, Trade
from operatorapi.schemas import MAX_BATCH_TRADES
from tests.client import trade

pytestmark = pytest.mark.django_db(transaction=True)

# A walk through one market: long, add, partial close, flip to short, flat, then a fresh long.
WALK = [("buy", "2", "100"), ("buy", "2", "110"), ("sell", "1", "120"), ("sell", "5", "100"),
        ("buy", "2", "90"), ("buy", "0.000000000000000001", "123456789012345678.5")]


def items(walk, prefix="t", market="ETH/USD"):
    return [{k: v for k, v in trade(None, external_id=f"{prefix}{i}", direction=d, amount=a, price=p,
                                     market=market).items() if k != "channel_id"}
            for i, (d, a, p) in enumerate(walk)]


async def batch(client, channel_id, trades, **kwargs):
    return await client.ok("record_trades", {"channel_id": channel_id, "trades": trades}, **kwargs)


async def test_a_batch_books_exactly_what_the_same_trades_one_by_one_book(connect):
    alice = await connect()
    bob = await connect()
    batched = await alice.open_channel(bob, deposit="1000000000000000000000")
    single = await alice.open_channel(bob, deposit="1000000000000000000000")

    reply = await batch(alice, batched, items(WALK))
    assert reply["data"] == {"channel_id": batched, "external_ids": [f"t{i}" for i in range(len(WALK))]}
    for one in items(WALK):
        await alice.ok("record_trade", {"channel_id": single, **one})

    def book(view):
        return {m: {k: v for k, v in p.items() if k not in ("id", "channel_id")} for m, p in view.items()}

    for client in (alice, bob):
        assert book(await client.positions(batched)) == book(await client.positions(single))
    assert await Trade.objects.filter(channel__channel_id=batched).acount() == len(WALK)
    # the position went flat once: the first closed, a second opened, as one by one
    statuses = [p.status async for p in Position.objects.filter(channel__channel_id=batched).order_by("id")]
    assert statuses == ["closed", "open"]


async def test_a_batch_notifies_each_touched_position_once_and_the_margin_once(pair):
    alice, bob, channel_id = pair
    walk = [("buy", "1", "100"), ("buy", "1", "104")]
    trades = items(walk) + items([("sell", "3", "20")], prefix="b", market="BTC/USDT")
    # a round trip opened and closed inside the batch is never live outside it: not announced, PnL +2 in margins
    trades += items([("buy", "1", "10"), ("sell", "1", "12")], prefix="s", market="SOL/USD")
    await batch(bob, channel_id, trades)
    for client, eth_direction in ((alice, "sell"), (bob, "buy")):
        eth = await client.notification("position_notification", market="ETH/USD")
        assert (eth["data"]["direction"], eth["data"]["amount"], eth["data"]["cost"]) == (eth_direction, "2", "204")
        await client.notification("position_notification", market="BTC/USDT")
        margin = await client.notification("stream_notification", action="marginUpdated")
        # bob long 2 ETH cost 204 at mark 104 (+4), short 3 BTC at 20 (flat), SOL realized +2: alice -6
        assert (margin["data"]["initiator_margin_balance"], margin["data"]["follower_margin_balance"]) == (
            "994", "1006")
        await client.expect_nothing()


async def test_a_batch_is_all_or_nothing_and_names_the_trade_that_failed(pair):
    alice, bob, channel_id = pair
    trades = items([("buy", "1", "100"), ("buy", "1", "100"), ("buy", "1", "100")])
    trades[2]["price"] = "5000"  # marks the position up 4900 per unit: bob's margin goes below zero
    error = await alice.error("record_trades", {"channel_id": channel_id, "trades": trades}, code="margin_exceeded")
    assert error["error"].startswith("data.trades[2]: ")
    assert not await Trade.objects.aexists() and not await Position.objects.aexists()
    assert await alice.positions(channel_id) == {}
    await alice.expect_nothing()

    trades[1]["amount"] = "1.5.0"
    error = await alice.error("record_trades", {"channel_id": channel_id, "trades": trades}, code="invalid_decimal")
    assert error["error"].startswith("data.trades.1.amount")


async def test_a_replayed_batch_answers_the_same_and_changes_nothing(pair):
    alice, bob, channel_id = pair
    first = items([("buy", "1", "100"), ("sell", "2", "101")])
    await batch(alice, channel_id, first)
    for client in (alice, bob):  # one position (long 1 flipped to short 1), realized +1 moved the margins
        await client.notification("position_notification", direction="buy" if client is bob else "sell")
        await client.notification("stream_notification", action="marginUpdated")
    again = await batch(alice, channel_id, first)
    assert again["data"]["external_ids"] == ["t0", "t1"]
    await alice.expect_nothing()
    await bob.expect_nothing()

    # stored items replay, the new one is booked; bob may report alice's executions from his side
    mirrored = [{**first[1], "direction": "buy"}, *items([("buy", "4", "99")], prefix="n")]
    await batch(bob, channel_id, mirrored)
    assert await Trade.objects.acount() == 3
    assert (await alice.positions(channel_id))["ETH/USD"]["direction"] == "sell"

    changed = [{**first[0], "amount": "7"}]
    error = await alice.error("record_trades", {"channel_id": channel_id, "trades": changed},
                              code="duplicate_trade")
    assert error["error"].startswith("data.trades[0]: ")


async def test_batch_limits_and_repeated_ids(pair):
    alice, bob, channel_id = pair
    repeated = items([("buy", "1", "100")]) * 2
    error = await alice.error("record_trades", {"channel_id": channel_id, "trades": repeated},
                              code="invalid_message")
    assert "repeats external_id t0" in error["error"]
    await alice.error("record_trades", {"channel_id": channel_id, "trades": []}, code="invalid_message")

    small = [("buy", "0.000001", "100"), ("sell", "0.000001", "100")] * (MAX_BATCH_TRADES // 2 + 1)
    too_many = items(small[:MAX_BATCH_TRADES + 1])
    error = await alice.error("record_trades", {"channel_id": channel_id, "trades": too_many},
                              code="invalid_message")
    assert "6765" in error["error"]
    # the largest batch fits in one frame (booking 6,764 trades takes seconds on a busy 2-core machine)
    reply = await batch(alice, channel_id, too_many[:MAX_BATCH_TRADES], timeout=30)
    assert len(reply["data"]["external_ids"]) == MAX_BATCH_TRADES
    assert await Trade.objects.acount() == MAX_BATCH_TRADES


async def test_channels_lists_the_peers_channels_from_its_side(connect):
    alice = await connect()
    bob = await connect()
    carol = await connect()
    first = await alice.open_channel(bob, deposit="100", name="Bob")
    second = await carol.open_channel(alice, deposit="50")
    await alice.record(first, external_id="1", amount="1", price="10")
    await alice.record(first, external_id="2", direction="sell", amount="1", price="30")  # alice +20
    await alice.ok("close_channel", {"channel_id": second})

    listed = (await alice.ok("channels"))["data"]["channels"]
    assert [c["channel_id"] for c in listed] == [first, second]
    assert listed[0] == {
        "channel_id": first, "channel_status": "opened", "my_role": "Initiator",
        "peer": {"address": bob.address, "name": "Bob"}, "margin_deposit": "100",
        "initiator_margin_balance": "120", "follower_margin_balance": "80",
        "initiator_margin_zone": "green", "follower_margin_zone": "green",
    }
    assert listed[1]["my_role"] == "Responder" and listed[1]["channel_status"] == "closed"
    opened = (await alice.ok("channels", {"status": "opened"}))["data"]["channels"]
    assert [c["channel_id"] for c in opened] == [first]
    assert [c["channel_id"] for c in (await bob.ok("channels"))["data"]["channels"]] == [first]
    outsider = await connect()
    assert (await outsider.ok("channels"))["data"]["channels"] == []
    await alice.error("channels", {"status": "open"}, code="invalid_message")


async def test_settlements_shows_a_channels_history_to_its_parties_only(pair, connect):
    alice, bob, channel_id = pair
    assert (await alice.ok("settlements", {"channel_id": channel_id}))["data"] == {
        "channel_id": channel_id, "settlements": []}
    await alice.record(channel_id, external_id="1", amount="2", price="100")
    await bob.record(channel_id, external_id="2", direction="buy", amount="1", price="130")  # alice short 1... 
    await alice.ok("request_settlement", {"channel_id": channel_id, "payment_method": "mock", "chain_id": 1,
                                          "markets": ["ETH/USD"]})
    await alice.notification("settlement_notification", state="completed")

    for client, role in ((alice, "Initiator"), (bob, "Responder")):
        [settled] = (await client.ok("settlements", {"channel_id": channel_id}))["data"]["settlements"]
        assert settled["my_role"] == role and settled["state"] == "completed"
        assert [h["state"] for h in settled["history"]] == [
            "proposed", "accepted", "initiated", "prepared", "executed", "completed"]
        # alice long 2 @100 then sold 1 @130: realized +30, long 1 marked at 130: +30 => responder owes 60
        assert settled["ledger"] == [{"asset": "USD", "initiator_owes": "0", "responder_owes": "60",
                                      "shortfall": "0"}]
    outsider = await connect()
    await outsider.error("settlements", {"channel_id": channel_id}, code="channel_not_found")
    await outsider.error("record_trades", {"channel_id": channel_id, "trades": items(WALK[:1])},
                         code="channel_not_found")
