"""Two writers on one channel: the channel row lock serializes trade, position and margin (protocol.md section 5)."""
import functools
import time
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest
from django.db import connection
from eth_account import Account

from channels_app import accounting
from channels_app.errors import DomainError
from channels_app.models import Channel, Peer, Position, Trade
from channels_app.money import MONEY
from channels_app.services.channels import open_channel
from tests.factories import opened_channel
from channels_app.services.trades import TradeInput, record_trade

pytestmark = pytest.mark.django_db(transaction=True)


def in_thread(fn):
    def run(*args):
        try:
            return fn(*args)
        finally:
            connection.close()
    return run


def test_concurrent_trades_and_replays_on_one_channel_are_all_stored_once_and_positions_are_exact():
    alice = Peer.objects.create(address=Account.create().address)
    bob = Peer.objects.create(address=Account.create().address)
    channel = opened_channel(initiator=alice, responder_address=bob.address, margin_deposit=Decimal("1000000"))
    now = int(time.time())

    def data(i):
        k = i % 40  # the trade; i // 40 says which of its three sends this is
        return TradeInput(external_id=f"t{k}", market="ETH/USD", direction="buy" if k % 3 else "sell",
                          amount=Decimal(f"{1 + k}.25"), price=Decimal(f"{100 + k % 7}.5"), executed_at=now)

    @in_thread
    def record(i):
        # trades 0..39 each sent 3 times (i, i+40, i+80), alternately by each party with the same content
        peer = alice if (i // 40) % 2 == 0 else bob
        d = data(i)
        if peer is bob:
            d = d._replace(direction=accounting.opposite(d.direction))
        try:
            return record_trade(peer=peer, channel_id=channel.channel_id, trade=d).replayed[0]
        except DomainError as exc:
            return exc.code

    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = list(pool.map(record, range(120)))

    assert outcomes.count(False) == 40 and outcomes.count(True) == 80, outcomes
    assert Trade.objects.filter(channel=channel).count() == 40
    stored = list(Trade.objects.filter(channel=channel).order_by("id"))
    expected = accounting.replay((t.initiator_direction, t.amount, t.price) for t in stored)
    position = Position.objects.get(channel=channel, status="open")
    assert (position.quantity, position.cost) == (expected.quantity, expected.cost)
    # a position that went flat on the way keeps its realized PnL; a new one opened after it
    realized = [p.realized_pnl for p in Position.objects.filter(channel=channel)]
    assert functools.reduce(MONEY.add, realized, Decimal(0)) == expected.realized_pnl
    assert Channel.objects.get(pk=channel.pk).status == "opened"
    assert expected.quantity == sum(
        (Decimal(f"{1 + i % 40}.25") * (1 if i % 3 else -1) for i in range(40)), Decimal(0))


def test_concurrent_opens_between_one_pair_take_distinct_nonces():
    alice = Peer.objects.create(address=Account.create().address)
    bob = Account.create().address

    @in_thread
    def opened(_):
        return open_channel(initiator=alice, responder_address=bob, margin_deposit=Decimal("10")).nonce

    with ThreadPoolExecutor(max_workers=6) as pool:
        nonces = sorted(pool.map(opened, range(12)))
    assert nonces == list(range(12))
