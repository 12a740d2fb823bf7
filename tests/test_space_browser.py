"""The Gradio Space app (`examples/space/app.py`) in a real browser: headless Chromium driven by Selenium.

The app runs as a user starts it (`python examples/space/app.py --port PORT`) on a free localhost port, with the
bundled demo CLIP. The test uploads an image, types two prompts, submits, waits for two result images and saves a
screenshot (to $LEGRAD_SCREENSHOT when set, e.g. docs/space_screenshot.png; otherwise to the test's temporary
folder); an empty prompt gives a readable error in the page.

Needs gradio, selenium and the system's Chromium with its chromedriver (Debian: `apt-get install chromium
chromium-driver`; no browser is downloaded). Skipped, with the reason, where any of them is missing. Only loopback
connections are allowed (the browser, its driver and the app are all on 127.0.0.1).
"""

from __future__ import annotations

import _socket
import importlib.util
import io
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from transformers_legrad import demo

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "examples" / "space" / "app.py"
STARTUP_TIMEOUT_S = 120
RESULT_TIMEOUT_S = 60
WINDOW_SIZE = (1400, 960)
PROMPTS = ("a black ring", "a purple square")  # the objects of the first bundled example scene
LOOPBACK_HOSTS = {"127.0.0.1", "::1", "localhost"}


def _chromium() -> tuple[str | None, str | None]:
    browser = os.environ.get("LEGRAD_CHROMIUM") or next(
        filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None
    )
    driver = os.environ.get("LEGRAD_CHROMEDRIVER") or shutil.which("chromedriver")
    return browser, driver


def _missing() -> list[str]:
    browser, driver = _chromium()
    missing = [
        f"the Python package {name}" for name in ("gradio", "selenium") if importlib.util.find_spec(name) is None
    ]
    if browser is None:
        missing.append("Chromium (apt-get install chromium)")
    if driver is None:
        missing.append("chromedriver (apt-get install chromium-driver)")
    try:
        demo.model_path("clip")  # the app's default model
    except FileNotFoundError:
        missing.append("the bundled demo CLIP (transformers_legrad/demo/models/clip)")
    return missing


if _missing():
    pytest.skip(
        f"browser test needs {', '.join(_missing())}; `pip install -e '.[browser]'` installs the Python side",
        allow_module_level=True,
    )

from selenium import webdriver  # noqa: E402
from selenium.common.exceptions import TimeoutException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


@pytest.fixture(scope="module")
def loopback():
    """Let this module connect to 127.0.0.1 (the app, chromedriver); any other address is still refused."""
    guarded = socket.socket.connect

    def connect(sock, address):
        if isinstance(address, tuple) and address[0] in LOOPBACK_HOSTS:
            return _socket.socket.connect(sock, address)
        return guarded(sock, address)

    socket.socket.connect = connect
    try:
        yield
    finally:
        socket.socket.connect = guarded


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _accepts(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def app_url(loopback, tmp_path_factory):
    port = _free_port()
    log = tmp_path_factory.mktemp("space") / "app.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    with open(log, "w") as output:
        process = subprocess.Popen(
            [sys.executable, str(APP), "--host", "127.0.0.1", "--port", str(port)],
            stdout=output,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=ROOT,
        )
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not _accepts(port):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the app did not start on port {port}; its output:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield f"http://127.0.0.1:{port}/"
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def browser(loopback):
    browser_path, driver_path = _chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = browser_path
    for argument in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-dev-shm-usage",
        "--disable-gpu",
        f"--window-size={WINDOW_SIZE[0]},{WINDOW_SIZE[1]}",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def scene_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("images") / "scene.png"
    demo.example_scenes(1)[0].image.resize((256, 256), Image.Resampling.NEAREST).save(path)
    return path


def _wait(driver, condition, what: str):
    """Wait for `condition(driver)`; on a timeout, fail with what the page shows (errors, status)."""
    try:
        return WebDriverWait(driver, RESULT_TIMEOUT_S).until(condition)
    except TimeoutException:
        toasts = [e.text for e in driver.find_elements(By.CSS_SELECTOR, ".toast-body")]
        status = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#status")]
        pytest.fail(f"timed out waiting for {what}; the page's errors: {toasts}, status: {status}")


def _download_link(driver) -> str | None:
    links = [a.get_attribute("href") for a in driver.find_elements(By.CSS_SELECTOR, "#download a")]
    return next((link for link in links if link and link.endswith("legrad_maps.zip")), None)


def _open_with_image(driver, url: str, image: Path):
    driver.get(url)
    _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#image input[type=file]"), "the page")
    driver.find_element(By.CSS_SELECTOR, "#image input[type=file]").send_keys(str(image))
    _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#image img"), "the uploaded image")
    return driver.find_element(By.CSS_SELECTOR, "#prompts textarea")


def test_two_prompts_give_two_maps(app_url, browser, scene_file, tmp_path):
    prompts = _open_with_image(browser, app_url, scene_file)
    prompts.send_keys("\n".join(PROMPTS))
    browser.find_element(By.CSS_SELECTOR, "#submit").click()
    _wait(
        browser,
        lambda d: len(d.find_elements(By.CSS_SELECTOR, "#gallery img")) >= 2 and _download_link(d) is not None,
        "two maps and their download",
    )
    images = browser.find_elements(By.CSS_SELECTOR, "#gallery img")
    assert len(images) == 2
    assert all(browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", i) for i in images)
    captions = re.findall(r"^(.+) · ([0-9.]+)$", browser.find_element(By.CSS_SELECTOR, "#gallery").text, re.M)
    assert sorted(label for label, _ in captions) == sorted(PROMPTS)
    scores = [float(score) for _, score in captions]
    assert all(0 <= s <= 1 for s in scores) and sum(scores) == pytest.approx(1.0, abs=2e-3)  # CLIP: softmax
    assert "2 map(s)" in browser.find_element(By.CSS_SELECTOR, "#status").text
    with urllib.request.urlopen(_download_link(browser), timeout=30) as response:  # the page's download link
        archive = zipfile.ZipFile(io.BytesIO(response.read()))
    with np.load(io.BytesIO(archive.read("maps.npz"))) as maps:
        assert maps["maps"].shape == (2, 256, 256) and maps["maps"].min() >= 0 and maps["maps"].max() <= 1
        assert sorted(maps["labels"].tolist()) == sorted(PROMPTS)
    assert len([name for name in archive.namelist() if name.endswith(".png")]) == 4  # overlay + heatmap each

    screenshot = Path(os.environ.get("LEGRAD_SCREENSHOT") or tmp_path / "space_screenshot.png")
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    browser.execute_script("window.scrollTo(0, 0)")
    browser.save_screenshot(str(screenshot))
    with Image.open(screenshot) as picture:
        assert picture.format == "PNG" and picture.size[0] >= WINDOW_SIZE[0] // 2


def test_empty_prompts_show_an_error_in_the_page(app_url, browser, scene_file):
    prompts = _open_with_image(browser, app_url, scene_file)
    prompts.send_keys("  ", Keys.ENTER, " ")  # blank lines only
    browser.find_element(By.CSS_SELECTOR, "#submit").click()
    # the toast fades in: wait for its text to be visible, not just for the element
    message = _wait(
        browser,
        lambda d: " ".join(e.text for e in d.find_elements(By.CSS_SELECTOR, ".toast-body")).strip(),
        "an error message",
    )
    assert "Enter at least one prompt, one per line" in message
    assert not browser.find_elements(By.CSS_SELECTOR, "#gallery img")
