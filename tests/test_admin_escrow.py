"""Back office and the payment worker: the escrow and the worker's state on a settlement's page, the settlements that
need attention on the dashboard and the list, and clerks' actions that never reach the chain (so never a 500).

What the worker records (the escrow object, its last error, its log) is set directly on settlements made through the
protocol, as the worker would have left them; the worker itself stands by (another holds the lease).
"""
import re
import time
from datetime import datetime, timedelta, timezone

import pytest
from channels.db import database_sync_to_async
from django.utils import timezone as django_timezone

from settlement import services as engine
from settlement.models import Settlement, SettlementLogEntry
from tests.conftest import hold_payment_lease
from tests.test_admin import browser, make_user, settle

pytestmark = pytest.mark.django_db(transaction=True)

CONTRACT = "0x" + "C0" * 20
ESCROW_ID = "0x" + "ab" * 32
TOKEN = "0x" + "70" * 20
OPEN_TX, FUND_TX = "0x" + "11" * 32, "0x" + "22" * 32
ERROR = "ChainError: the chain at http://127.0.0.1:8545 does not answer: connection refused"


def escrow(alice, bob, *, deadline: int) -> dict:
    return {
        "chain_id": 31337, "contract": CONTRACT, "escrow_id": ESCROW_ID, "deadline": deadline,
        "legs": [
            {"asset": "USD", "token": TOKEN, "decimals": 6, "from": alice.address, "to": bob.address,
             "amount": "30.25", "units": "30250000", "funded": True},
            {"asset": "USDT", "token": TOKEN, "decimals": 6, "from": bob.address, "to": alice.address,
             "amount": "4.5", "units": "4500000", "funded": False},
        ],
        "transactions": [{"step": "open", "hash": OPEN_TX}, {"step": "fund", "hash": FUND_TX, "from": alice.address}],
    }


async def proposed(alice, channel_id, settings, external_id="1") -> Settlement:
    """A mock settlement proposed through the protocol, awaiting a clerk (manual policy)."""
    settings.SETTLEMENT_ACCEPT_POLICY = "manual"
    await alice.record(channel_id, external_id=external_id, direction="buy", amount="2", price="100")
    await alice.ok("request_settlement", settle(channel_id))
    await alice.notification("settlement_notification", state="proposed", channel_id=channel_id)
    return await Settlement.objects.aget(channel__channel_id=channel_id, state="proposed")


async def under_way(settlement: Settlement, state: str = "initiated", **worker_recorded) -> Settlement:
    """Moved on as the worker would (accepted, initiated), then what it recorded, as an escrow settlement."""
    await hold_payment_lease()  # our own worker stands by: the settlement stays where the test puts it
    path = {"accepted": ["accepted"], "initiated": ["accepted", "initiated"]}[state]
    for target in path:
        await database_sync_to_async(engine.transition)(settlement_pk=settlement.pk, target=target, actor="operator")
    await Settlement.objects.filter(pk=settlement.pk).aupdate(payment_method="escrow", chain_id=31337,
                                                              **worker_recorded)
    return await Settlement.objects.aget(pk=settlement.pk)


async def new_channel(alice, bob) -> str:
    channel_id = await alice.open_channel(bob)
    await alice.notification("stream_notification", action="channelOpened", channel_status="opened",
                             channel_id=channel_id)
    return channel_id


def rows(page: str, css_class: str) -> list[str]:
    return re.findall(rf'<tr class="{css_class}">(.*?)</tr>', page, re.S)


async def test_the_settlement_page_shows_the_escrow_the_workers_last_error_and_its_log(pair, settings):
    alice, bob, channel_id = pair
    settings.ESCROW_EXPLORER_URL = ""
    deadline = int(time.time()) + 3600
    next_attempt = django_timezone.now() + timedelta(seconds=30)
    settlement = await under_way(
        await proposed(alice, channel_id, settings), escrow=escrow(alice, bob, deadline=deadline), last_error=ERROR,
        attempts=3, next_attempt_at=next_attempt)
    await SettlementLogEntry.objects.acreate(settlement=settlement, state="initiated", message="TimeoutError: read")
    await SettlementLogEntry.objects.acreate(settlement=settlement, state="initiated", message=ERROR)
    clerk = await browser(await make_user("clerk", clerk=True))

    response = await clerk.get(f"/admin/settlement/settlement/{settlement.pk}/change/")
    assert response.status_code == 200
    page = response.content.decode()
    assert '<td id="escrow-chain-id">31337</td>' in page
    assert f"<code>{CONTRACT}</code>" in page and f"<code>{ESCROW_ID}</code>" in page
    at = datetime.fromtimestamp(deadline, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    deadline_cell = re.search(r'<td id="escrow-deadline">(.*?)</td>', page, re.S).group(1)
    assert f"{at} UTC" in deadline_cell and f"unix {deadline}" in deadline_cell
    assert "server&#x27;s clock" in deadline_cell  # the title says "passed" is judged by the server's clock
    assert "deadline-passed" not in deadline_cell
    legs = rows(page, "escrow-leg")
    assert len(legs) == 2
    assert all(x in legs[0] for x in ("<td>USD</td>", alice.address, bob.address, "<td>30.25</td>",
                                       "<td>30250000</td>", "<td>yes</td>"))
    assert all(x in legs[1] for x in ("<td>USDT</td>", "<td>4.5</td>", "<td>4500000</td>", "<td>no</td>"))
    transactions = rows(page, "escrow-transaction")
    assert "<td>open</td>" in transactions[0] and OPEN_TX in transactions[0] and "<td>–</td>" in transactions[0]
    assert "<td>fund</td>" in transactions[1] and FUND_TX in transactions[1] and alice.address in transactions[1]
    assert 'class="explorer"' not in page and "/tx/" not in page  # no explorer configured: no links

    assert '<pre class="last-error"' in page and "the chain at http://127.0.0.1:8545 does not answer" in page
    assert re.search(r"Attempts:</label>\s*<div[^>]*>3</div>", page)
    assert re.search(rf"Next attempt:</label>\s*<div[^>]*>{next_attempt:%Y-%m-%d %H:%M:%S} UTC</div>", page)
    assert "payment worker log" in page.lower()
    assert page.index("TimeoutError: read") < page.rindex(ERROR)  # the log, oldest first
    assert 'name="log-0-message"' not in page  # read-only

    settings.ESCROW_EXPLORER_URL = "https://explorer.example/"
    page = (await clerk.get(f"/admin/settlement/settlement/{settlement.pk}/change/")).content.decode()
    for kind, value in [("tx", OPEN_TX), ("tx", FUND_TX), ("address", CONTRACT), ("address", alice.address),
                        ("address", bob.address)]:
        assert f'href="https://explorer.example/{kind}/{value}"' in page, (kind, value)
    assert "https://explorer.example/address/" + ESCROW_ID not in page  # an escrow id is no address


async def test_a_deadline_in_the_past_is_marked_passed(pair, settings):
    alice, bob, channel_id = pair
    settlement = await under_way(await proposed(alice, channel_id, settings),
                                 escrow=escrow(alice, bob, deadline=int(time.time()) - 60))
    clerk = await browser(await make_user("clerk", clerk=True))
    page = (await clerk.get(f"/admin/settlement/settlement/{settlement.pk}/change/")).content.decode()
    assert '<strong class="deadline-passed">passed</strong>' in page


async def test_a_mock_settlement_has_no_escrow_section(pair, settings):
    alice, bob, channel_id = pair
    settlement = await proposed(alice, channel_id, settings)
    clerk = await browser(await make_user("clerk", clerk=True))
    page = (await clerk.get(f"/admin/settlement/settlement/{settlement.pk}/change/")).content.decode()
    assert "escrow-legs" not in page and 'id="escrow-contract"' not in page and ">Escrow</h2>" not in page
    assert ">Payment worker</h2>" in page  # the worker's section is there (nothing to report)


async def test_the_dashboard_and_the_list_show_settlements_needing_attention_and_not_healthy_ones(pair, settings):
    alice, bob, channel_id = pair
    now = int(time.time())
    retrying = await under_way(await proposed(alice, channel_id, settings), state="accepted", last_error=ERROR,
                               attempts=4)
    late_channel = await new_channel(alice, bob)
    late = await under_way(await proposed(alice, late_channel, settings, external_id="2"),
                           escrow=escrow(alice, bob, deadline=now - 120))
    healthy_channel = await new_channel(alice, bob)
    first = await under_way(await proposed(alice, healthy_channel, settings, external_id="3"), last_error=ERROR)
    await database_sync_to_async(engine.transition)(settlement_pk=first.pk, target="failed", actor="admin:x")
    healthy = await under_way(await proposed(alice, healthy_channel, settings, external_id="4"),
                              escrow=escrow(alice, bob, deadline=now + 3600))
    clerk = await browser(await make_user("clerk", clerk=True))

    page = (await clerk.get("/admin/")).content.decode()
    assert "Settlements needing attention (2)" in page
    panel = page[page.index('id="attention-settlements"'):]
    panel = panel[:panel.index("</div>")]
    row = re.search(rf'<tr class="attention-settlement" id="attention-{retrying.pk}">(.*?)</tr>', panel, re.S)[1]
    assert f"/admin/settlement/settlement/{retrying.pk}/change/" in row
    assert "attempt 4" in row and "does not answer: connection refused" in row
    row = re.search(rf'<tr class="attention-settlement" id="attention-{late.pk}">(.*?)</tr>', panel, re.S)[1]
    assert f"/admin/settlement/settlement/{late.pk}/change/" in row and "past its escrow deadline" in row
    assert datetime.fromtimestamp(now - 120, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC") in row
    for pk in (healthy.pk, first.pk):  # waiting before its deadline; failed (an old error is no concern)
        assert f"/admin/settlement/settlement/{pk}/change/" not in panel
    assert "Open settlements needing action (3)" in page  # the existing panel stays

    listing = (await clerk.get("/admin/settlement/settlement/", {"attention": "yes"})).content.decode()
    ids = {int(pk) for pk in re.findall(r"/admin/settlement/settlement/(\d+)/change/", listing)}
    assert ids == {retrying.pk, late.pk}
    assert "retrying (4)" in listing and "past deadline" in listing
    for value, expected in [("retrying", {retrying.pk}), ("past_deadline", {late.pk})]:
        listing = (await clerk.get("/admin/settlement/settlement/", {"attention": value})).content.decode()
        assert {int(pk) for pk in re.findall(r"/admin/settlement/settlement/(\d+)/change/", listing)} == expected
    everything = (await clerk.get("/admin/settlement/settlement/")).content.decode()
    assert {int(pk) for pk in re.findall(r"/admin/settlement/settlement/(\d+)/change/", everything)} == {
        retrying.pk, late.pk, first.pk, healthy.pk}


async def test_clerks_actions_on_an_escrow_never_reach_the_chain_nor_answer_500(pair, settings):
    alice, bob, channel_id = pair
    settings.ESCROW_RPC_URL, settings.ESCROW_CONTRACT = "http://127.0.0.1:9", CONTRACT  # nothing listens there
    settings.ESCROW_RPC_TIMEOUT_SECONDS = 1
    settlement = await under_way(await proposed(alice, channel_id, settings), last_error=ERROR, attempts=2,
                                 escrow=escrow(alice, bob, deadline=int(time.time()) + 3600))
    clerk = await browser(await make_user("clerk", clerk=True))
    # its escrow is on chain (alice has paid in): failing it by hand could let money move for a failed settlement
    page = (await clerk.get(f"/admin/settlement/settlement/{settlement.pk}/change/")).content.decode()
    assert 'id="action-fail"' not in page
    url = f"/admin/settlement/settlement/{settlement.pk}/act/fail/"
    assert (await clerk.post(url, {"note": "chain halted"})).status_code == 302  # refused with a message
    assert (await Settlement.objects.aget(pk=settlement.pk)).state == "initiated"

    # accepted, nothing recorded for its escrow yet: nothing can have been sent, a clerk may fail it
    await Settlement.objects.filter(pk=settlement.pk).aupdate(state="accepted", escrow=None)
    confirmation = await clerk.get(url)
    assert confirmation.status_code == 200 and "Nothing is sent to the chain" in confirmation.content.decode()
    assert (await clerk.post(url, {"note": "chain halted"})).status_code == 302
    assert (await Settlement.objects.aget(pk=settlement.pk)).state == "failed"

    # a retry proposes anew: escrow availability is known without asking the chain (checked in the background)
    retry = f"/admin/settlement/settlement/{settlement.pk}/act/retry/"
    assert (await clerk.get(retry)).status_code == 200
    response = await clerk.post(retry, follow=True)
    assert response.status_code == 200
    assert "Not done: escrow is not available yet" in response.content.decode()
    settings.ESCROW_RPC_URL = ""
    response = await clerk.post(retry, follow=True)
    assert response.status_code == 200 and "Not done: escrow is not available" in response.content.decode()
    assert await Settlement.objects.acount() == 1  # nothing proposed
