"""Back office through the real admin views; its changes reach connected brokers as protocol notifications."""
import re
from decimal import Decimal

import pytest
from channels.db import database_sync_to_async
from django.contrib.auth.models import Permission, User
from django.test import AsyncClient

from backoffice.models import AuditEntry
from backoffice.permissions import BACKOFFICE_GROUP, ensure_backoffice_group
from channels_app.models import Channel, MarkPrice, Peer, Trade
from settlement import services as engine
from tests.conftest import hold_payment_lease
from settlement.models import Settlement

pytestmark = pytest.mark.django_db(transaction=True)


def money(exact, shown):
    """A figure as the back office shows it: rounded, the exact value on hover (backoffice.display.money)."""
    return f'<span class="money" title="{exact}">{shown}</span>'


async def disable(admin_client, peer):
    """The admin action, confirmed: the first POST answers the confirmation page, the second disables."""
    confirmation = await admin_client.post("/admin/channels_app/peer/", {"action": "disable_peers",
                                                                         "_selected_action": [peer.pk]})
    assert confirmation.status_code == 200 and 'id="confirm"' in confirmation.content.decode()
    return await admin_client.post("/admin/channels_app/peer/", {"action": "disable_peers", "confirm": "yes",
                                                                 "_selected_action": [peer.pk]})


def settle(channel_id, markets=("ETH/USD",)):
    return {"channel_id": channel_id, "payment_method": "mock", "chain_id": 1, "markets": list(markets)}


@database_sync_to_async
def make_user(username, *, clerk=False, superuser=False, perms=()):
    user = User.objects.create_user(username, password="correct horse battery staple", is_staff=True,
                                    is_superuser=superuser)
    if clerk:
        user.groups.add(ensure_backoffice_group())
    for codename in perms:
        user.user_permissions.add(Permission.objects.get(codename=codename))
    return user


async def browser(user=None, **kwargs) -> AsyncClient:
    client = AsyncClient(**kwargs)
    if user is not None:
        await client.aforce_login(user)
    return client


async def test_the_back_office_group_has_exactly_the_clerks_permissions():
    group = await database_sync_to_async(ensure_backoffice_group)()
    codenames = {p async for p in group.permissions.values_list("content_type__app_label", "codename")}
    views = {(a, f"view_{m}") for a, m in [
        ("channels_app", "peer"), ("channels_app", "channel"), ("channels_app", "trade"),
        ("channels_app", "position"), ("channels_app", "markprice"), ("channels_app", "peerconnection"),
        ("settlement", "settlement"), ("settlement", "settlementtransition"), ("backoffice", "auditentry")]}
    assert codenames == views | {("settlement", "act_on_settlement"), ("channels_app", "add_markprice"),
                                 ("channels_app", "change_markprice")}
    assert group.name == BACKOFFICE_GROUP


async def test_a_clerk_sees_every_page_and_outsiders_see_none(pair):
    alice, bob, channel_id = pair
    await alice.record(channel_id, external_id="1", amount="2", price="100")
    clerk = await browser(await make_user("clerk", clerk=True))
    channel = await Channel.objects.aget(channel_id=channel_id)
    trade = await Trade.objects.aget()
    for url in ["/admin/", "/admin/channels_app/peer/", "/admin/channels_app/channel/",
                f"/admin/channels_app/channel/{channel.pk}/change/", "/admin/channels_app/trade/",
                f"/admin/channels_app/trade/{trade.pk}/change/", "/admin/channels_app/position/",
                "/admin/channels_app/markprice/", "/admin/channels_app/markprice/add/",
                "/admin/settlement/settlement/", "/admin/backoffice/auditentry/", "/admin/channels_app/peerconnection/"]:
        assert (await clerk.get(url)).status_code == 200, url
    anonymous = await browser()
    response = await anonymous.get("/admin/channels_app/channel/")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
    not_staff = await database_sync_to_async(User.objects.create_user)("visitor", password="x" * 12)
    response = await (await browser(not_staff)).get("/admin/channels_app/channel/")
    assert response.status_code == 302


async def test_the_channel_page_shows_both_balances_positions_from_both_sides_and_trades(pair):
    alice, bob, channel_id = pair
    await alice.record(channel_id, external_id="1", direction="buy", amount="2", price="100")
    await bob.record(channel_id, external_id="2", direction="buy", amount="1", price="130")
    clerk = await browser(await make_user("clerk", clerk=True))
    channel = await Channel.objects.aget(channel_id=channel_id)
    page = (await clerk.get(f"/admin/channels_app/channel/{channel.pk}/change/")).content.decode()
    assert "1060" in page and "940" in page  # alice long 1 @100 at mark 130 (+30) and realized +30
    assert (f"buy 1 · cost {money(100, '100.00')} · value {money(130, '130.00')} · pnl {money(30, '30.00')} · "
            f"realized {money(30, '30.00')}") in page
    assert (f"sell 1 · cost {money(100, '100.00')} · value {money(130, '130.00')} · pnl {money(-30, '-30.00')} · "
            f"realized {money(-30, '-30.00')}") in page
    assert len(re.findall(r'id="trades-\d+"', page)) == 2  # both trades, inline
    assert "2: buy 1 ETH/USD @ 130" in page  # as bob recorded it
    listing = (await clerk.get("/admin/channels_app/channel/", {"q": bob.address.lower()})).content.decode()
    assert channel_id in listing
    peer = await Peer.objects.aget(address=bob.address)
    by_peer = (await clerk.get("/admin/channels_app/channel/", {"peer": peer.pk, "status__exact": "opened"}))
    assert channel_id in by_peer.content.decode()


async def test_trades_and_positions_are_read_only_for_everyone(pair):
    alice, bob, channel_id = pair
    await alice.record(channel_id, external_id="1", amount="2", price="100")
    root = await browser(await make_user("root", superuser=True))
    trade = await Trade.objects.aget()
    url = f"/admin/channels_app/trade/{trade.pk}/change/"
    page = (await root.get(url)).content.decode()
    assert 'name="_save"' not in page
    response = await root.post(url, {"external_id": "edited", "amount": "999"})
    assert response.status_code == 403
    assert (await root.post(f"/admin/channels_app/trade/{trade.pk}/delete/", {"post": "yes"})).status_code == 403
    assert (await root.get("/admin/channels_app/trade/add/")).status_code == 403
    stored = await Trade.objects.aget()
    assert (stored.external_id, stored.amount) == ("1", Decimal("2"))


async def test_saving_a_mark_price_revalues_and_notifies_both_parties_and_is_audited(pair):
    alice, bob, channel_id = pair
    await alice.record(channel_id, external_id="1", direction="buy", amount="2", price="100")
    clerk_user = await make_user("clerk", clerk=True)
    clerk = await browser(clerk_user)
    response = await clerk.post("/admin/channels_app/markprice/add/", {"market": "ETH/USD",
                                                                       "price": "120.000000000000000001"})
    assert response.status_code == 302, response.content.decode()[:2000]
    assert (await MarkPrice.objects.aget()).price == Decimal("120.000000000000000001")
    margin = await bob.notification("stream_notification", action="marginUpdated")
    assert margin["data"]["initiator_margin_balance"] == "1040.000000000000000002"
    assert margin["data"]["follower_margin_balance"] == "959.999999999999999998"
    assert (await alice.notification("position_notification", mark_price="120.000000000000000001"))["data"][
        "pnl"] == "40.000000000000000002"
    entry = await AuditEntry.objects.aget(action="set_mark")
    assert entry.actor == "admin:clerk" and entry.user_id == clerk_user.pk
    assert entry.before is None and entry.after == {"price": "120.000000000000000001"}

    mark = await MarkPrice.objects.aget()
    await clerk.post(f"/admin/channels_app/markprice/{mark.pk}/change/", {"price": "90"})
    assert (await MarkPrice.objects.aget()).price == 90
    changed = await AuditEntry.objects.filter(action="set_mark").afirst()
    assert changed.before == {"price": "120.000000000000000001"} and changed.after == {"price": "90"}


@pytest.mark.parametrize("price", ["1e3", "-1", "0", "abc", "1.0000000000000000001"])
async def test_a_bad_mark_price_is_refused_by_the_form_and_nothing_changes(price):
    clerk = await browser(await make_user("clerk", clerk=True))
    response = await clerk.post("/admin/channels_app/markprice/add/", {"market": "ETH/USD", "price": price})
    assert response.status_code == 200 and "errorlist" in response.content.decode()
    assert not await MarkPrice.objects.aexists()
    assert not await AuditEntry.objects.aexists()


async def proposed_settlement(alice, channel_id, settings):
    settings.SETTLEMENT_ACCEPT_POLICY = "manual"
    await alice.record(channel_id, external_id="1", direction="buy", amount="2", price="100")
    await alice.ok("request_settlement", settle(channel_id))
    await alice.notification("settlement_notification", state="proposed")
    return await Settlement.objects.aget()


async def test_accepting_a_settlement_in_the_admin_runs_it_and_both_parties_hear_every_state(pair, settings):
    alice, bob, channel_id = pair
    settlement = await proposed_settlement(alice, channel_id, settings)
    clerk = await browser(await make_user("clerk", clerk=True))
    page = (await clerk.get(f"/admin/settlement/settlement/{settlement.pk}/change/")).content.decode()
    assert 'id="action-accept"' in page and 'id="action-reject"' in page and 'id="action-fail"' not in page
    assert f"<td>USD</td><td>{money(0, '0.00')}</td><td>{money(0, '0.00')}</td>" in page  # per asset and side

    url = f"/admin/settlement/settlement/{settlement.pk}/act/accept/"
    confirmation = (await clerk.get(url)).content.decode()
    assert "Accept settlement" in confirmation and 'id="confirm"' in confirmation
    assert (await Settlement.objects.aget()).state == "proposed"  # a GET changes nothing
    response = await clerk.post(url, {"note": "checked with both desks"})
    assert response.status_code == 302  # the clerk's POST records the intent; the payment worker pays

    for client in (alice, bob):
        states = [(await client.notification("settlement_notification", state=s))["data"]["state"]
                  for s in ("accepted", "initiated", "prepared", "executed", "completed")]
        assert states[-1] == "completed"
    accepted = await settlement.transitions.filter(to_state="accepted").aget()
    assert accepted.actor == "admin:clerk" and accepted.note == "checked with both desks"
    entry = await AuditEntry.objects.aget(action="accept_settlement")
    assert entry.before["state"] == "proposed" and entry.after["state"] == "accepted"
    assert (await clerk.post(url)).status_code == 302  # no longer allowed: refused with a message
    assert (await Settlement.objects.aget()).state == "completed"


async def test_reject_fail_and_retry_from_the_admin(pair, settings):
    alice, bob, channel_id = pair
    settlement = await proposed_settlement(alice, channel_id, settings)
    clerk = await browser(await make_user("clerk", clerk=True))
    await clerk.post(f"/admin/settlement/settlement/{settlement.pk}/act/reject/")
    assert (await Settlement.objects.aget(pk=settlement.pk)).state == "rejected"
    await bob.notification("settlement_notification", state="rejected")
    assert (await alice.positions(channel_id))["ETH/USD"]["status"] == "open"

    await alice.ok("request_settlement", settle(channel_id))
    second = await Settlement.objects.exclude(pk=settlement.pk).aget()
    await hold_payment_lease()  # the payment worker is elsewhere (and stuck): the clerk steps in
    await database_sync_to_async(engine.transition)(settlement_pk=second.pk, target="accepted", actor="operator")
    await database_sync_to_async(engine.transition)(settlement_pk=second.pk, target="initiated", actor="operator")
    await clerk.post(f"/admin/settlement/settlement/{second.pk}/act/fail/", {"note": "chain halted"})
    assert (await Settlement.objects.aget(pk=second.pk)).state == "failed"
    await alice.notification("settlement_notification", state="failed")

    page = (await clerk.get(f"/admin/settlement/settlement/{second.pk}/change/")).content.decode()
    assert 'id="action-retry"' in page
    response = await clerk.post(f"/admin/settlement/settlement/{second.pk}/act/retry/")
    third = await Settlement.objects.order_by("-id").afirst()
    assert third.pk not in (settlement.pk, second.pk) and third.state == "proposed"  # manual policy: awaits a clerk
    assert response["Location"].endswith(f"/{third.pk}/change/")
    assert third.requested_by_id is None
    first_transition = await third.transitions.afirst()
    assert first_transition.actor == "admin:clerk" and f"retry of settlement {second.pk}" in first_transition.note
    assert [e.action async for e in AuditEntry.objects.order_by("id")] == [
        "reject_settlement", "fail_settlement", "retry_settlement"]


async def test_settlement_actions_need_the_permission_and_a_csrf_token(pair, settings):
    alice, bob, channel_id = pair
    settlement = await proposed_settlement(alice, channel_id, settings)
    viewer = await browser(await make_user("viewer", perms=["view_settlement"]))
    page = (await viewer.get(f"/admin/settlement/settlement/{settlement.pk}/change/")).content.decode()
    assert "action-accept" not in page
    assert (await viewer.post(f"/admin/settlement/settlement/{settlement.pk}/act/accept/")).status_code == 403

    strict = await browser(await make_user("clerk", clerk=True), enforce_csrf_checks=True)
    assert (await strict.post(f"/admin/settlement/settlement/{settlement.pk}/act/accept/")).status_code == 403
    assert (await Settlement.objects.aget()).state == "proposed"


async def test_disabling_a_peer_closes_its_connections_and_it_cannot_log_in_again(pair, connect):
    alice, bob, channel_id = pair
    bob_again = await connect(bob.account)
    root = await browser(await make_user("root", superuser=True))
    peer = await Peer.objects.aget(address=bob.address)
    response = await disable(root, peer)
    assert response.status_code == 302
    for client in (bob, bob_again):
        assert await client.comm.receive_output(timeout=3) == {"type": "websocket.close", "code": 4403}
    await alice.expect_nothing()  # the other party stays connected
    assert (await Peer.objects.aget(pk=peer.pk)).is_disabled
    entry = await AuditEntry.objects.aget(action="disable_peer")
    assert entry.before == {"is_disabled": False} and entry.after == {"is_disabled": True}

    retry = await connect(bob.account, login=False)
    from tests.client import sign
    await retry.error("authenticate", {"challenge": retry.challenge, "signature": sign(bob.account, retry.challenge)},
                      code="peer_disabled")

    await root.post("/admin/channels_app/peer/", {"action": "enable_peers", "_selected_action": [peer.pk]})
    await connect(bob.account)  # logs in again


async def test_a_clerk_cannot_disable_peers(pair):
    alice, bob, channel_id = pair
    clerk = await browser(await make_user("clerk", clerk=True))
    peer = await Peer.objects.aget(address=bob.address)
    for confirmed in ({}, {"confirm": "yes"}):  # neither the confirmation page nor the confirmed POST
        response = await clerk.post("/admin/channels_app/peer/", {"action": "disable_peers",
                                                                  "_selected_action": [peer.pk], **confirmed})
        assert 'id="confirm"' not in response.content.decode()
    assert not (await Peer.objects.aget(pk=peer.pk)).is_disabled
    await bob.expect_nothing()


async def test_the_dashboard_shows_channels_by_status_trades_today_open_settlements_and_peers_online(pair, connect,
                                                                                                    settings):
    alice, bob, channel_id = pair
    await alice.open_channel(bob)  # a second channel
    settlement = await proposed_settlement(alice, channel_id, settings)
    clerk = await browser(await make_user("clerk", clerk=True))
    page = (await clerk.get("/admin/")).content.decode()
    assert "Opened: <strong>1</strong>" in page and "Settling: <strong>1</strong>" in page
    assert '<td id="trades-today"><strong>1</strong></td>' in page
    assert f"/admin/settlement/settlement/{settlement.pk}/change/" in page
    assert "Open settlements needing action (1)" in page
    assert '<td id="peers-online"><strong>2</strong>' in page
    await bob.close()
    page = (await clerk.get("/admin/")).content.decode()
    assert '<td id="peers-online"><strong>1</strong>' in page


async def test_the_audit_log_cannot_be_edited_even_by_a_superuser(pair):
    alice, bob, channel_id = pair
    root_user = await make_user("root", superuser=True)
    root = await browser(root_user)
    peer = await Peer.objects.aget(address=bob.address)
    await disable(root, peer)
    entry = await AuditEntry.objects.aget()
    assert (await root.post(f"/admin/backoffice/auditentry/{entry.pk}/change/", {"actor": "x"})).status_code == 403
    assert (await root.post(f"/admin/backoffice/auditentry/{entry.pk}/delete/", {"post": "yes"})).status_code == 403
    assert (await AuditEntry.objects.aget()).actor == "admin:root"
