"""A clerk's note and a clerk's action are kept wherever a clerk looks (issue 13, items 8 and 10): the note in the
settlement's history and in the audit entry; the action in the project's audit log and in Django's own admin log
("Recent actions" on the index, each object's "History" page), written together in the action's transaction.

Set up through the services (no broker connected, so no payment worker runs: an accepted settlement waits), acted
on through the real admin views.
"""
from decimal import Decimal

import pytest
from django.contrib.admin.models import ADDITION, CHANGE, LogEntry
from django.contrib.auth.models import User
from django.test import Client
from eth_account import Account

from backoffice import actions
from backoffice.audit import admin_actor, change_message
from backoffice.models import AuditEntry
from backoffice.permissions import ensure_backoffice_group
from channels_app.errors import DomainError
from channels_app.models import MarkPrice, Peer
from channels_app.services.trades import TradeInput, record_trade
from settlement.models import Settlement
from tests.client import EXECUTED_AT
from tests.factories import opened_channel

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def manual(settings):
    settings.SETTLEMENT_ACCEPT_POLICY = "manual"  # every settlement waits for the clerk


@pytest.fixture
def clerk_user() -> User:
    user = User.objects.create_user("clerk", password="correct horse battery staple", is_staff=True)
    user.groups.add(ensure_backoffice_group())
    return user


@pytest.fixture
def clerk(clerk_user) -> Client:
    client = Client()
    client.force_login(clerk_user)
    return client


def proposed() -> Settlement:
    """A channel with one open position, settled by the operator: proposed, waiting for a clerk."""
    alice = Peer.objects.create(address=Account.create().address, name="Alice")
    channel = opened_channel(initiator=alice, responder_address=Account.create().address,
                             margin_deposit=Decimal("100"))
    record_trade(peer=alice, channel_id=channel.channel_id, trade=TradeInput(
        external_id="open", market="ETH/USD", direction="buy", amount=Decimal("1"), price=Decimal("10"),
        executed_at=EXECUTED_AT))
    settlement = actions.propose_settlement(actor="command:ops", channel_id=channel.channel_id,
                                            markets=["ETH/USD"], method="mock", chain_id=1)
    assert settlement.state == "proposed"
    return settlement


def act(clerk: Client, settlement: Settlement, action: str, note: str) -> None:
    response = clerk.post(f"/admin/settlement/settlement/{settlement.pk}/act/{action}/", {"note": note})
    assert response.status_code == 302, action


def test_every_clerk_action_keeps_its_note_in_the_history_the_audit_entry_and_djangos_log(clerk, clerk_user):
    rejected, paid = proposed(), None
    act(clerk, rejected, "reject", "price disputed by Bob's desk")
    paid = proposed()
    act(clerk, paid, "accept", "checked with both desks")
    act(clerk, paid, "fail", "desk asked to stop: wrong account")
    act(clerk, paid, "retry", "account corrected")
    retried = Settlement.objects.exclude(pk__in=[rejected.pk, paid.pk]).get(channel=paid.channel)

    history = {(t.settlement_id, t.to_state): t.note for t in
               rejected.transitions.model.objects.filter(actor=admin_actor(clerk_user))}
    assert history == {
        (rejected.pk, "rejected"): "price disputed by Bob's desk",
        (paid.pk, "accepted"): "checked with both desks",
        (paid.pk, "failed"): "desk asked to stop: wrong account",
        (retried.pk, "proposed"): f"retry of settlement {paid.pk}: account corrected",  # the service's, the clerk's
    }
    audited = {e.action: (e.object_id, e.after) for e in AuditEntry.objects.filter(user=clerk_user)}
    assert audited == {
        "reject_settlement": (str(rejected.pk), {"settlement": rejected.pk, "state": "rejected",
                                                 "note": "price disputed by Bob's desk"}),
        "accept_settlement": (str(paid.pk), {"settlement": paid.pk, "state": "accepted",
                                             "note": "checked with both desks"}),
        "fail_settlement": (str(paid.pk), {"settlement": paid.pk, "state": "failed",
                                           "note": "desk asked to stop: wrong account"}),
        "retry_settlement": (str(retried.pk), {"settlement": retried.pk, "state": "proposed",
                                               "note": "account corrected"}),
    }

    logged = list(LogEntry.objects.filter(user=clerk_user).order_by("id"))
    assert [(e.object_id, e.action_flag, e.change_message) for e in logged] == [
        (str(rejected.pk), CHANGE, "reject settlement: settlement "
         f"{rejected.pk}, state proposed → rejected; note: price disputed by Bob's desk"),
        (str(paid.pk), CHANGE, f"accept settlement: settlement {paid.pk}, state proposed → accepted; "
         "note: checked with both desks"),
        (str(paid.pk), CHANGE, f"fail settlement: settlement {paid.pk}, state accepted → failed; "
         "note: desk asked to stop: wrong account"),
        (str(retried.pk), CHANGE, f"retry settlement: settlement {paid.pk} → {retried.pk}, "
         "state failed → proposed; note: account corrected"),
    ]
    assert {e.content_type.model_class() for e in logged} == {Settlement}

    page = clerk.get(f"/admin/settlement/settlement/{paid.pk}/history/")
    assert page.status_code == 200
    text = page.content.decode()
    assert "accept settlement" in text and "checked with both desks" in text
    assert "fail settlement" in text and "desk asked to stop: wrong account" in text
    assert "price disputed" not in text  # another settlement's history
    index = clerk.get("/admin/").content.decode()  # "Recent actions": the clerk's own, newest first
    recent = index[index.index('class="actionlist"'):]
    assert recent.index(f"Settlement {retried.pk} of") < recent.index(f"Settlement {paid.pk} of")

    audit_list = clerk.get("/admin/backoffice/auditentry/").content.decode()
    assert "account corrected" in audit_list  # the note column of the audit log


def test_a_blank_note_is_written_as_none_and_a_refused_action_writes_nothing(clerk_user):
    settlement = proposed()
    actions.act_on_settlement(actor=admin_actor(clerk_user), user=clerk_user, settlement_pk=settlement.pk,
                              action="accept", note="   ")
    entry = LogEntry.objects.get(user=clerk_user)
    assert entry.change_message == f"accept settlement: settlement {settlement.pk}, state proposed → accepted"
    assert AuditEntry.objects.get(action="accept_settlement").after["note"] == ""
    with pytest.raises(DomainError):  # accepted already: refused, and neither log says otherwise
        actions.act_on_settlement(actor=admin_actor(clerk_user), user=clerk_user, settlement_pk=settlement.pk,
                                  action="reject", note="too late")
    assert not AuditEntry.objects.filter(action="reject_settlement").exists()
    assert LogEntry.objects.filter(user=clerk_user).count() == 1


def test_marks_and_peers_set_in_the_back_office_show_in_their_history_and_commands_in_the_audit_log_only(
        clerk, clerk_user):
    actions.set_mark(actor="command:ops", market="ETH/USD", price=Decimal("100"))  # a command: no user
    assert AuditEntry.objects.filter(action="set_mark").count() == 1 and not LogEntry.objects.exists()

    mark = actions.set_mark(actor=admin_actor(clerk_user), user=clerk_user, market="ETH/USD", price=Decimal("112.5"))
    new = actions.set_mark(actor=admin_actor(clerk_user), user=clerk_user, market="BTC/USD", price=Decimal("65000"))
    assert [(e.object_id, e.action_flag, e.change_message) for e in LogEntry.objects.order_by("id")] == [
        (str(mark.pk), CHANGE, "set mark: price 100 → 112.5"), (str(new.pk), ADDITION, "set mark: price 65000")]
    page = clerk.get(f"/admin/channels_app/markprice/{MarkPrice.objects.get(market='ETH/USD').pk}/history/")
    assert page.status_code == 200 and "set mark: price 100 → 112.5" in page.content.decode()

    peer = Peer.objects.create(address=Account.create().address, name="Carol")
    actions.set_peer_disabled(actor=admin_actor(clerk_user), user=clerk_user, peer_pk=peer.pk, disabled=True)
    entry = LogEntry.objects.get(object_id=str(peer.pk), content_type__model="peer")
    assert entry.user == clerk_user and entry.change_message == "disable peer: is_disabled False → True"


def test_the_change_message_is_one_plain_line():
    assert change_message("propose_settlement", None, {"markets": ["ETH/USD", "BTC/USD"], "ledger": [{"a": 1}],
                                                       "method": "mock"}) == \
        "propose settlement: markets ETH/USD, BTC/USD, method mock"
    assert change_message("fix_position", {"quantity": "7"}, {"quantity": "1.5", "note": ""}) == \
        "fix position: quantity 7 → 1.5"
