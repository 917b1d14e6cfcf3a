"""Consent to a channel (docs/protocol.md section 4): a channel opens only when both parties asked for it.

Under the default policy ``open_channel`` proposes (``opening``, both told ``channelOpened`` with that status); the
responder consents by sending ``open_channel`` back with the same deposit. A proposal expires after
``CHANNEL_ACCEPT_SECONDS`` and either side may withdraw it. Nothing is possible on a channel in ``opening``.
"""
import asyncio

import pytest
from eth_account import Account

from channels_app.models import Channel, Trade
from settlement.models import Settlement
from tests.client import trade

pytestmark = pytest.mark.django_db(transaction=True)


async def opening_notes(*clients, status, action="channelOpened", channel_id=None):
    notes = []
    for client in clients:
        match = {"channel_id": channel_id} if channel_id else {}
        notes.append(await client.notification("stream_notification", action=action, channel_status=status,
                                               **match))
    return notes


async def test_the_consent_flow_frame_by_frame(connect):
    alice = await (await connect()).subscribe()
    bob = await (await connect()).subscribe()
    # 1. Alice proposes: the reply names the channel, both hear it as "opening" (a proposal), from their own side.
    reply = await alice.ok("open_channel", {"peer": {"address": bob.address, "name": "Bob"}, "margin_deposit": "1000"})
    channel_id = reply["data"]["channel_id"]
    to_alice, to_bob = await opening_notes(alice, bob, status="opening")
    assert to_alice["data"]["channel_id"] == to_bob["data"]["channel_id"] == channel_id
    assert (to_alice["data"]["my_role"], to_bob["data"]["my_role"]) == ("Initiator", "Responder")
    assert to_bob["data"]["peer"] == {"address": alice.address}
    listed = await bob.ok("channels", {})
    assert [(c["channel_id"], c["channel_status"]) for c in listed["data"]["channels"]] == [(channel_id, "opening")]

    # 2. Nothing is possible on a proposal, for either party.
    for client in (alice, bob):
        await client.error("record_trade", trade(channel_id, external_id=f"by-{client.address}"),
                           code="invalid_channel_state")
        await client.error("record_trades", {"channel_id": channel_id, "trades": [
            {k: v for k, v in trade(channel_id).items() if k != "channel_id"}]}, code="invalid_channel_state")
        await client.error("channel_jwt", {"channel_id": channel_id}, code="invalid_channel_state")
        await client.error("request_settlement", {"channel_id": channel_id, "payment_method": "mock", "chain_id": 1,
                                                  "markets": ["ETH/USD"]}, code="invalid_channel_state")

    # 3. Bob consents: open_channel toward Alice with the same deposit (written otherwise) opens that channel.
    reply = await bob.ok("open_channel", {"peer": {"address": alice.address}, "margin_deposit": "1000.00"})
    assert reply["data"]["channel_id"] == channel_id
    to_alice, to_bob = await opening_notes(alice, bob, status="opened")
    assert to_alice["data"]["my_role"] == "Initiator" and to_bob["data"]["my_role"] == "Responder"
    assert to_alice["data"]["peer"]["name"] == "Bob"  # the proposal's names are kept
    assert to_bob["data"]["initiator_margin_balance"] == to_bob["data"]["follower_margin_balance"] == "1000"

    # 4. Now it trades, and a JWT is issued.
    await alice.record(channel_id, external_id="t1")
    await bob.ok("channel_jwt", {"channel_id": channel_id})
    assert await Channel.objects.acount() == 1


async def test_the_hostile_broker_binds_nobody_who_never_spoke_to_the_operator(connect):
    """Broker C opens a channel with V, who never connected, trades against it and asks to settle: the channel
    stays a proposal and every step is refused; nothing is booked and nothing is settled."""
    carol = await (await connect()).subscribe()
    victim = Account.create()
    channel_id = (await carol.ok("open_channel", {"peer": {"address": victim.address},
                                                  "margin_deposit": "1000"}))["data"]["channel_id"]
    await carol.notification("stream_notification", action="channelOpened", channel_status="opening")
    for external_id, price in (("c1", "1"), ("c2", "1000")):
        error = await carol.error("record_trade", trade(channel_id, external_id=external_id, price=price),
                                  code="invalid_channel_state")
        assert "opening" in error["error"]
    await carol.error("request_settlement", {"channel_id": channel_id, "payment_method": "mock", "chain_id": 1,
                                             "markets": ["ETH/USD"]}, code="invalid_channel_state")
    await carol.error("channel_jwt", {"channel_id": channel_id}, code="invalid_channel_state")
    assert (await Channel.objects.aget(channel_id=channel_id)).status == "opening"
    assert await Trade.objects.acount() == 0 and await Settlement.objects.acount() == 0


async def test_a_different_deposit_is_a_counter_proposal_and_the_proposer_cannot_accept_its_own(connect):
    alice = await (await connect()).subscribe()
    bob = await (await connect()).subscribe()
    first = await alice.open_channel(bob, "1000", accept=False)
    again = await alice.open_channel(bob, "1000", accept=False)  # the proposer repeating itself: a second proposal
    assert again != first
    counter = await bob.accept_channel(alice, "500")  # not the deposit proposed: Bob's own proposal
    assert counter not in (first, again)
    statuses = {c.channel_id: (c.status, c.initiator_id) async for c in Channel.objects.all()}
    assert {cid: status for cid, (status, _) in statuses.items()} == {first: "opening", again: "opening",
                                                                       counter: "opening"}
    assert await alice.accept_channel(bob, "500") == counter  # Alice takes Bob's terms
    assert (await Channel.objects.aget(channel_id=counter)).status == "opened"
    assert await bob.accept_channel(alice, "1000") == first  # the oldest matching proposal
    assert (await Channel.objects.aget(channel_id=again)).status == "opening"


@pytest.mark.parametrize("withdrawer", ["initiator", "responder"])
async def test_either_party_withdraws_a_proposal_with_close_channel(connect, withdrawer):
    alice = await (await connect()).subscribe()
    bob = await (await connect()).subscribe()
    channel_id = await alice.open_channel(bob, accept=False)
    await opening_notes(alice, bob, status="opening")
    closer = alice if withdrawer == "initiator" else bob
    assert (await closer.ok("close_channel", {"channel_id": channel_id}))["data"]["channel_id"] == channel_id
    await opening_notes(alice, bob, status="closed", action="channelClosed", channel_id=channel_id)
    assert (await Channel.objects.aget(channel_id=channel_id)).status == "closed"
    # A withdrawn proposal cannot be accepted: Bob's open_channel now proposes anew.
    assert await bob.accept_channel(alice) != channel_id
    await alice.error("close_channel", {"channel_id": channel_id}, code="invalid_channel_state")


async def test_a_proposal_not_accepted_in_time_expires_to_closed_and_both_are_told(connect, settings):
    settings.CHANNEL_ACCEPT_SECONDS = 0.5
    alice = await (await connect()).subscribe()
    bob = await (await connect()).subscribe()
    channel_id = await alice.open_channel(bob, accept=False)
    await opening_notes(alice, bob, status="opening")
    closed = await opening_notes(alice, bob, status="closed", action="channelClosed", channel_id=channel_id)
    assert [n["data"]["my_role"] for n in closed] == ["Initiator", "Responder"]  # the payment worker's round did it
    assert (await Channel.objects.aget(channel_id=channel_id)).status == "closed"
    assert await bob.accept_channel(alice) != channel_id  # too late: a new proposal
    await alice.error("record_trade", trade(channel_id), code="invalid_channel_state")


async def test_an_expired_proposal_is_never_accepted_even_before_the_worker_closes_it(connect, settings):
    settings.CHANNEL_ACCEPT_SECONDS = 3600
    alice, bob = await connect(), await connect()
    channel_id = await alice.open_channel(bob, accept=False)
    settings.CHANNEL_ACCEPT_SECONDS = 0.001  # the proposal is past its time; the worker may not have run yet
    await asyncio.sleep(0.01)
    assert await bob.accept_channel(alice) != channel_id


async def test_the_auto_policy_opens_at_once_for_testing(connect, settings):
    settings.CHANNEL_ACCEPT_POLICY = "auto"
    alice = await (await connect()).subscribe()
    bob = await (await connect()).subscribe()
    channel_id = await alice.open_channel(bob, accept=False)
    for client in (alice, bob):
        note = await client.notification("stream_notification", action="channelOpened")
        assert note["data"]["channel_status"] == "opened" and note["data"]["channel_id"] == channel_id
    await alice.record(channel_id)


async def test_consent_is_the_default_policy():
    from django.conf import settings

    assert settings.CHANNEL_ACCEPT_POLICY == "consent"
    assert settings.CHANNEL_ACCEPT_SECONDS == 86400
