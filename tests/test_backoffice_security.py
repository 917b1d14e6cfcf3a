"""Who may get into the back office (docs/protocol.md section 10, "Back office and operators"): two factors
(django-otp, TOTP), failed sign-ins locked out per username and address (django-axes, audited, lifted by a
superuser), idle sessions ending, and create_backoffice_user refusing weak passwords.

The suite runs with BACKOFFICE_2FA=off (tests/dev_keys.py); these tests turn it on where they prove it."""
import base64
import io
import re
from datetime import timedelta
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from axes.models import AccessAttempt
from django.contrib.auth.models import User
from django.contrib.sessions.models import Session
from django.core import checks
from django.core.management import CommandError, call_command
from django.test import Client
from django.utils import timezone
from django_otp.oath import totp
from django_otp.plugins.otp_totp.models import TOTPDevice

from backoffice.models import AuditEntry
from backoffice.otp import provision_device
from backoffice.permissions import BACKOFFICE_GROUP, ensure_backoffice_group

pytestmark = pytest.mark.django_db
PASSWORD = "a long and unguessable clerk passphrase"
LOGIN = "/admin/login/?next=/admin/"


@pytest.fixture
def two_factors(settings):
    settings.BACKOFFICE_2FA = True


def make_clerk(username="clara.clerk", *, superuser=False, device=True) -> User:
    user = User.objects.create_user(username, password=PASSWORD, is_staff=True, is_superuser=superuser)
    user.groups.add(ensure_backoffice_group())
    if device:
        provision_device(user)
    return user


def code(user) -> str:
    """What the user's authenticator app shows now."""
    device = TOTPDevice.objects.get(user=user)
    return f"{totp(device.bin_key, device.step, device.t0, device.digits, device.drift):0{device.digits}d}"


def next_time_step(user):
    """As if the code's 30 seconds had passed: a used code is refused until then (replay protection)."""
    TOTPDevice.objects.filter(user=user).update(last_t=-1)


def sign_in(client, username, password=PASSWORD, otp_token=None):
    data = {"username": username, "password": password, "next": "/admin/"}
    if otp_token is not None:
        data["otp_token"] = otp_token
    return client.post(LOGIN, data)


def signed_in(client) -> bool:
    return "_auth_user_id" in client.session


# --- Two factors ------------------------------------------------------------------------------------------------
def test_with_two_factors_a_password_alone_opens_nothing_and_the_authenticator_code_opens_the_back_office(
        two_factors):
    clerk = make_clerk()
    client = Client()
    page = client.get(LOGIN).content.decode()
    assert 'name="otp_token"' in page and 'autocomplete="one-time-code"' in page

    refused = sign_in(client, "clara.clerk")  # the right password, no code
    assert refused.status_code == 200 and not signed_in(client)
    assert "Enter the code your authenticator app shows." in refused.content.decode()
    refused = sign_in(client, "clara.clerk", otp_token="000000" if code(clerk) != "000000" else "111111")
    assert refused.status_code == 200 and not signed_in(client)
    assert "Wrong or expired authenticator code" in refused.content.decode()
    assert PASSWORD not in refused.content.decode()  # never written back into the page

    # a session the password alone opened (no device verified it) sees no page and can do nothing
    password_only = Client()
    password_only.force_login(clerk)
    for url in ("/admin/", "/admin/settlement/settlement/", "/admin/channels_app/peer/", "/admin/password_change/"):
        response = password_only.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/admin/login/"), url
    acted = password_only.post("/admin/channels_app/peer/", {"action": "disable_peers", "_selected_action": [1]})
    assert acted.status_code == 302 and acted["Location"].startswith("/admin/login/")

    throttled = sign_in(client, "clara.clerk", otp_token=code(clerk))  # a wrong code holds the device back a while
    assert throttled.status_code == 200 and "temporarily disabled" in throttled.content.decode()
    TOTPDevice.objects.get(user=clerk).throttle_reset()  # as if that second had passed
    done = sign_in(client, "clara.clerk", otp_token=code(clerk))
    assert done.status_code == 302 and done["Location"] == "/admin/" and signed_in(client)
    assert client.get("/admin/").status_code == 200
    assert client.get("/admin/settlement/settlement/").status_code == 200

    again = Client()  # the same code twice: refused (someone who read it over the shoulder is too late)
    assert sign_in(again, "clara.clerk", otp_token=code(clerk)).status_code == 200 and not signed_in(again)


def test_with_two_factors_a_user_without_a_confirmed_device_cannot_get_in(two_factors):
    make_clerk("no.device", device=False)
    client = Client()
    refused = sign_in(client, "no.device", otp_token="123456")
    assert refused.status_code == 200 and not signed_in(client)
    assert "no confirmed authenticator" in refused.content.decode()

    unconfirmed = make_clerk("unconfirmed")
    TOTPDevice.objects.filter(user=unconfirmed).update(confirmed=False)
    assert sign_in(client, "unconfirmed", otp_token=code(unconfirmed)).status_code == 200 and not signed_in(client)


def test_with_two_factors_off_the_password_is_enough(settings):
    settings.BACKOFFICE_2FA = False
    make_clerk()
    client = Client()
    assert 'name="otp_token"' not in client.get(LOGIN).content.decode()
    done = sign_in(client, "clara.clerk")
    assert done.status_code == 302 and client.get("/admin/").status_code == 200


def test_check_deploy_warns_when_two_factors_are_off_with_debug_off(settings):
    def warned() -> bool:
        return "backoffice.W001" in {m.id for m in checks.run_checks(include_deployment_checks=True)}

    settings.DEBUG, settings.BACKOFFICE_2FA = False, False
    assert warned()
    settings.BACKOFFICE_2FA = True
    assert not warned()
    settings.DEBUG, settings.BACKOFFICE_2FA = True, False  # development
    assert not warned()
    settings.DEBUG = False
    assert "backoffice.W001" not in {m.id for m in checks.run_checks()}  # a deploy check only


# --- Failed sign-ins --------------------------------------------------------------------------------------------
def test_failed_sign_ins_lock_the_username_out_from_that_address_audited_until_a_superuser_lifts_it(
        two_factors, settings):
    assert settings.AXES_FAILURE_LIMIT == settings.BACKOFFICE_LOGIN_FAILURES == 5
    clerk = make_clerk()
    attacker = Client(REMOTE_ADDR="10.0.0.1")
    for _ in range(4):
        assert sign_in(attacker, "clara.clerk", password="guess").status_code == 200
    locked = sign_in(attacker, "clara.clerk", password="guess")  # the fifth
    assert locked.status_code == 429 and "Signing in is locked" in locked.content.decode()
    # from that address, even the right password and code are refused now, and guessing on is not re-audited
    assert sign_in(attacker, "clara.clerk", otp_token=code(clerk)).status_code == 429 and not signed_in(attacker)
    assert sign_in(attacker, "clara.clerk", password="guess").status_code == 429
    entries = AuditEntry.objects.filter(action="backoffice_lockout")
    assert entries.count() == 1
    entry = entries.get()
    assert entry.actor == "login:10.0.0.1" and entry.object_id == str(clerk.pk)
    assert entry.after["username"] == "clara.clerk" and entry.after["ip_address"] == "10.0.0.1"
    assert entry.after["failures"] == 5

    # the username AND the address: the clerk, from her own desk, still gets in
    desk = Client(REMOTE_ADDR="10.0.0.2")
    assert sign_in(desk, "clara.clerk", otp_token=code(clerk)).status_code == 302 and signed_in(desk)
    assert "Attempt" not in desk.get("/admin/").content.decode()  # a clerk sees no sign-in records
    assert desk.get("/admin/axes/accessattempt/").status_code == 403
    assert desk.get("/admin/axes/accessfailurelog/").status_code == 403

    # a superuser sees the lock-out and lifts it (audited); the address may sign in again
    boss = make_clerk("boss", superuser=True)
    admin = Client(REMOTE_ADDR="10.0.0.3")
    assert sign_in(admin, "boss", otp_token=code(boss)).status_code == 302
    listing = admin.get("/admin/axes/accessattempt/").content.decode()
    assert "clara.clerk" in listing and "10.0.0.1" in listing and "Locked Out" in listing
    assert "10.0.0.1" in admin.get("/admin/axes/accessfailurelog/").content.decode()
    attempt = AccessAttempt.objects.get(username="clara.clerk", ip_address="10.0.0.1")
    lifted = admin.post(f"/admin/axes/accessattempt/{attempt.pk}/delete/", {"post": "yes"})
    assert lifted.status_code == 302 and not AccessAttempt.objects.filter(ip_address="10.0.0.1").exists()
    lift = AuditEntry.objects.get(action="lift_backoffice_lockout")
    assert lift.actor == "admin:boss" and lift.user == boss
    assert lift.before == {"username": "clara.clerk", "ip_address": "10.0.0.1", "failures": 7}

    next_time_step(clerk)
    back = sign_in(attacker, "clara.clerk", otp_token=code(clerk))
    assert back.status_code == 302 and signed_in(attacker)


@pytest.mark.django_db(transaction=True)  # the views run on another thread
async def test_the_lockout_page_is_served_on_the_servers_asgi_path_too(two_factors):
    from channels.db import database_sync_to_async
    from django.test import AsyncClient

    await database_sync_to_async(make_clerk)()
    client = AsyncClient()
    for _ in range(4):
        assert (await client.post(LOGIN, {"username": "clara.clerk", "password": "guess"})).status_code == 200
    locked = await client.post(LOGIN, {"username": "clara.clerk", "password": "guess"})
    assert locked.status_code == 429 and "for clara.clerk" in locked.content.decode()


def test_a_successful_sign_in_resets_the_count_so_only_failures_in_a_row_lock_out(settings):
    settings.BACKOFFICE_2FA = False
    make_clerk()
    client = Client(REMOTE_ADDR="10.0.0.9")
    for _ in range(4):
        sign_in(client, "clara.clerk", password="typo")
    assert sign_in(client, "clara.clerk").status_code == 302
    client.logout()
    for _ in range(4):
        assert sign_in(client, "clara.clerk", password="typo").status_code == 200
    assert not AuditEntry.objects.filter(action="backoffice_lockout").exists()


# --- Idle sessions ----------------------------------------------------------------------------------------------
def test_a_session_ends_after_the_idle_time_and_each_request_pushes_the_end_back(settings):
    assert settings.SESSION_COOKIE_AGE == settings.BACKOFFICE_SESSION_IDLE_SECONDS == 1800
    assert settings.SESSION_SAVE_EVERY_REQUEST
    client = Client()
    client.force_login(make_clerk())
    response = client.get("/admin/")
    assert response.status_code == 200 and response.cookies["sessionid"]["max-age"] == 1800
    key = client.session.session_key

    Session.objects.filter(session_key=key).update(expire_date=timezone.now() + timedelta(seconds=5))
    assert client.get("/admin/").status_code == 200  # active: the end moves a full idle period ahead
    ahead = Session.objects.get(session_key=key).expire_date - timezone.now()
    assert timedelta(seconds=1790) < ahead <= timedelta(seconds=1800)

    Session.objects.filter(session_key=key).update(expire_date=timezone.now() - timedelta(seconds=1))
    response = client.get("/admin/")  # idle past the limit: signed out
    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")


# --- create_backoffice_user -------------------------------------------------------------------------------------
@pytest.mark.parametrize("password, reason", [
    ("123", "too short"), ("12345678901", "entirely numeric"), ("password123", "too common"),
    ("clara.clerk1", "too similar to the username"),
])
def test_create_backoffice_user_refuses_a_password_the_validators_refuse(monkeypatch, password, reason):
    monkeypatch.setenv("CLERK_PASSWORD", password)
    with pytest.raises(CommandError, match=f"password refused: .*{reason}"):
        call_command("create_backoffice_user", "clara.clerk", "--password-env", "CLERK_PASSWORD",
                     stdout=io.StringIO())
    assert not User.objects.filter(username="clara.clerk").exists()
    assert not TOTPDevice.objects.exists() and not AuditEntry.objects.exists()


def test_create_backoffice_user_prints_the_authenticator_uri_that_signs_in(monkeypatch, two_factors):
    monkeypatch.setenv("CLERK_PASSWORD", PASSWORD)
    out = io.StringIO()
    call_command("create_backoffice_user", "clara.clerk", "--password-env", "CLERK_PASSWORD", stdout=out)
    uri = re.search(r"^otpauth://\S+$", out.getvalue(), re.M).group(0)
    parts = urlsplit(uri)
    assert parts.netloc == "totp" and unquote(parts.path) == "/Operator API back office:clara.clerk"
    query = parse_qs(parts.query)
    assert query["digits"] == ["6"] and query["period"] == ["30"] and query["issuer"] == ["Operator API back office"]

    clerk = User.objects.get(username="clara.clerk")
    assert list(clerk.groups.values_list("name", flat=True)) == [BACKOFFICE_GROUP]
    device = TOTPDevice.objects.get(user=clerk, confirmed=True)
    secret = query["secret"][0]
    key = base64.b32decode(secret + "=" * (-len(secret) % 8))
    assert key == device.bin_key  # what the authenticator app is given is the device's key
    app_code = f"{totp(key, 30, 0, 6, 0):06d}"  # what the app then shows
    client = Client()
    assert sign_in(client, "clara.clerk", otp_token=app_code).status_code == 302 and signed_in(client)
    assert AuditEntry.objects.get(action="create_backoffice_user").after["authenticator"] == "totp"
