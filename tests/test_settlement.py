"""docs/protocol.md section 7: settlement requests, the state machine, mock and escrow payments."""
import asyncio

import pytest

from channels_app.models import Channel, Position
from settlement import services as engine
from settlement.models import Settlement
from tests.client import trade

pytestmark = pytest.mark.django_db(transaction=True)

ALL_STATES = ["proposed", "accepted", "initiated", "prepared", "executed", "completed"]


def settle(channel_id, markets=("ETH/USD",), method="mock", chain_id=1):
    return {"channel_id": channel_id, "payment_method": method, "chain_id": chain_id, "markets": list(markets)}


async def states_seen(client, until):
    states = []
    while not states or states[-1] != until:
        note = await client.notification("settlement_notification")
        states.append(note["data"]["state"])
    return states, note


async def test_mock_settlement_runs_from_proposed_to_completed_and_pays_the_pnl(pair):
    alice, bob, channel_id = pair
    await alice.record(channel_id, external_id="1", direction="buy", amount="2", price="100")
    await bob.record(channel_id, external_id="2", direction="buy", amount="1", price="110", market="BTC/USDT")
    await bob.record(channel_id, external_id="3", direction="sell", amount="1", price="130")  # alice long 3?
    # alice: ETH/USD long 2 @100 then buys 1 @130 from bob => long 3, cost 330, mark 130 => pnl +60
    reply = await bob.request("request_settlement", settle(channel_id), reqid=314)
    assert reply == {"event": "request_settlement", "reqid": 314}

    for client, role in ((alice, "Initiator"), (bob, "Responder")):
        states, completed = await states_seen(client, "completed")
        assert states == ALL_STATES
        data = completed["data"]
        assert data["settlement_state"] == "completed" and data["my_role"] == role
        assert data["markets"] == ["ETH/USD"]
        assert data["ledger"] == [{"asset": "USD", "initiator_owes": "0", "responder_owes": "60", "shortfall": "0"}]
        settled = await client.notification("stream_notification", action="channelSettled")
        assert settled["data"]["channel_status"] == "opened"
        # ETH/USD PnL is paid and leaves the margins; BTC/USDT (flat mark, pnl 0) stays
        assert settled["data"]["initiator_margin_balance"] == "1000"
        assert settled["data"]["follower_margin_balance"] == "1000"

    assert set(await alice.positions(channel_id)) == {"BTC/USDT"}  # the settled position left the live book
    assert (await Position.objects.aget(market="ETH/USD")).status == "settled"
    settlement = await Settlement.objects.aget()
    transitions = [(t.from_state, t.to_state, t.actor) async for t in settlement.transitions.all()]
    assert transitions[0] == ("", "proposed", f"peer:{bob.address}")
    assert [t[1] for t in transitions] == ALL_STATES
    assert (await Channel.objects.aget()).status == "opened"
    await alice.record(channel_id, external_id="4")  # trading goes on


async def test_a_settlement_the_policy_did_not_get_to_accept_is_accepted_by_the_workers_next_round(pair, monkeypatch):
    """Under the ``auto`` policy the acceptance is a transaction of its own, after the proposal's and its reply. A
    process that stopped in between (here: the request's acceptance fails) left the settlement proposed, its
    positions frozen and its channel settling, until a clerk came. The payment worker's round now accepts a
    proposal left so (settlement.services.accept_left_proposed), and the payment goes on."""
    alice, bob, channel_id = pair
    await alice.record(channel_id, external_id="1", amount="2", price="100")

    def stopped_here(**kwargs):
        raise RuntimeError("the process stopped between the proposal and its acceptance")

    monkeypatch.setattr(engine, "apply_accept_policy", stopped_here)  # the request's own acceptance
    await alice.ok("request_settlement", settle(channel_id))
    for client in (alice, bob):
        states, _ = await states_seen(client, "completed")
        assert states == ALL_STATES
    accepted = await (await Settlement.objects.aget()).transitions.aget(to_state="accepted")
    assert (accepted.actor, accepted.note) == ("operator", engine.POLICY_NOTE)
    assert (await Channel.objects.aget()).status == "opened"


async def test_a_settlement_proposed_under_the_manual_policy_waits_for_its_clerk_when_the_policy_is_auto_later(
        pair, settings):
    """Its ledger is at the marks of the day it was proposed: the worker's round accepts only what was proposed under
    the ``auto`` policy."""
    alice, bob, channel_id = pair
    await alice.record(channel_id, external_id="1", amount="2", price="100")
    settings.SETTLEMENT_ACCEPT_POLICY = "manual"
    await alice.ok("request_settlement", settle(channel_id))
    settings.SETTLEMENT_ACCEPT_POLICY = "auto"
    await asyncio.sleep(engine.POLICY_BACKSTOP_SECONDS + 1)  # past the worker's rounds that would accept it
    assert (await Settlement.objects.aget()).state == "proposed"


async def test_positions_in_settlement_are_frozen_and_new_trades_open_a_new_position(pair, settings):
    alice, bob, channel_id = pair
    await alice.record(channel_id, external_id="1", direction="buy", amount="2", price="100")
    settings.SETTLEMENT_ACCEPT_POLICY = "manual"
    await alice.ok("request_settlement", settle(channel_id))
    frozen = await alice.notification("position_notification", status="in_settlement")
    assert frozen["data"]["amount"] == "2"
    assert (await Channel.objects.aget()).status == "settling"
    await alice.error("request_settlement", settle(channel_id), code="settlement_in_progress")
    await alice.error("close_channel", {"channel_id": channel_id}, code="invalid_channel_state")

    await bob.record(channel_id, external_id="2", direction="buy", amount="5", price="120")  # bob long 5 now
    book = (await bob.ok("positions", {"channel_id": channel_id}))["data"]["positions"]
    views = sorted((p["position"]["status"], p["position"]["direction"], p["position"]["amount"]) for p in book)
    assert views == [("in_settlement", "sell", "2"), ("open", "buy", "5")]
    jwt_reply = await bob.ok("channel_jwt", {"channel_id": channel_id})  # settling channels still get JWTs
    assert jwt_reply["data"]["jwt"]


async def test_a_rejected_settlement_returns_frozen_positions_to_open_merging_newer_trades(pair, settings):
    alice, bob, channel_id = pair
    await alice.record(channel_id, external_id="1", direction="buy", amount="2", price="100")
    settings.SETTLEMENT_ACCEPT_POLICY = "manual"
    await alice.ok("request_settlement", settle(channel_id))
    await alice.record(channel_id, external_id="2", direction="sell", amount="3", price="110")  # new short 3
    settlement = await Settlement.objects.aget()
    await engine_transition(settlement.pk, "rejected")

    states, _ = await states_seen(bob, "rejected")
    assert states == ["proposed", "rejected"]
    view = (await alice.positions(channel_id))["ETH/USD"]
    # long 2 @100 folded with short 3 @110: 2 closed at 110 (+20), short 1 @110 remains
    assert (view["direction"], view["amount"], view["cost"], view["realized_pnl"], view["status"]) == (
        "sell", "1", "110", "20", "open")
    assert (await Channel.objects.aget()).status == "opened"
    settings.SETTLEMENT_ACCEPT_POLICY = "auto"
    await alice.ok("request_settlement", settle(channel_id))  # may be requested again
    await states_seen(alice, "completed")


async def engine_transition(pk, state):
    from channels.db import database_sync_to_async

    return await database_sync_to_async(engine.transition)(settlement_pk=pk, target=state, actor="admin:test")


@pytest.mark.parametrize(
    "data, code",
    [
        ({"markets": ["BTC/USD"]}, "invalid_market"),  # no open position there
        ({"markets": ["btc"]}, "invalid_market"),
        ({"markets": []}, "invalid_message"),
        ({"markets": ["ETH/USD", "ETH/USD"]}, "invalid_message"),
        ({"payment_method": "cash"}, "invalid_message"),
        ({"chain_id": 0}, "invalid_message"),
        ({"chain_id": "1"}, "invalid_message"),
        ({"payment_method": "escrow"}, "payment_method_unavailable"),  # no chain configured
    ],
)
async def test_bad_settlement_requests_are_refused_and_change_nothing(pair, data, code):
    alice, bob, channel_id = pair
    await alice.record(channel_id, external_id="1", amount="1", price="100")
    await alice.error("request_settlement", {**settle(channel_id), **data}, code=code)
    assert not await Settlement.objects.aexists()
    assert (await Channel.objects.aget()).status == "opened"
    assert (await alice.positions(channel_id))["ETH/USD"]["status"] == "open"


async def test_settlement_states_only_move_as_the_table_allows(pair, settings):
    alice, bob, channel_id = pair
    await alice.record(channel_id, external_id="1", amount="1", price="100")
    settings.SETTLEMENT_ACCEPT_POLICY = "manual"
    await alice.ok("request_settlement", settle(channel_id))
    settlement = await Settlement.objects.aget()
    from channels_app.errors import DomainError

    for target in ("completed", "executed", "prepared", "failed", "initiated"):
        with pytest.raises(DomainError) as refused:
            await engine_transition(settlement.pk, target)
        assert refused.value.code == "invalid_settlement_state"
    assert (await Settlement.objects.aget()).state == "proposed"


async def test_after_a_fold_the_ledger_rebuild_matches_the_stored_positions(pair, settings):
    from channels.db import database_sync_to_async

    from channels_app.services.recompute import recompute_positions

    alice, bob, channel_id = pair
    await alice.record(channel_id, external_id="1", direction="buy", amount="3", price="100")
    await alice.record(channel_id, external_id="2", direction="sell", amount="1", price="107")
    settings.SETTLEMENT_ACCEPT_POLICY = "manual"
    await alice.ok("request_settlement", settle(channel_id))
    await bob.record(channel_id, external_id="3", direction="buy", amount="1.5", price="111")  # alice sells
    await bob.record(channel_id, external_id="4", direction="sell", amount="0.25", price="109")
    settlement = await Settlement.objects.aget()
    await engine_transition(settlement.pk, "rejected")
    report = await database_sync_to_async(recompute_positions)()
    assert report.positions == [] and report.totals == []
    folded = await Position.objects.aget(merged_into__isnull=False)
    assert folded.status == "closed" and folded.quantity == 0
    view = (await alice.positions(channel_id))["ETH/USD"]
    assert view["direction"] == "buy" and view["amount"] == "0.75"


async def test_the_channels_closed_pnl_total_follows_trades_settlements_and_folds(pair, settings):
    """``Channel.closed_pnl`` (what a trade reads instead of summing the closed positions) equals that sum after
    every kind of change, and the margins a trade announces equal the margins valued from the stored rows."""
    from channels.db import database_sync_to_async

    from channels_app import selectors
    from channels_app.money import fmt

    @database_sync_to_async
    def check() -> tuple[str, str]:
        channel = Channel.objects.get(channel_id=channel_id)
        assert channel.closed_pnl == selectors.closed_pnl_from_rows(channel)
        return tuple(fmt(b) for b in selectors.margins(channel))

    async def margins_announced(client):
        note = await client.notification("stream_notification", action="marginUpdated")
        return note["data"]["initiator_margin_balance"], note["data"]["follower_margin_balance"]

    alice, bob, channel_id = pair
    # ETH: round trips that close (+10, then -2.5 from bob's side); BTC stays open
    await alice.record(channel_id, external_id="1", direction="buy", amount="1", price="100")
    await bob.record(channel_id, external_id="2", direction="buy", amount="1", price="110")  # alice sells: +10
    await alice.ok("record_trades", {"channel_id": channel_id, "trades": [
        {k: v for k, v in trade(channel_id, external_id=e, direction=d, amount="0.5", price=p, market=m).items()
         if k != "channel_id"}
        for e, d, p, m in (("3", "sell", "120", "ETH/USD"), ("4", "buy", "125", "ETH/USD"),
                           ("5", "buy", "20000", "BTC/USD"))]})  # short 0.5 @120 closed @125: -2.5
    channel = await Channel.objects.aget()
    assert channel.closed_pnl == 7.5
    assert await check() == ("1007.5", "992.5")
    while (announced := await margins_announced(alice)) != ("1007.5", "992.5"):
        pass  # the earlier trades' announcements first

    # ETH opens again, is frozen by a settlement with its closed positions, and the settlement is rejected:
    # nothing was paid, the closed ones stay closed
    settings.SETTLEMENT_ACCEPT_POLICY = "manual"
    await alice.record(channel_id, external_id="6", direction="buy", amount="2", price="100")
    await alice.ok("request_settlement", settle(channel_id))
    await alice.record(channel_id, external_id="7", direction="sell", amount="2", price="104")  # a newer one: flat
    assert (await Channel.objects.aget()).closed_pnl == 7.5  # the new position closed flat at no PnL of its own
    await engine_transition((await Settlement.objects.aget()).pk, "rejected")
    # the frozen long 2 @100 folds the newer sell 2 @104 in: flat, +8, closed; the newer one closes empty
    assert (await Channel.objects.aget()).closed_pnl == 15.5
    await check()

    # ETH is settled: the settlement pays the closed ETH positions' PnL, so the total drops to zero
    await alice.record(channel_id, external_id="8", direction="buy", amount="1", price="100")
    settings.SETTLEMENT_ACCEPT_POLICY = "auto"
    await alice.ok("request_settlement", settle(channel_id))
    await states_seen(alice, "completed")
    assert (await Channel.objects.aget()).closed_pnl == 0
    await check()
    await alice.record(channel_id, external_id="9", direction="buy", amount="1", price="100")
    await alice.record(channel_id, external_id="10", direction="sell", amount="1", price="90")  # closed: -10
    assert (await Channel.objects.aget()).closed_pnl == -10
    initiator, follower = await check()
    while (announced := await margins_announced(bob)) != (initiator, follower):
        pass
