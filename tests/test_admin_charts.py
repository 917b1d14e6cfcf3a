"""The back office's pictures and who sees the dashboard's panels: each panel only for a user with the view
permission on what it shows (and computed only then), trades per minute over the last hours and the settlement
pipeline on the dashboard (SVG, each linking to the filtered list), and a channel's balances and PnL over time on
its page (SVG with the latest values written), fast on a channel of 10,000 trades.

Set up through the services (no broker connected, so no payment worker runs: nothing moves by itself).
"""
import re
import time
from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib.auth.models import Permission, User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone as django_timezone
from eth_account import Account

from backoffice import charts
from backoffice.chartdata import MAX_POINTS, channel_history
from backoffice.dashboard import PANELS, TRADE_WINDOW, dashboard, trade_buckets
from backoffice.permissions import ensure_backoffice_group
from channels_app.models import Channel, Peer, PeerConnection, Trade
from channels_app.services.marks import set_mark
from channels_app.services.trades import TradeInput, record_trades
from settlement import services as engine
from tests.client import EXECUTED_AT
from tests.factories import opened_channel

pytestmark = pytest.mark.django_db(transaction=True)

BATCH = 6765  # record_trades' largest batch


@pytest.fixture(autouse=True)
def manual(settings):
    settings.SETTLEMENT_ACCEPT_POLICY = "manual"


def browser(username, *, clerk=False, perms=()) -> Client:
    user = User.objects.create_user(username, password="correct horse battery staple", is_staff=True)
    if clerk:
        user.groups.add(ensure_backoffice_group())
    for codename in perms:
        user.user_permissions.add(Permission.objects.get(codename=codename))
    client = Client()
    client.force_login(user)
    client.user = user
    return client


def new_channel(deposit="1000") -> tuple[Peer, Channel]:
    alice = Peer.objects.create(address=Account.create().address, name="Alice")
    return alice, opened_channel(initiator=alice, responder_address=Account.create().address,
                                 margin_deposit=Decimal(deposit))


def trade(external_id, direction, amount, price, market="ETH/USD") -> TradeInput:
    return TradeInput(external_id=str(external_id), market=market, direction=direction, amount=Decimal(amount),
                      price=Decimal(price), executed_at=EXECUTED_AT)


def record(peer, channel, *trades):
    record_trades(peer=peer, channel_id=channel.channel_id, trades=list(trades))


def online(peer) -> PeerConnection:
    return PeerConnection.objects.create(peer=peer, channel_name=f"test.{peer.pk}", server="test:1:x",
                                         expires_at=django_timezone.now() + timedelta(minutes=5))


def propose(channel):
    return engine.propose_settlement(channel_id=channel.channel_id, payment_method="mock", chain_id=1,
                                     markets=["ETH/USD"], actor="test")


def move(settlement, *states):
    for state in states:
        engine.transition(settlement_pk=settlement.pk, target=state, actor="operator")


DASHBOARD_TABLES = ("channels_app_channel", "channels_app_trade", "channels_app_peer", "settlement_settlement")


@pytest.fixture
def busy():
    """A channel with a trade and a proposed settlement, and its initiator online."""
    alice, channel = new_channel()
    record(alice, channel, trade(1, "buy", "2", "100"))
    online(alice)
    return alice, channel, propose(channel)


def test_a_staff_user_without_permissions_sees_no_panel_and_none_is_computed(busy):
    alice, channel, settlement = busy
    nobody = browser("nobody")
    page = nobody.get("/admin/").content.decode()
    assert channel.channel_id[:10] not in page and alice.address not in page
    assert f"Settlement {settlement.pk}" not in page
    for panel in ("channels-by-status", "trades-today", "peers-online", "trades-per-minute", "settlement-pipeline",
                  "open-settlements", "attention-settlements", 'class="chart'):
        assert panel not in page, panel
    with CaptureQueriesContext(connection) as queries:
        assert dashboard(nobody.user) == {}
    touched = [q["sql"] for q in queries.captured_queries if any(t in q["sql"] for t in DASHBOARD_TABLES)]
    assert touched == []  # not computed either, only not shown


def test_a_clerk_sees_every_panel(busy):
    alice, channel, settlement = busy
    clerk = browser("clerk", clerk=True)
    page = clerk.get("/admin/").content.decode()
    assert channel.channel_id[:17] in page and alice.address in page
    assert f"/admin/settlement/settlement/{settlement.pk}/change/" in page
    for panel in ('id="channels-by-status"', 'id="channels-by-zone"', 'id="trades-today"', 'id="peers-online"',
                  'id="trades-per-minute-chart"', 'id="settlement-pipeline-chart"', 'id="open-settlements"',
                  'id="attention-settlements"'):
        assert panel in page, panel
    assert set(dashboard(clerk.user)) == set(PANELS)


@pytest.mark.parametrize("perms, shown, hidden", [
    (["view_trade"], ["trades-today", "trades-per-minute"], ["channels-by-status", "peers-online", "open-settlements"]),
    (["view_settlement"], ["open-settlements", "settlement-pipeline"], ["trades-today", "channels-by-status"]),
    (["view_peer"], [], ["peers-online"]),  # addresses of who is online: the connections' permission too
    (["view_peer", "view_peerconnection"], ["peers-online"], ["trades-today", "open-settlements"]),
    (["view_channel"], ["channels-by-status", "channels-by-zone"], ["trades-today", "open-settlements"]),
])
def test_each_panel_needs_the_view_permission_on_what_it_shows(busy, perms, shown, hidden):
    alice, channel, settlement = busy
    page = browser("partial", perms=perms).get("/admin/").content.decode()
    for panel in shown:
        assert f'id="{panel}"' in page, panel
    for panel in hidden:
        assert f'id="{panel}"' not in page, panel
    if "view_settlement" in perms:  # the settlement, but not its channel's id without the channel permission
        assert f"Settlement {settlement.pk}" in page and channel.channel_id[:10] not in page
    if "view_peerconnection" in perms:
        assert alice.address in page


def listed(page) -> int:
    """How many rows a change list says it shows."""
    return int(re.search(r'<p class="paginator">\s*(\d+) trades?', page).group(1))


def bars(page) -> list[int]:
    return [int(n) for n in re.findall(r'<g class="bar" data-count="(\d+)">', page)]


def test_the_dashboard_draws_trades_per_minute_a_bar_per_ten_minutes_each_linking_to_its_trades():
    alice, channel = new_channel()
    record(alice, channel, *[trade(i, "buy" if i % 2 else "sell", "1", "100") for i in range(25)])
    now = django_timezone.now()
    # Five of them as if recorded 35 minutes ago, two before the window: counted in their own bars, or not at all.
    earlier = list(Trade.objects.order_by("id").values_list("pk", flat=True)[:7])
    Trade.objects.filter(pk__in=earlier[:5]).update(recorded_at=now - timedelta(minutes=35))
    Trade.objects.filter(pk__in=earlier[5:]).update(recorded_at=now - TRADE_WINDOW - timedelta(minutes=20))

    buckets = trade_buckets(now)
    assert len(buckets) == 36 and sum(n for _, n in buckets) == 23
    assert buckets[-1][1] == 18 and buckets[-1][0] <= now < buckets[-1][0] + timedelta(minutes=10)
    then = now - timedelta(minutes=35)
    assert [n for start, n in buckets if start <= then < start + timedelta(minutes=10)] == [5]

    clerk = browser("clerk", clerk=True)
    page = clerk.get("/admin/").content.decode()
    drawn = bars(page)
    assert len(drawn) == 36 and drawn[-1] == 18 and sum(drawn) == 23 and drawn.count(5) == 1
    assert ">1.8</text>" in page  # the last bar's rate written on it: 18 trades in 10 minutes
    assert "18 trades (1.8 per minute)" in page  # and in its tooltip
    assert "<strong>23</strong> trades since" in page

    links = re.findall(r'<a href="(/admin/channels_app/trade/\?recorded_at__gte=[^"]+)"><g class="bar"', page)
    assert len(links) == 36
    listing = clerk.get(links[-1].replace("&amp;", "&"))
    assert listing.status_code == 200 and "?e=1" not in listing.get("Location", "")
    assert listed(listing.content.decode()) == 18  # its trades, no others
    recent = re.search(r'<a href="([^"]+)" id="trades-recent-link">', page).group(1).replace("&amp;", "&")
    assert listed(clerk.get(recent).content.decode()) == 23


def test_the_dashboard_shows_the_settlement_pipeline_with_the_oldest_waiting_and_links_by_state():
    channels = [new_channel() for _ in range(4)]
    for alice, channel in channels:
        record(alice, channel, trade(1, "buy", "2", "100"))
    proposed, older_proposed, accepted, rejected = (propose(channel) for _, channel in channels)
    move(accepted, "accepted")
    move(rejected, "rejected")
    clerk = browser("clerk", clerk=True)
    page = clerk.get("/admin/").content.decode()
    counts = dict(re.findall(r'data-state="(\w+)" data-count="(\d+)"', page))
    assert counts == {"proposed": "2", "accepted": "1", "initiated": "0", "prepared": "0", "executed": "0",
                      "completed": "0", "failed": "0", "rejected": "1"}
    for state in counts:
        assert f'href="/admin/settlement/settlement/?state={state}"' in page, state
    row = re.search(r'<tr id="pipeline-proposed">.*?</tr>', page, re.S).group(0)
    assert f"/admin/settlement/settlement/{proposed.pk}/change/" in row  # the first proposed waits longest
    listing = clerk.get("/admin/settlement/settlement/", {"state": "proposed"}).content.decode()
    assert f"/admin/settlement/settlement/{older_proposed.pk}/change/" in listing
    assert f"/admin/settlement/settlement/{accepted.pk}/change/" not in listing


def latest(page, chart_id) -> list[str]:
    svg = re.search(rf'<svg [^>]*id="{chart_id}".*?</svg>', page, re.S).group(0)
    return re.findall(r'<tspan class="latest"[^>]*>([^<]+)</tspan>', svg)


def test_the_channel_page_draws_both_balances_and_the_pnl_with_the_latest_values_written():
    alice, channel = new_channel()
    record(alice, channel, trade(1, "buy", "2", "100"), trade(2, "sell", "1", "130"))
    clerk = browser("clerk", clerk=True)
    url = f"/admin/channels_app/channel/{channel.pk}/change/"
    page = clerk.get(url).content.decode()
    assert latest(page, "margin-history") == ["1060", "940"]  # realized +30, long 1 @100 at 130: +30
    assert latest(page, "pnl-history") == ["60"]
    assert 'data-series="initiator"' in page and 'data-series="responder"' in page
    history = channel_history(channel)
    assert [(p.initiator, p.responder) for p in history.points] == [(1000, 1000), (1000, 1000), (1060, 940),
                                                                          (1060, 940)]  # open, 2 trades, now

    set_mark(market="ETH/USD", price=Decimal("150"))  # now is valued as the page values it, at today's mark
    page = clerk.get(url).content.decode()
    assert latest(page, "margin-history") == ["1080", "920"] and latest(page, "pnl-history") == ["80"]
    outside = re.sub(r'<fieldset class="module aligned" id="channel-charts">.*?</fieldset>', "", page, flags=re.S)
    assert "1080" in outside and "920" in outside  # the same figures as the page's own balances


def test_a_completed_settlement_takes_its_pnl_out_of_both_balances_in_the_history():
    alice, channel = new_channel()
    record(alice, channel, trade(1, "buy", "2", "100"))
    set_mark(market="ETH/USD", price=Decimal("110"))
    settlement = propose(channel)  # frozen at 110: +20
    move(settlement, "accepted", "initiated", "prepared", "executed", "completed")
    record(alice, channel, trade(2, "buy", "1", "120"), trade(3, "sell", "1", "125"))  # +5, after it
    channel.refresh_from_db()
    balances = [p.initiator for p in channel_history(channel).points]
    # open, the trade at 100, frozen at 110, paid, 1 @120, closed at 125 (+5), now
    assert balances == [1000, 1000, 1020, 1000, 1000, 1005, 1005]
    page = browser("clerk", clerk=True).get(f"/admin/channels_app/channel/{channel.pk}/change/").content.decode()
    assert latest(page, "margin-history") == ["1005", "995"]


def test_a_channel_of_ten_thousand_trades_renders_its_page_fast_in_a_bounded_number_of_queries(
        django_assert_max_num_queries):
    alice, channel = new_channel(deposit="1000000000")
    trades = [trade(i, "buy" if i % 3 else "sell", "1", str(100 + i % 17)) for i in range(10_000)]
    for start in range(0, len(trades), BATCH):
        record(alice, channel, *trades[start:start + BATCH])
    assert Trade.objects.filter(channel=channel).count() == 10_000

    with django_assert_max_num_queries(8):
        began = time.monotonic()
        history = channel_history(channel)
        replayed = time.monotonic() - began
    assert len(history.points) <= MAX_POINTS + 2 and history.trade_count == 10_000
    assert replayed < 3, replayed
    assert history.points[-1].initiator + history.points[-1].responder == 2_000_000_000

    clerk = browser("clerk", clerk=True)
    with django_assert_max_num_queries(40):  # 27 today: the admin page itself, the chart 7
        began = time.monotonic()
        response = clerk.get(f"/admin/channels_app/channel/{channel.pk}/change/")
        took = time.monotonic() - began
    assert response.status_code == 200 and 'id="margin-history"' in response.content.decode()
    assert took < 10, took


def test_chart_text_is_escaped_and_ticks_are_round():
    svg = charts.line_chart(chart_id="c", title="<t>", xs=[0.0, 1.0], x_labels=[(0.0, "<a>", "start")],
                            y_label="y&", series=[charts.Series("<b>", [1.0, 2.0], "<2>")])
    assert "<b>" not in svg and "&lt;b&gt;" in svg and "&lt;2&gt;" in svg and "&lt;a&gt;" in svg
    assert charts.nice_ticks(0, 95) == [0, 25, 50, 75, 100]
    assert charts.nice_ticks(5, 5)[0] < 5 < charts.nice_ticks(5, 5)[-1]
    assert charts.tick_label(1000.0, [0.0, 500.0]) == "1,000"
