"""Margin balances have one formula for every caller (channels_app.selectors.margins): the trade path, replies,
notifications, the admin and the commands agree, and the running total it reads (``Channel.closed_pnl``) always
equals the sum of the rows it stands for."""
from decimal import Decimal

import pytest
from channels.db import database_sync_to_async
from django.core.management import CommandError, call_command
from django.db.models import Count
from eth_account import Account
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from channels_app import accounting, selectors
from channels_app.errors import DomainError
from channels_app.models import Channel, Peer, Position, PositionStatus
from channels_app.money import MONEY, ZERO
from channels_app.services import marks, trades
from settlement import services as settlement_services
from settlement.models import Settlement, SettlementState
from settlement.worker import PaymentWorker
from tests.client import EXECUTED_AT
from tests.factories import opened_channel

pytestmark = pytest.mark.django_db(transaction=True)


async def channels_reply(client, channel_id) -> tuple[str, str]:
    frame = await client.ok("channels", {})
    [view] = [c for c in frame["data"]["channels"] if c["channel_id"] == channel_id]
    return view["initiator_margin_balance"], view["follower_margin_balance"]


async def test_a_drifted_closed_pnl_total_is_seen_alike_by_every_caller_and_recompute_reports_and_repairs_it(pair):
    alice, bob, channel_id = pair
    await alice.record(channel_id, external_id="1", direction="buy", amount="1", price="100")
    await alice.record(channel_id, external_id="2", direction="sell", amount="1", price="110")  # closed: +10
    assert await channels_reply(alice, channel_id) == ("1010", "990")
    await Channel.objects.aupdate(closed_pnl=Decimal("1010"))  # the running total off by 1,000

    # Every reader now values the channel from the same (wrong) total that the trade path uses ...
    assert await channels_reply(alice, channel_id) == ("2010", "-10")
    assert await channels_reply(bob, channel_id) == ("2010", "-10")
    margin = await alice.error("record_trade", {"channel_id": channel_id, "external_id": "3", "market": "ETH/USD",
                                                "direction": "buy", "amount": "1", "price": "100",
                                                "executed_at": EXECUTED_AT}, code="margin_call")
    assert "responder's margin balance -10 is in red" in margin["error"]

    # ... and recompute_positions says so, and --fix repairs it.
    with pytest.raises(CommandError, match="0 position\\(s\\) and 1 channel total\\(s\\) differ"):
        await database_sync_to_async(call_command)("recompute_positions")
    await database_sync_to_async(call_command)("recompute_positions", "--fix")
    assert await channels_reply(alice, channel_id) == ("1010", "990")
    await alice.record(channel_id, external_id="3", direction="buy", amount="1", price="100")


# --- random histories ---------------------------------------------------------------------------------------
MARKETS = ("ETH/USD", "BTC/USD", "ETH/USDT")
amounts = st.sampled_from(["0.5", "1", "1.25", "2", "3", "7.125"]).map(Decimal)
prices = st.sampled_from(["90", "99.5", "100", "101.25", "110", "250"]).map(Decimal)
trade_op = st.tuples(st.just("trade"), st.booleans(), st.sampled_from(MARKETS), st.sampled_from(["buy", "sell"]),
                     amounts, prices)
batch_op = st.tuples(st.just("batch"), st.booleans(), st.lists(st.tuples(st.sampled_from(MARKETS),
                     st.sampled_from(["buy", "sell"]), amounts, prices), min_size=1, max_size=4))
mark_op = st.tuples(st.just("mark"), st.sampled_from(MARKETS), prices)
settle_op = st.tuples(st.just("settle"), st.lists(st.sampled_from(MARKETS), min_size=1, max_size=2, unique=True),
                      st.sampled_from(["completed", "failed", "rejected", "later"]))
finish_op = st.tuples(st.just("finish"), st.sampled_from(["completed", "failed", "rejected"]))
histories = st.lists(st.one_of(trade_op, trade_op, batch_op, mark_op, settle_op, finish_op), max_size=18)


def rows_margins(channel: Channel) -> tuple[Decimal, Decimal]:
    """The reference: every unsettled row valued on its own (the pre-cache way), no running total."""
    pnl = ZERO
    positions = list(channel.positions.exclude(status=PositionStatus.SETTLED))
    mark_of = selectors.marks_for(p.market for p in positions)
    for p in positions:
        mark = p.settle_price if p.settle_price is not None else mark_of.get(p.market, p.last_price)
        pnl = MONEY.add(pnl, accounting.total_pnl(p.book, mark))
    return accounting.margin_balances(channel.margin_deposit, pnl)


def finish(settlement: Settlement, outcome: str) -> None:
    pk = settlement.pk
    if outcome == "rejected":
        settlement_services.transition(settlement_pk=pk, target=SettlementState.REJECTED, actor="test")
        return
    settlement_services.transition(settlement_pk=pk, target=SettlementState.ACCEPTED, actor="test")
    if outcome == "completed":
        PaymentWorker("tests.test_margins").drive(pk)  # the payment worker's steps, here and now
    else:
        settlement_services.transition(settlement_pk=pk, target=SettlementState.INITIATED, actor="test")
        settlement_services.transition(settlement_pk=pk, target=SettlementState.FAILED, actor="test")


def play(channel: Channel, initiator: Peer, responder: Peer, history) -> None:
    counter = 0
    for op in history:
        try:
            if op[0] in ("trade", "batch"):
                items = [op[2:]] if op[0] == "trade" else op[2]
                inputs = []
                for market, direction, amount, price in items:
                    counter += 1
                    inputs.append(trades.TradeInput(f"t{counter}", market, direction, amount, price, EXECUTED_AT))
                trades.record_trades(peer=initiator if op[1] else responder, channel_id=channel.channel_id,
                                     trades=inputs)
            elif op[0] == "mark":
                marks.set_mark(market=op[1], price=op[2])
            elif op[0] == "settle":
                settlement = settlement_services.propose_settlement(
                    channel_id=channel.channel_id, payment_method="mock", chain_id=1, markets=op[1], actor="test")
                if op[2] != "later":
                    finish(settlement, op[2])
            elif op[0] == "finish":
                active = Settlement.objects.filter(channel=channel).exclude(
                    state__in=["completed", "failed", "rejected"]).first()
                if active is not None:
                    finish(active, op[1])
        except DomainError:
            pass  # refused (margin, no open position, a settlement under way): nothing changed
        channel.refresh_from_db()
        assert channel.closed_pnl == selectors.closed_pnl_from_rows(channel), op
        assert tuple(selectors.margins(channel)) == rows_margins(channel), op


def test_on_random_histories_the_running_total_equals_the_rows_and_margins_equal_the_row_valuation(settings):
    settings.SETTLEMENT_ACCEPT_POLICY = "manual"
    settings.NOTICE_PUBLISHER = "tests.test_margins.discard"

    @settings_for_db
    @given(histories)
    def run(history):
        initiator = Peer.objects.create(address=Account.create().address)
        responder = Peer.objects.create(address=Account.create().address)
        channel = opened_channel(initiator=initiator, responder_address=responder.address,
                                 margin_deposit=Decimal("5000"))
        play(channel, initiator, responder, history)
        assert not Position.objects.filter(channel=channel, status="open").values("market").annotate(
            n=Count("id")).filter(n__gt=1).exists()

    run()


def discard(notices):
    """No connections listen in this test: notices are dropped (the outbox has its own tests)."""


settings_for_db = settings(max_examples=60, deadline=None, database=None, derandomize=True,
                           suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
