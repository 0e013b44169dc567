"""The report in a real browser: figures render, the example browser filters, nothing leaves the machine."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists() or not CHROMEDRIVER.exists(),
                       reason="needs Debian's chromium and chromium-driver (/usr/bin/chromium, /usr/bin/chromedriver)"),
]

from fake_study import SECTIONS  # noqa: E402

from traitmap.report import build_report  # noqa: E402


@pytest.fixture
def driver(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", "--window-size=1400,1000", f"--user-data-dir={tmp_path / 'chrome-profile'}"]:
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    d = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    yield d
    d.quit()


def _screenshot(driver, path: Path) -> None:
    """The whole page, not just the window."""
    size = driver.execute_script("return [document.documentElement.scrollWidth, document.documentElement.scrollHeight]")
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True,
        "clip": {"x": 0, "y": 0, "width": size[0], "height": size[1], "scale": 1},
    })
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(base64.b64decode(shot["data"]))


def test_report_renders_offline_in_chromium(study, tmp_path, driver):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    page = build_report(study, tmp_path / "out")
    driver.get_log("performance")  # drop what Chromium's own start page requested
    driver.get(page.as_uri())
    WebDriverWait(driver, 90).until(lambda d: d.execute_script("return document.body.dataset.plots === 'ready'"))

    for id in SECTIONS:
        assert driver.find_element(By.ID, id).is_displayed(), id
    targets = driver.find_elements(By.CSS_SELECTOR, ".plotly-target")
    assert len(targets) >= 11
    for el in targets:
        assert "js-plotly-plot" in el.get_attribute("class"), el.get_attribute("id")
        assert el.find_elements(By.CSS_SELECTOR, "svg.main-svg"), el.get_attribute("id")
    # heatmap cells carry their text labels: the planted +40.0 gain is drawn
    gains_text = driver.find_element(By.ID, "fig-gains").text
    assert "+40.0" in gains_text and "−35.0" in gains_text
    # hovering a cell shows its interval from analysis/matrix_ci.csv
    hover = driver.execute_script(
        "Plotly.Fx.hover(document.getElementById('fig-gains'), {xval: 2, yval: 0});"
        "return Array.from(document.querySelectorAll('#fig-gains .hovertext')).map(e => e.textContent).join(' ');")
    assert "flipkart → flipkart" in hover and "interval +37.0 to +43.0" in hover, hover

    # the planted XSS prompt stays text: no <img> was created from it
    assert driver.execute_script("return document.querySelectorAll('main img').length") == 0

    # the example browser filters
    rows = lambda: driver.find_elements(By.CSS_SELECTOR, "#ex-rows tr.row")  # noqa: E731
    assert "800 of 800 examples" in driver.find_element(By.ID, "ex-count").text
    Select(driver.find_element(By.ID, "ex-task")).select_by_value("imdb")
    assert "200 of 800 examples" in driver.find_element(By.ID, "ex-count").text
    Select(driver.find_element(By.ID, "ex-model")).select_by_value("flipkart")
    Select(driver.find_element(By.ID, "ex-correct")).select_by_value("1")
    assert len(rows()) == 31  # round(0.62 * 50) planted right answers
    Select(driver.find_element(By.ID, "ex-task")).select_by_value("gsm8k")
    Select(driver.find_element(By.ID, "ex-model")).select_by_value("base")
    Select(driver.find_element(By.ID, "ex-correct")).select_by_value("")
    first = rows()[0]
    driver.execute_script("arguments[0].scrollIntoView({block: 'center', behavior: 'instant'})", first)
    first.click()
    detail = driver.find_element(By.CSS_SELECTOR, "#ex-rows tr.detail-row").text
    assert "</script><img src=x onerror=alert(1)>" in detail and "<b>bold?</b>" in detail
    assert driver.execute_script("return document.querySelectorAll('main img').length") == 0

    driver.execute_script("Plotly.Fx.unhover(document.getElementById('fig-gains')); window.scrollTo({top: 0, behavior: 'instant'});")
    _screenshot(driver, Path(os.environ.get("TRAITMAP_SCREENSHOT", tmp_path / "report.png")))

    severe = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert not severe, severe
    urls = [json.loads(e["message"])["message"]["params"]["request"]["url"]
            for e in driver.get_log("performance")
            if json.loads(e["message"])["message"]["method"] == "Network.requestWillBeSent"]
    assert urls, "the performance log saw no request at all (not even the page itself)"
    external = [u for u in urls if not u.startswith(("file:", "data:", "about:", "blob:"))]
    assert not external, external
