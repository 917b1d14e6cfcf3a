"""A clerk in headless Chromium (Selenium): logs in to the admin served by a real Daphne with DEBUG off, opens a
proposed settlement from the dashboard, accepts it through the confirmation page and sees it completed, while
both brokers hear every state over their WebSockets. Leaves a screenshot in test-artifacts/."""
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

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


def manage(env, *args):
    subprocess.run([sys.executable, "manage.py", *args], cwd=REPO, env=env, check=True, capture_output=True,
                   timeout=120)


async def test_a_clerk_accepts_a_proposed_settlement_in_the_browser(daphne_env, chrome):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as seen
    from selenium.webdriver.support.ui import WebDriverWait

    env = {**daphne_env, "SETTLEMENT_ACCEPT_POLICY": "manual", "DEBUG": "false", "CLERK_PASSWORD": PASSWORD}
    manage(env, "collectstatic", "--noinput", "-v0")
    manage(env, "create_backoffice_user", "clara.clerk", "--password-env", "CLERK_PASSWORD")
    with daphne(env) as (host, port):
        base = f"http://{host}:{port}"
        alice = await (await NetworkClient(f"ws://{host}:{port}/").connect()).login()
        bob = await (await NetworkClient(f"ws://{host}:{port}/").connect()).login()
        try:
            await alice.subscribe()
            await bob.subscribe()
            channel_id = await alice.open_channel(bob, deposit="1000")
            await alice.record(channel_id, external_id="1", amount="2", price="100")
            await bob.record(channel_id, external_id="2", direction="buy", amount="1", price="130")
            await alice.ok("request_settlement", {"channel_id": channel_id, "payment_method": "mock",
                                                  "chain_id": 1, "markets": ["ETH/USD"]})
            for client in (alice, bob):
                await client.notification("settlement_notification", state="proposed")

            wait = WebDriverWait(chrome, 20)
            chrome.get(f"{base}/admin/")
            wait.until(seen.presence_of_element_located((By.ID, "id_username"))).send_keys("clara.clerk")
            chrome.find_element(By.ID, "id_password").send_keys(PASSWORD)
            chrome.find_element(By.CSS_SELECTOR, "input[type=submit]").click()

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
            ARTIFACTS.mkdir(exist_ok=True)
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
