"""Authorization audit (docs/reliability.md): for every event that names a channel, an outsider learns nothing and
changes nothing; the admin is staff-only page by page; no secret reaches a client or a log line.

(A challenge's binding to its connection and its single use: tests/test_auth.py.)
"""
import json
import logging
import time

import pytest
from channels.db import database_sync_to_async
from django.conf import settings as django_settings
from django.contrib import admin
from django.contrib.auth.models import User
from django.test import AsyncClient
from django.urls import reverse

from operatorapi.events import Event
from channels_app.models import Channel, Position, Trade
from operatorapi.schemas import REQUEST_SCHEMAS
from channels_app.services import trades as trade_service
from channels_app.identity import operator_keys
from settlement.models import Settlement
from tests.client import sign

pytestmark = pytest.mark.django_db(transaction=True)
MISSING = "0x" + "00" * 32


def channel_events() -> list[Event]:
    """Every request event whose data names a channel (from the schemas: new events are audited too)."""
    return [e for e, schema in REQUEST_SCHEMAS.items() if schema is not None and "channel_id" in schema.model_fields]


def request_for(event: Event, channel_id: str) -> dict:
    trade = {"external_id": "x-1", "market": "ETH/USD", "direction": "buy", "amount": "1", "price": "100",
             "executed_at": int(time.time())}
    data = {
        Event.RECORD_TRADE: {"channel_id": channel_id, **trade},
        Event.RECORD_TRADES: {"channel_id": channel_id, "trades": [trade]},
        Event.REQUEST_SETTLEMENT: {"channel_id": channel_id, "payment_method": "mock", "chain_id": 1,
                                   "markets": ["ETH/USD"]},
    }
    return data.get(event, {"channel_id": channel_id})


def test_the_audit_covers_every_channel_event():
    assert set(channel_events()) == {
        Event.CHANNEL_JWT, Event.RECORD_TRADE, Event.CLOSE_CHANNEL, Event.POSITIONS, Event.REQUEST_SETTLEMENT,
        Event.RECORD_TRADES, Event.SETTLEMENTS}


@pytest.mark.parametrize("event", channel_events())
async def test_an_outsider_gets_channel_not_found_learns_nothing_and_nobody_hears_of_it(pair, connect, event):
    alice, bob, channel_id = pair
    await alice.record(channel_id, external_id="x-1", amount="1", price="100")  # a replay would succeed for alice
    for client in (alice, bob):
        await client.notification("position_notification")
    before = (await Trade.objects.acount(), await Position.objects.acount(), await Settlement.objects.acount(),
              (await Channel.objects.aget(channel_id=channel_id)).status)
    mallory = await (await connect()).subscribe()

    real = await mallory.error(event, request_for(event, channel_id), code="channel_not_found")
    absent = await mallory.error(event, request_for(event, MISSING), code="channel_not_found")
    upper = await mallory.error(event, request_for(event, channel_id.upper().replace("0X", "0x")),
                                code="channel_not_found")
    assert real == absent == upper  # the same answer as for a channel that does not exist

    for client in (alice, bob, mallory):
        await client.expect_nothing()
    after = (await Trade.objects.acount(), await Position.objects.acount(), await Settlement.objects.acount(),
             (await Channel.objects.aget(channel_id=channel_id)).status)
    assert after == before


async def test_an_outsiders_channel_list_and_notifications_never_show_others(pair, connect):
    alice, bob, channel_id = pair
    mallory = await (await connect()).subscribe()
    assert (await mallory.ok("channels"))["data"]["channels"] == []
    await alice.record(channel_id, external_id="1", amount="1", price="100")
    await bob.record(channel_id, external_id="2", amount="1", price="100")
    await mallory.expect_nothing(timeout=0.5)
    assert (await mallory.ok("channels"))["data"]["channels"] == []


def admin_urls() -> list[str]:
    """Every admin page of every registered model (list, add), plus the index."""
    urls = [reverse("admin:index")]
    for model in admin.site._registry:
        info = model._meta.app_label, model._meta.model_name
        urls.append(reverse("admin:%s_%s_changelist" % info))
        urls.append(reverse("admin:%s_%s_add" % info))
    return urls


async def test_every_admin_page_requires_a_staff_login():
    urls = admin_urls()
    assert len(urls) > 10
    visitor = await database_sync_to_async(User.objects.create_user)("visitor", password="not staff at all 1")
    anonymous, not_staff = AsyncClient(), AsyncClient()
    await not_staff.aforce_login(visitor)
    for url in urls:
        for client in (anonymous, not_staff):
            response = await client.get(url)
            assert response.status_code == 302 and reverse("admin:login") in response["Location"], url


async def test_no_secret_reaches_a_client_or_a_log(connect, caplog, monkeypatch):
    """Keys, SECRET_KEY and submitted signatures appear in no frame and no log record, also on internal errors."""
    caplog.set_level(logging.DEBUG)
    frames: list[dict] = []
    client = await connect(login=False)
    bad_signature = "0x" + "00" * 64 + "1c"  # r = s = 0: recovers no address
    frames.append(await client.error("authenticate", {"challenge": client.challenge, "signature": bad_signature}))
    frames.append(await client.recv())  # the fresh challenge
    client.challenge = frames[-1]["data"]["challenge"]
    good_signature = sign(client.account, client.challenge)
    await client.ok("authenticate", {"challenge": client.challenge, "signature": good_signature})

    def explode(**kwargs):
        raise RuntimeError(f"database said: password=hunter2 {django_settings.SECRET_KEY}")

    async def explode_on_the_loop(**kwargs):
        explode(**kwargs)

    monkeypatch.setattr(trade_service, "record_trades", explode)  # on a database thread (SQLite)
    monkeypatch.setattr(trade_service, "arecord_trades", explode_on_the_loop)  # on the event loop (PostgreSQL)
    failure = await client.error("record_trade", {**request_for(Event.RECORD_TRADE, MISSING)},
                                 code="internal_error")
    frames.append(failure)
    assert "hunter2" not in failure["error"] and "reference" in failure["error"]  # a reference, not the exception
    frames.append(await client.error("channel_jwt", {"channel_id": MISSING}))

    keys = operator_keys()
    jwt_private = keys.jwt_private_key.private_numbers().private_value
    secrets = [keys.account.key.hex(), hex(jwt_private)[2:], str(jwt_private), django_settings.SECRET_KEY,
               bad_signature[2:], good_signature[2:]]
    sent = json.dumps(frames)
    for secret in secrets:
        assert secret not in sent
    logged = [r for r in caplog.records if r.name.startswith(("operatorapi", "channels_app", "settlement"))]
    assert logged, "expected the requests to be logged"
    text = "\n".join(logging.Formatter("%(message)s %(exc_info)s").format(r) + json.dumps(r.__dict__, default=str)
                     for r in logged)
    for secret in secrets[:3]:  # the private keys: nowhere, tracebacks included
        assert secret not in text
    for signature in secrets[-2:]:
        assert signature not in text
