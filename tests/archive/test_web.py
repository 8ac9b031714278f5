"""The archive's web view in a real headless Chromium (selenium, /usr/bin/chromedriver).

Set CUSTODY_SCREENSHOTS=DIR to keep screenshots of the main pages (docs/screenshots/).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from daemon.archive.audit import verify_audit
from daemon.archive.users import Users
from daemon.archive.web import SESSION_COOKIE, WebView, serve
from protocol.entries import Exemption
from tests.archive.conftest import ArchiveSetup
from tests.archive.test_archive import REC, custody
from tests.conftest import DEVICE

pytestmark = pytest.mark.skipif(not shutil.which("chromedriver"),
                                reason="needs Debian's chromium-driver (make setup)")
PASSWORD = "correct horse battery"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def site(setup: ArchiveSetup, tmp_path: Path):
    setup.unit.append(Exemption(reason="privacy", note="hospital ward"))
    setup.dock()
    users = Users(setup.root / "users.toml")
    for name, role in (("LI", "custodian"), ("WANG", "unit_head"), ("ZHAO", "auditor")):
        users.add(name, role, PASSWORD)
    cache = tmp_path / "cache"
    cache.mkdir()
    view = WebView(setup.archive, Users(setup.root / "users.toml"), setup.unit.archive, cache)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    port = free_port()
    runner = asyncio.run_coroutine_threadsafe(serve(view, "127.0.0.1", port), loop).result(10)
    yield f"http://127.0.0.1:{port}", view
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--mute-audio",
                "--autoplay-policy=no-user-gesture-required", "--window-size=1200,1000"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def shot(driver, name: str) -> None:
    folder = os.environ.get("CUSTODY_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(folder) / f"{name}.png"))


def login(driver, base: str, name: str, password: str = PASSWORD) -> None:
    from selenium.webdriver.common.by import By

    driver.delete_all_cookies()
    driver.get(base + "/login")
    driver.find_element(By.ID, "name").send_keys(name)
    driver.find_element(By.ID, "password").send_keys(password)
    driver.find_element(By.ID, "login").click()
    # The click returns before the answer: wait for the page it leads to.
    assert wait_until(lambda: driver.find_elements(By.ID, "user")
                      or "Wrong name" in driver.page_source)


def text_when(driver, element_id: str, expected: str, timeout: float = 20.0) -> str:
    """The text of ``element_id`` once it holds ``expected``: after a click that loads a
    new page, the old page's element may still be found, then go stale."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.common.by import By

    def read() -> str:
        try:
            text = driver.find_element(By.ID, element_id).text
        except (NoSuchElementException, StaleElementReferenceException):
            return ""
        return text if expected in text else ""

    return wait_until(read, timeout)


def wait_until(condition, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    return condition()


def test_custodian_searches_annotates_plays_and_exports(site, browser, setup: ArchiveSetup,
                                                      tmp_path: Path):
    from selenium.webdriver.common.by import By

    base, view = site
    browser.get(base + "/")
    assert browser.current_url.endswith("/login")  # nothing without logging in
    login(browser, base, "LI", "wrong password")
    assert "Wrong name or password" in browser.page_source
    login(browser, base, "LI")
    assert browser.find_element(By.ID, "user").text == "LI (custodian)"
    browser.get(base + "/queue/not-classified")
    assert REC in browser.find_element(By.ID, "results").text
    shot(browser, "queue-not-classified")
    browser.find_element(By.LINK_TEXT, REC).click()
    assert text_when(browser, "verdict", "INTACT") == "INTACT"
    timeline = browser.find_element(By.ID, "timeline")
    assert len(timeline.find_elements(By.CLASS_NAME, "segment")) == 3
    assert len(timeline.find_elements(By.CLASS_NAME, "marker")) == 2
    browser.find_element(By.ID, "value").send_keys("Müller Bakery, file 2026/117")
    browser.find_element(By.ID, "add").click()
    assert text_when(browser, "annotations", "case: Müller Bakery, file 2026/117")
    # Playback starts and seeks (the server answers Range requests).
    player = browser.find_element(By.ID, "player")
    browser.execute_script("arguments[0].play()", player)
    assert wait_until(lambda: browser.execute_script("return arguments[0].currentTime",
                                                     player) > 0.3), \
        browser.execute_script("return arguments[0].error && arguments[0].error.message",
                               player)
    browser.execute_script("arguments[0].currentTime = 1.5", player)
    assert wait_until(lambda: browser.execute_script("return arguments[0].currentTime",
                                                     player) >= 1.5)
    shot(browser, "recording")
    cookie = browser.get_cookie(SESSION_COOKIE)["value"]
    media = base + f"/media/{DEVICE}/{view.archive.index.get(REC).entries[2]}"
    request = urllib.request.Request(media, headers={"Range": "bytes=100-199",
                                                     "Cookie": f"{SESSION_COOKIE}={cookie}"})
    with urllib.request.urlopen(request) as response:
        assert response.status == 206 and len(response.read()) == 100
    # The evidence package, downloaded from the recording's page, checks.
    csrf = browser.find_element(By.CSS_SELECTOR, "#export input[name=csrf]").get_attribute(
        "value")
    request = urllib.request.Request(
        base + f"/recording/{REC}/export", data=f"csrf={csrf}".encode(), method="POST",
        headers={"Cookie": f"{SESSION_COOKIE}={cookie}",
                 "Content-Type": "application/x-www-form-urlencoded"})
    with urllib.request.urlopen(request) as response:
        assert response.headers["Content-Type"] == "application/zip"
        (tmp_path / "package.zip").write_bytes(response.read())
    shutil.unpack_archive(tmp_path / "package.zip", tmp_path / "package")
    assert custody("verify", tmp_path / "package").returncode == 0
    browser.get(base + "/")
    browser.find_element(By.ID, "q-case").send_keys("bakery")
    browser.find_element(By.ID, "go").click()
    # The results page, not the search form: the query in the address and echoed in the
    # form, and the one matching recording as the table's only row.
    assert wait_until(lambda: "case=bakery" in browser.current_url), browser.current_url
    assert text_when(browser, "count", "1 recordings")
    assert browser.find_element(By.ID, "q-case").get_attribute("value") == "bakery"
    rows = browser.find_elements(By.CSS_SELECTOR, "#results td:first-child a")
    assert [row.text for row in rows] == [REC]
    shot(browser, "search")
    browser.get(base + "/?case=no+such+case")  # a query nothing matches finds nothing
    assert text_when(browser, "count", "0 recordings")
    assert REC not in browser.find_element(By.ID, "results").text
    records = list(view.archive.audit.records())
    li = [(r.action, r.object) for r in records if r.who == "custodian:LI"]
    assert ("view", REC) in li and ("annotate", REC) in li and ("search", None) in li
    assert ("export", REC) in li
    assert sum(1 for r in records if r.action == "view" and r.details.get("play")) == 1
    assert [r.details["ok"] for r in records if r.action == "login"] == [False, True]
    assert verify_audit(view.archive.audit.path) == len(records)


def test_unit_head_acknowledges_exemptions_and_the_auditor_only_reads(site, browser):
    from selenium.webdriver.common.by import By

    base, view = site
    login(browser, base, "WANG")
    browser.get(base + "/exemptions")
    assert "hospital ward" in browser.find_element(By.ID, "exemptions").text
    browser.find_element(By.CLASS_NAME, "ack").click()
    assert text_when(browser, "exemptions", "acknowledged by unit_head:WANG")
    shot(browser, "exemptions")
    browser.get(base + "/audit")
    assert "may not audit" in browser.page_source
    login(browser, base, "ZHAO")
    browser.get(base + f"/recording/{REC}")
    assert browser.find_element(By.ID, "verdict").text == "INTACT"
    assert not browser.find_elements(By.ID, "player")
    assert not browser.find_elements(By.ID, "annotate")
    browser.get(base + "/audit")
    assert browser.find_element(By.ID, "chain").text.startswith("chain intact")
    shot(browser, "audit")
    cookie = browser.get_cookie(SESSION_COOKIE)["value"]
    request = urllib.request.Request(base + f"/media/{DEVICE}/4",
                                     headers={"Cookie": f"{SESSION_COOKIE}={cookie}"})
    with pytest.raises(urllib.error.HTTPError) as denied:
        urllib.request.urlopen(request)
    assert denied.value.code == 403
    records = list(view.archive.audit.records())
    assert ("unit_head:WANG", "acknowledge") in [(r.who, r.action) for r in records]
    assert ("auditor:ZHAO", "view", REC) in [(r.who, r.action, r.object) for r in records]
    assert any(r.who == "auditor:ZHAO" and r.details.get("denied") == "play" for r in records)
