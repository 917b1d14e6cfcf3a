"""A clerk in headless Chromium (Selenium): signs in to the admin served by a real Daphne with DEBUG off, with a
password and the code of the authenticator ``create_backoffice_user`` provisioned (two factors on); opens a busy
channel's page (6,000 trades: loads in under a second, its chart drawn) and filters the trades by peer; opens a
proposed settlement from the dashboard, accepts it through the confirmation page and sees it completed, while both
brokers hear every state over their WebSockets. Leaves screenshots in test-artifacts/ (the ones in docs/ are
these)."""
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from channels_app.models import Channel
from tests.client import NetworkClient
from tests.e2e.servers import REPO, daphne

pytestmark = pytest.mark.e2e
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
ARTIFACTS = REPO / "test-artifacts"
PASSWORD = "a long and unguessable clerk passphrase"


@pytest.fixture
def chrome(tmp_path):
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        if os.environ.get("SKIP_BROWSER_TESTS") == "1":
            pytest.skip("SKIP_BROWSER_TESTS=1 and no Chromium")
        pytest.fail(f"{CHROMIUM} / {CHROMEDRIVER} missing: apt-get install chromium chromium-driver (.ci/run does)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--disable-quic", "--window-size=1280,1000",
                 f"--user-data-dir={tmp_path / 'chrome-profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def manage(env, *args) -> str:
    return subprocess.run([sys.executable, "manage.py", *args], cwd=REPO, env=env, check=True, capture_output=True,
                          text=True, timeout=120).stdout


def current_code(otpauth_uri: str) -> str:
    """The authenticator app's code now, from the device's otpauth:// URI (RFC 6238, as django-otp checks it)."""
    import base64
    from urllib.parse import parse_qs, urlsplit

    from django_otp.oath import totp

    secret = parse_qs(urlsplit(otpauth_uri).query)["secret"][0]
    key = base64.b32decode(secret + "=" * (-len(secret) % 8))
    return f"{totp(key):06d}"


def busy_items(start: int, count: int) -> list[dict]:
    return [{"external_id": f"busy-{n}", "market": "BTC/USD", "direction": "buy" if n % 2 else "sell",
             "amount": "0.01", "price": f"{100 + n % 7}", "executed_at": int(time.time())}
            for n in range(start, start + count)]


async def test_a_clerk_accepts_a_proposed_settlement_in_the_browser(daphne_env, chrome):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as seen
    from selenium.webdriver.support.ui import WebDriverWait

    env = {**daphne_env, "SETTLEMENT_ACCEPT_POLICY": "manual", "DEBUG": "false", "CLERK_PASSWORD": PASSWORD,
           "BACKOFFICE_2FA": "on"}
    manage(env, "collectstatic", "--noinput", "-v0")
    created = manage(env, "create_backoffice_user", "clara.clerk", "--password-env", "CLERK_PASSWORD")
    otpauth = next(line for line in created.splitlines() if line.startswith("otpauth://"))
    with daphne(env) as (host, port):
        base = f"http://{host}:{port}"
        alice = await (await NetworkClient(f"ws://{host}:{port}/").connect()).login()
        bob = await (await NetworkClient(f"ws://{host}:{port}/").connect()).login()
        try:
            await alice.subscribe()
            await bob.subscribe()
            channel_id = await alice.open_channel(bob, deposit="1000", name="Bob")
            await alice.record(channel_id, external_id="1", amount="2", price="100")
            await bob.record(channel_id, external_id="2", direction="buy", amount="1", price="130")
            for start in range(0, 6000, 2000):  # a busy channel: 6,000 trades (a flat BTC/USD book)
                await alice.ok("record_trades", {"channel_id": channel_id, "trades": busy_items(start, 2000)},
                               timeout=30)
            await alice.ok("request_settlement", {"channel_id": channel_id, "payment_method": "mock",
                                                  "chain_id": 1, "markets": ["ETH/USD"]})
            for client in (alice, bob):
                await client.notification("settlement_notification", state="proposed")

            wait = WebDriverWait(chrome, 20)
            chrome.get(f"{base}/admin/")
            wait.until(seen.presence_of_element_located((By.ID, "id_username"))).send_keys("clara.clerk")
            chrome.find_element(By.ID, "id_password").send_keys(PASSWORD)
            chrome.find_element(By.ID, "id_otp_token").send_keys(current_code(otpauth))
            chrome.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
            wait.until(seen.presence_of_element_located((By.ID, "trades-per-minute-chart")))
            ARTIFACTS.mkdir(exist_ok=True)
            chrome.save_screenshot(str(ARTIFACTS / "admin-dashboard.png"))

            # the busy channel's page: small and quick whatever the history, with its chart
            channel_pk = (await Channel.objects.aget(channel_id=channel_id)).pk
            started = time.monotonic()
            chrome.get(f"{base}/admin/channels_app/channel/{channel_pk}/change/")
            chart = wait.until(seen.visibility_of_element_located((By.ID, "margin-history")))
            assert time.monotonic() - started < 1.0, "the channel page took a second or more"
            assert chart.size["height"] > 100 and "(latest)" in chart.text
            chrome.execute_script("arguments[0].scrollIntoView()", chart)
            chrome.save_screenshot(str(ARTIFACTS / "admin-channel.png"))

            # all its trades, filtered by peer (Bob, by the name Alice gave him): the channel's, newest first
            chrome.get(f"{base}/admin/channels_app/trade/")
            wait.until(seen.element_to_be_clickable(
                (By.XPATH, "//details[@data-filter-title='peer']//a[contains(., 'Bob')]"))).click()
            wait.until(seen.url_contains("peer="))
            counter = chrome.find_element(By.CSS_SELECTOR, "#changelist-form .paginator").text
            assert "6002" in counter.replace(",", ""), counter  # the 2 fills and the 6,000 busy trades
            first = chrome.find_element(By.CSS_SELECTOR, "#result_list tbody tr").text
            assert "busy-5999" in first, first  # newest first
            chrome.get(f"{base}/admin/")

            # the dashboard lists the proposal; the admin's own stylesheet is served and applied (DEBUG off)
            link = wait.until(seen.element_to_be_clickable((By.CSS_SELECTOR, "#open-settlements a")))
            assert "proposed" in chrome.find_element(By.ID, "open-settlements").text
            stylesheet = chrome.find_element(By.CSS_SELECTOR, "link[rel=stylesheet][href*='admin/css/base']")
            with urllib.request.urlopen(stylesheet.get_attribute("href"), timeout=5) as response:
                assert response.status == 200 and b"--header-bg" in response.read()
            header = chrome.find_element(By.ID, "header")
            assert header.value_of_css_property("background-color") not in ("rgba(0, 0, 0, 0)", "transparent")
            link.click()

            wait.until(seen.element_to_be_clickable((By.ID, "action-accept"))).click()
            wait.until(seen.presence_of_element_located((By.ID, "current-state")))
            assert chrome.find_element(By.ID, "current-state").text == "proposed"
            chrome.find_element(By.ID, "confirm").click()

            message = wait.until(seen.presence_of_element_located((By.CSS_SELECTOR, "ul.messagelist li.success")))
            assert message.text.endswith("is now accepted.")  # the clerk's decision; the payment worker pays
            for _ in range(100):  # the page, reloaded, shows the payment done
                chrome.refresh()
                if "completed" in chrome.find_element(By.ID, "content").text:
                    break
                time.sleep(0.1)
            chrome.save_screenshot(str(ARTIFACTS / "admin-settlement-accepted.png"))
            assert "completed" in chrome.find_element(By.ID, "content").text

            for client, role in ((alice, "Initiator"), (bob, "Responder")):
                done = await client.notification("settlement_notification", state="completed", timeout=10)
                assert done["data"]["my_role"] == role
                assert done["data"]["ledger"] == [{"asset": "USD", "initiator_owes": "0", "responder_owes": "60",
                                                  "shortfall": "0"}]
        finally:
            await alice.close()
            await bob.close()
