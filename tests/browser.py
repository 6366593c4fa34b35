"""Headless Chromium driven by Selenium through Debian's chromium-driver: the web page as a person uses it.

Shared by the browser test and `docs/screenshot.py` (the README's screenshot is made by this code)."""

from __future__ import annotations

import base64
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
MISSING = ("the browser test needs Debian's Chromium and ChromeDriver: apt-get install chromium chromium-driver "
           "(.ci/run installs them)")


def browser_available() -> bool:
    return Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()


@contextmanager
def chromium(width: int = 1280, height: int = 1000) -> Iterator:
    """A headless Chromium with a fresh profile and no background traffic (this machine's network is closed);
    quit, and its profile deleted, on the way out."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager look for drivers online
    profile = tempfile.mkdtemp(prefix="alt-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--window-size={width},{height}", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def save_page(driver, path: Path) -> None:
    """A screenshot of the whole page, below the fold included (Chromium's DevTools capture)."""
    size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True,
                                                             "clip": clip})
    Path(path).write_bytes(base64.b64decode(shot["data"]))


def submit_clip(driver, url: str, clip: Path, token: str | None = None, labels: list[str] | None = None,
                timeout_s: float = 120.0) -> str:
    """Open the page, choose the clip, press Recognise, wait for the result or the error; -> "result" | "error"."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    if driver.current_url.rstrip("/") != url.rstrip("/"):
        driver.get(url + "/")
    driver.find_element(By.ID, "file").send_keys(str(clip))
    token_field = driver.find_element(By.ID, "token")
    token_field.clear()
    if token:
        token_field.send_keys(token)
    labels_field = driver.find_element(By.ID, "labels")
    labels_field.clear()
    if labels:
        labels_field.send_keys("\n".join(labels))
    driver.execute_script("document.getElementById('result').style.display = 'none';"
                          "document.getElementById('error').style.display = 'none';")
    driver.find_element(By.ID, "submit").click()

    def outcome(d):
        if d.find_element(By.ID, "error").is_displayed():
            return "error"
        picture_loaded = d.execute_script("const p = document.getElementById('picture');"
                                          "return p.complete && p.naturalWidth > 0;")
        if d.find_element(By.ID, "result").is_displayed() and picture_loaded:
            return "result"
        return False

    return WebDriverWait(driver, timeout_s).until(outcome)
