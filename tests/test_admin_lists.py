"""The back office as clerks use it (issue 13): pages that stay small and fast on a busy channel, times in UTC with
seconds, money rounded with the exact figure on hover, short ids whole on hover, lists newest first and filtered by
channel and peer, peers by the names brokers gave them, a channel's settlements on its page, one spelling of states,
and a confirmation before a peer is disabled.

Set up through the services (no broker connected); the busy channel's history is written with ``bulk_create``.
"""
import re
from datetime import datetime, timezone
from decimal import Decimal

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import ImproperlyConfigured
from django.test import Client
from eth_account import Account

from backoffice.display import money, short, unix_utc
from backoffice.models import AuditEntry
from backoffice.permissions import ensure_backoffice_group
from channels_app.models import Channel, Peer, PeerConnection, Position, Trade
from channels_app.services.trades import TradeInput, record_trade
from settlement.services import propose_settlement
from tests.client import EXECUTED_AT
from tests.factories import opened_channel

pytestmark = pytest.mark.django_db(transaction=True)

CHANNELS, TRADES, PEERS = "/admin/channels_app/channel/", "/admin/channels_app/trade/", "/admin/channels_app/peer/"
BUSY = 10_000
NEWEST = 1795755553  # the busy channel's trades were executed up to this second (2026-11-27 04:59:13 UTC)


def linked(row: str) -> str:
    """The text of the row's link to its own page."""
    return re.search(r'/change/[^"]*">([^<]+)</a>', row).group(1)


@pytest.fixture(autouse=True)
def manual(settings):
    settings.SETTLEMENT_ACCEPT_POLICY = "manual"  # settlements wait where the test puts them


def login(username, **flags) -> Client:
    user = User.objects.create_user(username, password="correct horse battery staple", is_staff=True, **flags)
    if not flags:
        user.groups.add(ensure_backoffice_group())
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def clerk() -> Client:
    return login("clerk")


def trade(peer, channel, external_id, *, direction="buy", amount="1", price="100", executed_at=EXECUTED_AT):
    return record_trade(peer=peer, channel_id=channel.channel_id, trade=TradeInput(
        external_id=external_id, market="ETH/USD", direction=direction, amount=Decimal(amount),
        price=Decimal(price), executed_at=executed_at))


def channel(initiator_name="", responder_name="") -> Channel:
    """Deposit 1000 between two fresh peers; the initiator names the responder ``responder_name`` (as brokers do
    when they open a channel), and neither has a ``Peer.name`` unless ``initiator_name`` is given."""
    alice = Peer.objects.create(address=Account.create().address, name=initiator_name)
    opened = opened_channel(initiator=alice, responder_address=Account.create().address,
                            margin_deposit=Decimal("1000"))
    Channel.objects.filter(pk=opened.pk).update(responder_name=responder_name)
    opened.refresh_from_db()
    return opened


@pytest.fixture
def busy() -> Channel:
    """A channel with BUSY trades: one through the services (the position), the rest written in bulk."""
    ch = channel(responder_name="Bob")
    trade(ch.initiator, ch, "0", executed_at=NEWEST - BUSY)
    position = Position.objects.get(channel=ch)
    Trade.objects.bulk_create(
        [Trade(channel=ch, external_id=str(i), recorded_by=ch.initiator if i % 2 else ch.responder, market="ETH/USD",
               direction="buy", initiator_direction="buy", amount=Decimal("1"), price=Decimal("100"),
               executed_at=NEWEST - BUSY + i, position=position) for i in range(1, BUSY)], batch_size=2000)
    return ch


def rows(page: str, kind: str) -> list[str]:
    """The change list's rows, in order (each opens with the row's own cell of class ``field-<kind>``)."""
    return re.findall(rf'<tr>(?:<td class="action-checkbox">.*?</td>)?<th class="field-{kind}">.*?</tr>', page, re.S)


# --- 1. a busy channel's page stays small and fast -------------------------------------------------------------
def test_a_busy_channels_page_is_small_shows_the_latest_trades_and_links_to_all(clerk, busy,
                                                                                django_assert_max_num_queries):
    with django_assert_max_num_queries(30):  # 25 today: session, user, channel, balances, the latest of each
        response = clerk.get(f"{CHANNELS}{busy.pk}/change/")
    page = response.content.decode()
    assert response.status_code == 200 and len(response.content) < 200_000, len(response.content)
    assert len(re.findall(r'id="trades-\d+"', page)) == 20  # the latest 20, newest first
    newest = re.findall(r'<p>\s*(\d+): buy 1 ETH/USD', page)
    assert newest == [str(i) for i in range(BUSY - 1, BUSY - 21, -1)], newest
    assert f'<a href="{TRADES}?channel={busy.pk}" id="all-trades">{BUSY} trades</a>' in page
    assert (f'<a href="/admin/settlement/settlement/?channel={busy.pk}" id="all-settlements">0 settlements</a>'
            in page)


def test_the_trade_list_of_a_busy_channel_is_paged_newest_first_and_bounded(clerk, busy,
                                                                             django_assert_max_num_queries):
    with django_assert_max_num_queries(20):  # 16 today, whatever the number of trades
        response = clerk.get(TRADES, {"channel": busy.pk})
    page = response.content.decode()
    assert response.status_code == 200 and len(response.content) < 300_000, len(response.content)
    listed = rows(page, "external_id")
    assert len(listed) == 100  # a page of them
    assert [linked(row) for row in listed[:3]] == ["9999", "9998", "9997"]
    assert f"{BUSY} trades" in page  # the filtered count


# --- 2. times --------------------------------------------------------------------------------------------------
def test_trade_times_are_utc_with_seconds_the_unix_seconds_on_hover(clerk, busy):
    page = clerk.get(TRADES, {"channel": busy.pk}).content.decode()
    newest = NEWEST - 1
    assert datetime.fromtimestamp(newest, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S") == "2026-11-27 04:59:12"
    assert ('<time datetime="2026-11-27T04:59:12+00:00" title="unix 1795755552">2026-11-27 04:59:12 UTC</time>'
            in page)
    assert re.search(r'<td class="field-recorded_at">\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC</td>', page)
    channel_page = clerk.get(f"{CHANNELS}{busy.pk}/change/").content.decode()
    assert "title=\"unix 1795755552\">2026-11-27 04:59:12 UTC</time>" in channel_page
    assert "1795755552</" not in channel_page  # never the raw number as the value shown
    assert unix_utc(1795755553) == ('<time datetime="2026-11-27T04:59:13+00:00" title="unix 1795755553">'
                                    "2026-11-27 04:59:13 UTC</time>")


def test_admin_times_show_seconds(clerk, busy):
    for url, cell in [(CHANNELS, "created_at"), ("/admin/channels_app/position/", "updated_at"),
                      (PEERS, "first_seen")]:
        page = clerk.get(url).content.decode()
        assert re.search(rf'<td class="field-{cell}">(\d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d UTC|–)</td>', page), url
    Peer.objects.update(first_seen="2026-11-27T10:59:13Z")
    assert '<td class="field-first_seen">2026-11-27 10:59:13 UTC</td>' in clerk.get(PEERS).content.decode()
    page = login("root", is_superuser=True).get(f"{PEERS}{busy.responder.pk}/change/").content.decode()
    assert re.search(r'First seen:</label>\s*<div class="readonly">2026-11-27 10:59:13 UTC</div>', page)
    assert 'name="name"' in page  # the name stays editable by those who may
    login("root2", is_superuser=True).post(PEERS, {"action": "enable_peers", "_selected_action": [busy.initiator.pk]})
    audit = clerk.get("/admin/backoffice/auditentry/").content.decode()  # any read-only list naming a time
    assert re.search(r'<th class="field-at"><a [^>]*>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC</a></th>', audit)


# --- 3. money --------------------------------------------------------------------------------------------------
def test_money_is_rounded_half_even_for_people_with_the_exact_figure_on_hover(settings):
    assert money(Decimal("0.125")) == '<span class="money" title="0.125">0.12</span>'  # half-even
    assert money(Decimal("0.135")) == '<span class="money" title="0.135">0.14</span>'
    assert money(Decimal("-0.001")) == '<span class="money" title="-0.001">0.00</span>'  # never "-0.00"
    assert money("1060.000000000000000002") == '<span class="money" title="1060.000000000000000002">1060.00</span>'
    settings.BACKOFFICE_DISPLAY_PLACES = 4
    settings.BACKOFFICE_DISPLAY_PLACES_BY_ASSET = "BTC=8, eth=6"
    assert money(Decimal("1.123456785"), "BTC") == '<span class="money" title="1.123456785">1.12345678</span>'
    assert money(Decimal("1.1234565"), "ETH") == '<span class="money" title="1.1234565">1.123456</span>'
    assert money(Decimal("1.23456"), "USD") == '<span class="money" title="1.23456">1.2346</span>'
    assert money(Decimal("7"), "USD") == '<span class="money" title="7">7.0000</span>'
    settings.BACKOFFICE_DISPLAY_PLACES_BY_ASSET = {"USD": 0}
    assert money(Decimal("2.5"), "USD") == '<span class="money" title="2.5">2</span>'
    settings.BACKOFFICE_DISPLAY_PLACES_BY_ASSET = "BTC"
    with pytest.raises(ImproperlyConfigured):
        money(Decimal("1"), "BTC")


def test_position_cost_and_pnl_show_rounded_to_the_quote_asset_and_nothing_stored_changes(clerk, settings):
    settings.BACKOFFICE_DISPLAY_PLACES_BY_ASSET = "USD=3"
    ch = channel()
    trade(ch.initiator, ch, "1", amount="3", price="100")
    trade(ch.initiator, ch, "2", amount="3", price="100.000000000000000001")
    trade(ch.responder, ch, "3", direction="buy", amount="1", price="101")  # the initiator sells 1 of 6
    stored = Position.objects.get(channel=ch)
    cost = stored.cost
    assert len(str(cost).partition(".")[2]) > 18  # average cost: more places than any input
    page = clerk.get(f"{CHANNELS}{ch.pk}/change/").content.decode()
    exact = format(cost.normalize(), "f")
    assert f'cost <span class="money" title="{exact}">500.000</span>' in page
    assert re.search(r'pnl <span class="money" title="-?[0-9.]+">-?\d+\.\d{3}</span>', page)
    listing = clerk.get("/admin/channels_app/position/").content.decode()
    assert f'title="{exact}">500.000</span>' in listing
    assert Position.objects.get(pk=stored.pk).cost == cost  # display only


# --- 4. short ids ----------------------------------------------------------------------------------------------
def test_lists_show_short_ids_with_the_full_value_on_hover_and_still_find_them(clerk, busy):
    cid, address = busy.channel_id, busy.initiator.address
    assert short(cid) == (f'<span class="short-id" title="{cid}" data-full="{cid}">{cid[:6]}…{cid[-4:]}</span>')
    listing = clerk.get(CHANNELS).content.decode()
    assert short(cid) in listing and short(address) in listing
    assert f">{cid}<" not in listing and f">{address}<" not in listing  # never written out whole
    found = clerk.get(CHANNELS, {"q": cid}).content.decode()  # the full value still finds it
    assert len(rows(found, "channel_short")) == 1
    trades = clerk.get(TRADES, {"q": cid}).content.decode()
    assert short(cid) in trades and f">{cid}<" not in trades
    assert short(address) in clerk.get(PEERS).content.decode()


# --- 9. lists: filters, order, names, settlements ---------------------------------------------------------------
def test_trades_filter_by_channel_and_by_peer_with_the_channel_linked(clerk):
    first, second = channel(), channel()
    trade(first.initiator, first, "a")
    trade(second.initiator, second, "b")
    trade(second.responder, second, "c")
    every = clerk.get(TRADES).content.decode()
    assert [linked(row) for row in rows(every, "external_id")] == ["c", "b", "a"]
    assert f'<a href="{CHANNELS}{first.pk}/change/">{short(first.channel_id)}</a>' in every
    by_channel = rows(clerk.get(TRADES, {"channel": second.pk}).content.decode(), "external_id")
    assert len(by_channel) == 2 and all(short(second.channel_id) in row for row in by_channel)
    by_peer = rows(clerk.get(TRADES, {"peer": first.responder.pk}).content.decode(), "external_id")
    assert len(by_peer) == 1 and short(first.channel_id) in by_peer[0]  # either party's trades


def test_peers_show_the_name_brokers_gave_them(clerk):
    ch = channel(responder_name="Bob")
    named = channel(initiator_name="Carol")
    peers = clerk.get(PEERS).content.decode()
    assert re.search(r'class="field-known_as"><span title="as an initiator named it[^"]*">Bob</span>', peers)
    assert '<td class="field-known_as">Carol</td>' in peers
    listing = clerk.get(CHANNELS).content.decode()
    assert f"Bob ({short(ch.responder.address)})" in listing
    assert f"Carol ({short(named.initiator.address)})" in listing
    # Bob opens a channel of his own: he is known there by the name his counterparty gave him.
    carla = Peer.objects.create(address=Account.create().address)
    own = opened_channel(initiator=ch.responder, responder_address=carla.address, margin_deposit=Decimal("10"))
    assert f"Bob ({short(ch.responder.address)})" in rows(clerk.get(CHANNELS, {"q": own.channel_id}).content
                                                          .decode(), "channel_short")[0]
    assert "Bob" in clerk.get(PEERS, {"q": "Bob"}).content.decode()  # and found by it


def test_the_channel_page_lists_its_settlements_and_states_are_spelt_as_on_the_wire(clerk):
    ch = channel()
    trade(ch.initiator, ch, "1")
    settlement = propose_settlement(channel_id=ch.channel_id, payment_method="mock", chain_id=1,
                                    markets=["ETH/USD"], actor="test")
    page = clerk.get(f"{CHANNELS}{ch.pk}/change/").content.decode()
    assert f"/admin/settlement/settlement/{settlement.pk}/change/" in page
    assert re.search(r'<td class="field-state">\s*<p>proposed</p>', page)
    assert re.search(r'<td class="field-payment_method">\s*<p>mock</p>', page)
    assert 'id="all-settlements">1 settlements</a>' in page
    settlement_page = clerk.get(f"/admin/settlement/settlement/{settlement.pk}/change/").content.decode()
    assert "Proposed" not in settlement_page.replace("Settlement", "")  # lower-case, as brokers read it
    assert re.search(r'<td class="field-to_state">\s*<p>proposed</p>', settlement_page)
    listing = clerk.get("/admin/settlement/settlement/", {"channel": ch.pk}).content.decode()
    assert '<td class="field-state">proposed</td>' in listing
    assert ">proposed</a>" in listing and ">Proposed<" not in listing  # the filter too


def test_settlements_and_channels_drill_down_by_date(clerk, busy):
    propose_settlement(channel_id=busy.channel_id, payment_method="mock", chain_id=1, markets=["ETH/USD"],
                       actor="test")
    for url in (CHANNELS, "/admin/settlement/settlement/", TRADES):
        page = clerk.get(url).content.decode()
        assert "created_at__year=" in page or "recorded_at__year=" in page, url


# --- 11. disabling a peer asks first ---------------------------------------------------------------------------
def test_disabling_a_peer_asks_for_confirmation_first(busy):
    root = login("root", is_superuser=True)
    peer = busy.responder
    PeerConnection.objects.create(peer=peer, channel_name="specific.x!1", server="elsewhere:1:a",
                                  expires_at="2999-01-01T00:00:00Z")
    confirmation = root.post(PEERS, {"action": "disable_peers", "_selected_action": [peer.pk]})
    page = confirmation.content.decode()
    assert confirmation.status_code == 200 and 'id="confirm"' in page and "Disable these peers?" in page
    assert f"<code>{peer.address}</code>" in page and '<td class="live-connections">1</td>' in page
    assert "Bob" in page  # by its known name
    assert not Peer.objects.get(pk=peer.pk).is_disabled and not AuditEntry.objects.exists()  # nothing done yet
    done = root.post(PEERS, {"action": "disable_peers", "confirm": "yes", "_selected_action": [peer.pk]})
    assert done.status_code == 302 and Peer.objects.get(pk=peer.pk).is_disabled
    assert AuditEntry.objects.get().action == "disable_peer"


def test_there_is_no_view_site_link_leading_to_a_404(clerk):
    page = clerk.get("/admin/").content.decode()
    assert "View site" not in page
