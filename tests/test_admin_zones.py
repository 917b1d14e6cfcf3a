"""Margin zones in the back office: each party's zone on the channel list and page (coloured and written), the list
filtered by the worse party's zone, the dashboard's orange and red counts, a pending margin call, and the shortfall
of a settlement ledger line the deposit does not cover.

Set up through the services (no broker connected, so no payment worker runs: nothing moves by itself). Every
channel has deposit 100 and one position of 10 @ 10; at mark m the losing party's balance is 100 - 10 x (m - 10):
orange at 18.5 (15), red at 25 (-50).
"""
import re
from decimal import Decimal

import pytest
from django.contrib.auth.models import User
from django.test import Client
from eth_account import Account

from backoffice.permissions import ensure_backoffice_group
from channels_app.models import Channel, Peer
from channels_app.services.marks import set_mark
from channels_app.services.trades import TradeInput, record_trade
from settlement.services import propose_settlement
from tests.client import EXECUTED_AT
from tests.factories import opened_channel
from tests.test_admin import money

pytestmark = pytest.mark.django_db(transaction=True)

CHANNELS = "/admin/channels_app/channel/"


@pytest.fixture(autouse=True)
def manual(settings):
    settings.SETTLEMENT_ACCEPT_POLICY = "manual"  # a forced settlement, were one proposed, would wait for a clerk


@pytest.fixture
def clerk() -> Client:
    user = User.objects.create_user("clerk", password="correct horse battery staple", is_staff=True)
    user.groups.add(ensure_backoffice_group())
    client = Client()
    client.force_login(user)
    return client


def channel(market="ETH/USD", initiator_buys=True) -> Channel:
    """Deposit 100; the initiator long 10 @ 10 in ``market`` (or short, ``initiator_buys=False``)."""
    alice = Peer.objects.create(address=Account.create().address, name="Alice")
    opened = opened_channel(initiator=alice, responder_address=Account.create().address,
                            margin_deposit=Decimal("100"))
    record_trade(peer=alice, channel_id=opened.channel_id, trade=TradeInput(
        external_id="open", market=market, direction="buy" if initiator_buys else "sell", amount=Decimal("10"),
        price=Decimal("10"), executed_at=EXECUTED_AT))
    return opened


def mark(market, price):
    set_mark(market=market, price=Decimal(price))


def badge(zone):
    return f'class="zone zone-{zone}"'


def rows(page) -> dict[str, str]:
    """The change list's rows by channel id."""
    return {m.group(1): m.group(0) for m in re.finditer(r'<tr>.*?(0x[0-9a-f]{64}).*?</tr>', page, re.S)}


@pytest.fixture
def zoned():
    """Channels in each worst zone: orange (responder), red (responder), red (initiator), green."""
    orange, red, red_initiator, green = (channel("ETH/USD"), channel("BTC/USD"),
                                         channel("BTC/USD", initiator_buys=False), channel("SOL/USD"))
    mark("ETH/USD", "18.5")
    mark("BTC/USD", "25")
    return orange, red, red_initiator, green


def test_the_list_shows_both_zones_coloured_and_written(clerk, zoned):
    orange, red, red_initiator, green = zoned
    listed = rows(clerk.get(CHANNELS).content.decode())
    expected = {orange: ("green", "orange"), red: ("green", "red"), red_initiator: ("red", "green"),
                green: ("green", "green")}
    for ch, (initiator, responder) in expected.items():
        zones = re.findall(r'class="zone zone-(\w+)"[^>]*>(\w+)</span>', listed[ch.channel_id])
        assert zones == [(initiator, initiator), (responder, responder)], zones  # the word, not colour alone
    assert f'<td class="field-responder_balance">{money(-50, "-50.00")}</td>' in listed[red.channel_id]  # beside
    assert f'<td class="field-responder_balance">{money(15, "15.00")}</td>' in listed[orange.channel_id]


@pytest.mark.parametrize("zone, expected", [("orange", [0]), ("red", [1, 2]), ("green", [3])])
def test_the_zone_filter_lists_channels_by_their_worse_party(clerk, zoned, zone, expected):
    page = clerk.get(CHANNELS, {"zone": zone}).content.decode()
    assert set(rows(page)) == {zoned[i].channel_id for i in expected}
    assert "worst margin zone" in page


def test_the_dashboard_counts_orange_and_red_channels_once_each_and_links_to_the_filtered_list(clerk, zoned):
    page = clerk.get("/admin/").content.decode()
    assert re.search(rf'<a href="{CHANNELS}\?zone=orange" id="zone-orange-count"><span {badge("orange")}>orange'
                     r"</span>: <strong>1</strong></a>", page)
    assert re.search(rf'<a href="{CHANNELS}\?zone=red" id="zone-red-count"><span {badge("red")}>red'
                     r"</span>: <strong>2</strong></a>", page)
    # A channel counts by its worse party alone (the stored zones, as if each party were in one).
    Channel.objects.filter(pk=zoned[3].pk).update(initiator_zone="orange", responder_zone="red")
    page = clerk.get("/admin/").content.decode()
    assert "orange</span>: <strong>1</strong>" in page and "red</span>: <strong>3</strong>" in page
    assert len(rows(clerk.get(CHANNELS, {"zone": "red"}).content.decode())) == 3
    # A closed channel is at no risk: it leaves the counts and the filter, whatever its last zones.
    Channel.objects.filter(pk=zoned[3].pk).update(status="closed")
    page = clerk.get("/admin/").content.decode()
    assert "red</span>: <strong>2</strong>" in page
    assert len(rows(clerk.get(CHANNELS, {"zone": "red"}).content.decode())) == 2


def test_the_channel_page_shows_both_zones_balances_and_a_pending_margin_call(clerk):
    ch = channel()
    url = f"{CHANNELS}{ch.pk}/change/"
    page = clerk.get(url).content.decode()
    assert page.count(badge("green")) == 2 and "none pending" in page

    mark("ETH/USD", "25")  # the responder at -50: red, a margin call due (no worker runs here to start it)
    Channel.objects.filter(pk=ch.pk).update(margin_call_error="escrow is not available yet: <chain unchecked>")
    page = clerk.get(url).content.decode()
    assert (f'<div class="readonly">{money(250, "250.00")}</div>' in page
            and f'<div class="readonly">{money(-50, "-50.00")}</div>' in page)  # balances
    assert f'<span {badge("green")}' in page and re.search(rf'<span {badge("red")}[^>]*>red</span>', page)
    assert 'class="margin-call-pending">pending since' in page
    assert "could not start yet" in page and "&lt;chain unchecked&gt;" in page  # escaped, not markup
    assert 'name="_save"' not in page  # read-only


def test_the_settlement_page_flags_a_shortfall_the_deposit_does_not_cover(clerk):
    """The issue's case: deposit 100, the initiator buys 10 @ 10, mark 25: the responder owes 150, 50 beyond."""
    ch = channel()
    mark("ETH/USD", "25")
    settlement = propose_settlement(channel_id=ch.channel_id, payment_method="mock", chain_id=1,
                                    markets=["ETH/USD"], actor="test")
    page = clerk.get(f"/admin/settlement/settlement/{settlement.pk}/change/").content.decode()
    assert (f"<td>USD</td><td>{money(0, '0.00')}</td><td>{money(150, '150.00')}</td>"
            f'<td class="shortfall shortfall-nonzero"><strong>{money(50, "50.00")}</strong> not covered by the '
            "deposit</td>") in page
    listing = clerk.get("/admin/settlement/settlement/").content.decode()
    assert f'<span class="shortfall shortfall-nonzero">USD {money(50, "50.00")}</span>' in listing
    confirmation = clerk.get(f"/admin/settlement/settlement/{settlement.pk}/act/accept/").content.decode()
    assert f"<strong>{money(50, '50.00')}</strong> not covered by the deposit" in confirmation


def test_a_covered_ledger_line_shows_a_zero_shortfall_unflagged(clerk):
    ch = channel()
    mark("ETH/USD", "15")  # the responder owes 50 of its 100
    settlement = propose_settlement(channel_id=ch.channel_id, payment_method="mock", chain_id=1,
                                    markets=["ETH/USD"], actor="test")
    page = clerk.get(f"/admin/settlement/settlement/{settlement.pk}/change/").content.decode()
    assert (f"<td>USD</td><td>{money(0, '0.00')}</td><td>{money(50, '50.00')}</td>"
            f'<td class="shortfall">{money(0, "0.00")}</td>') in page
    assert 'class="shortfall shortfall-nonzero"' not in page
