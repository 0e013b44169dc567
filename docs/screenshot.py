"""Take the README's screenshot of a report: `python docs/screenshot.py REPORT.html OUT.png`.

Needs Debian's chromium and chromium-driver and selenium (in the test extra). The page is
drawn offline at 1400 px wide; the shot is the top of the page (the glance cards) and the
transfer matrix section (its verdicts and both heatmaps), with the long per-pair table and
the configuration hidden.
"""

from __future__ import annotations

import base64
import sys
import tempfile
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.support.ui import WebDriverWait


def screenshot(report: Path, out: Path, section: str = "matrix") -> None:
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    with tempfile.TemporaryDirectory() as profile:
        for arg in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--window-size=1400,1000", f"--user-data-dir={profile}"]:
            options.add_argument(arg)
        driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
        try:
            driver.get(report.resolve().as_uri())
            WebDriverWait(driver, 120).until(lambda d: d.execute_script("return document.body.dataset.plots === 'ready'"))
            for long_section in ("answers", "study"):  # the per-pair table and the configuration
                driver.execute_script(f"document.getElementById('{long_section}').style.display = 'none'")
            width, bottom = driver.execute_script(
                f"const r = document.getElementById('{section}').getBoundingClientRect();"
                "return [document.documentElement.scrollWidth, Math.ceil(r.bottom + window.scrollY + 16)];")
            shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
                "format": "png", "captureBeyondViewport": True,
                "clip": {"x": 0, "y": 0, "width": width, "height": bottom, "scale": 1}})
        finally:
            driver.quit()
    out.write_bytes(base64.b64decode(shot["data"]))


if __name__ == "__main__":
    screenshot(Path(sys.argv[1]), Path(sys.argv[2]))
