"""The report pages in headless Chromium: log in with a key, open each report, check that its
charts load and its tables render without console errors, and keep a screenshot of each.

Needs Debian's ``chromium`` and ``chromium-driver`` (``make install`` installs them); skips
without them, except under ``CI=true``, where it fails. Screenshots go to the test's temporary
folder, or to ``$LEADSCORE_REPORT_SCREENSHOTS`` when set.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from leadscore.auth import REPORTS_READ
from serving.app import create_app
from tests.api_keys import key_headers

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
REPORT_NAMES = ("calibration", "bands", "channels", "drift")

if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
    message = "needs chromium and chromium-driver: run `make install` (or `make browser`)"
    if os.environ.get("CI") == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message, allow_module_level=True)

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(stack) -> Iterator[str]:
    """The API of the stack on a free local port."""
    port = _free_port()
    config = uvicorn.Config(
        create_app(stack.settings), host="127.0.0.1", port=port, log_level="warning"
    )
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
    else:
        pytest.fail("the API did not start")
    yield url
    uv.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(argument)
    options.add_argument("--window-size=1280,1000")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(600)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = os.environ.get("LEADSCORE_REPORT_SCREENSHOTS")
    path = Path(folder) if folder else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _errors(driver: webdriver.Chrome) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def _full_page_screenshot(driver: webdriver.Chrome, path: Path) -> None:
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1280, min(int(height) + 40, 12000))
    driver.save_screenshot(str(path))
    driver.set_window_size(1280, 1000)


def test_a_marketer_logs_in_and_reads_every_report(server, browser, stack, shots):
    key = key_headers(stack.settings, REPORTS_READ, name="browser")["authorization"].split()[1]
    # given: a browser without the cookie is sent to the login page
    browser.get(f"{server}/reports/calibration")
    assert browser.current_url.startswith(f"{server}/reports/login")
    browser.save_screenshot(str(shots / "login.png"))
    # when: the key is pasted into the form
    browser.find_element(By.ID, "key").send_keys(key)
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    WebDriverWait(browser, 600).until(expected_conditions.url_contains("/reports/calibration"))
    # then: each report renders its charts and tables, without console errors
    for name in REPORT_NAMES:
        if not browser.current_url.endswith(f"/reports/{name}"):
            browser.get(f"{server}/reports/{name}")
        assert browser.find_element(By.TAG_NAME, "h1").text
        charts = browser.find_elements(By.CSS_SELECTOR, "img[data-chart]")
        tables = browser.find_elements(By.CSS_SELECTOR, "table[data-table]")
        assert charts, f"{name}: no chart"
        assert tables, f"{name}: no table"
        loaded = browser.execute_script(
            "return Array.from(document.images).every(i => i.complete && i.naturalWidth > 300)"
        )
        assert loaded, f"{name}: a chart did not load"
        rows = browser.find_elements(By.CSS_SELECTOR, "table[data-table] tbody tr")
        assert rows, f"{name}: empty tables"
        links = browser.find_elements(By.LINK_TEXT, "download CSV")
        assert len(links) == len(tables)
        assert _errors(browser) == [], name
        _full_page_screenshot(browser, shots / f"{name}.png")
    # the channel filter narrows the channel report to one channel
    browser.get(f"{server}/reports/channels?channel=webinar")
    first_column = browser.find_elements(
        By.CSS_SELECTOR, "table[data-table=channels] tbody tr td:first-child"
    )
    assert [cell.text for cell in first_column] == ["webinar"]
    assert _errors(browser) == []
    assert {p.name for p in shots.glob("*.png")} >= {f"{n}.png" for n in REPORT_NAMES}
