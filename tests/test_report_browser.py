"""index.html in a real browser: headless Chromium, driven by Selenium and the system
chromedriver, opens the page of a tiny `twostage demo --quick` run from file:// and checks what a
reader sees: no console errors, every image loaded, the slider wipes between two views, the zoom
follows a click, and the tables hold the numbers of results.json."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from twostage import config
from twostage.cli import main
from twostage.report import DIGITS, METRICS, format_mean

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
# Chromium as root in a container: no sandbox, no GPU, nothing fetched from the network.
FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,2400",
)


@pytest.fixture(scope="module")
def page(tmp_path_factory, tiny_profile) -> Path:
    """The out folder of `twostage demo --quick` on a tiny profile, two 64-px test images."""
    out = tmp_path_factory.mktemp("demo") / "demo"
    profile = dataclasses.replace(tiny_profile, test_images=2, hr_crop=64)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(config, "QUICK", profile)
        assert main(["demo", "--quick", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip(
            "chromium and chromedriver are needed (apt-get install chromium chromium-driver)"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = webdriver.ChromeService(executable_path=CHROMEDRIVER)
    driver = webdriver.Chrome(options=options, service=service)
    yield driver
    driver.quit()


def _shot(browser, element_id: str) -> bytes:
    return browser.find_element("id", element_id).screenshot_as_png


def _wait_for_images(browser) -> list[tuple[str, int]]:
    """Wait until every <img> has loaded or failed; then (src, naturalWidth) of each."""
    browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "Promise.all([...document.images].map(i => i.decode().catch(() => 0))).then(done);"
    )
    return browser.execute_script(
        "return [...document.images].map(i => [i.getAttribute('src'), i.naturalWidth])"
    )


def _check_viewer(browser) -> None:
    """The slider wipes between the two views; a click moves both zoom panes to one region."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    value = lambda id_: browser.find_element("id", id_).get_attribute("value")  # noqa: E731
    assert value("cmp-left") == "interp-bicubic" and value("cmp-right") not in ("", "GT")
    stage, slider = (browser.find_element("id", i) for i in ("cmp-stage", "cmp-slider"))
    browser.execute_script("arguments[0].scrollIntoView()", stage)
    middle = _shot(browser, "cmp-stage")
    ActionChains(browser).click_and_hold(slider).move_by_offset(
        -slider.size["width"] // 2, 0
    ).release().perform()  # dragged to the left end: all of the right view
    assert float(value("cmp-slider")) == 0
    clip = "return document.getElementById('cmp-left-img').style.clipPath"
    assert browser.execute_script(clip) == "inset(0px 100% 0px 0px)"
    right = _shot(browser, "cmp-stage")
    slider.send_keys(Keys.END)  # all of the left view
    assert float(value("cmp-slider")) == 100
    assert browser.execute_script(clip) == "inset(0px 0% 0px 0px)"
    left = _shot(browser, "cmp-stage")
    assert len({middle, right, left}) == 3

    Select(browser.find_element("id", "cmp-zoom")).select_by_value("8")  # 32 of 64 px
    w, h = stage.size["width"], stage.size["height"]
    shots, positions = [], []
    for dx, dy in ((2 - w // 2, 2 - h // 2), (w // 2 - 2, h // 2 - 2)):  # top left, bottom right
        ActionChains(browser).move_to_element_with_offset(stage, dx, dy).click().perform()
        positions.append(
            browser.execute_script(
                "return ['left', 'right'].map(s => "
                "getComputedStyle(document.getElementById('cmp-zoom-' + s)).backgroundPosition)"
            )
        )
        shots.append(_shot(browser, "cmp-zoom-left"))
    assert positions == [["0px 0px"] * 2, ["-256px -256px"] * 2]  # both panes, one region
    assert shots[0] != shots[1]


def _check_tables(browser, results: dict) -> None:
    """Every mean and every per-image number of results.json is in the page, as printed."""
    cells = browser.execute_script(
        "return [...document.querySelectorAll('td[data-metric]')].map(td => [td.dataset.branch,"
        " td.dataset.testSet, td.dataset.image || null, td.dataset.metric, td.textContent])"
    )
    shown = {(b, t, i, m): text for b, t, i, m, text in cells}
    checked = 0
    for key, _, _ in METRICS:
        for mean in results["means"]:
            if key in mean:
                where = (mean["branch"], mean["test_set"], None, key)
                assert shown[where] == format_mean(mean, key), where
                checked += 1
        for row in results["rows"]:
            if key in row:
                where = (row["branch"], row["test_set"], row["image"], key)
                assert shown[where] == f"{row[key]:.{DIGITS[key]}f}", where
                checked += 1
    assert checked == len(shown) >= 2 * (len(results["rows"]) + len(results["means"]))


def test_the_report_in_chromium(browser, page, tmp_path):
    results = json.loads((page / "results.json").read_text())
    browser.get((page / "index.html").as_uri())
    images = _wait_for_images(browser)
    assert images and all(width > 0 for _, width in images), images
    sources = [src for src, _ in images]
    for test_set in results["test_sets"]:  # a labelled strip per test set
        assert sum(f"compare-{test_set}-" in src for src in sources) == 1, test_set
    curves = [src for src in sources if "/curves-" in src]
    assert len(curves) == len(list(page.glob("networks/*/metrics.csv"))) >= 4  # every network
    _check_viewer(browser)
    _check_tables(browser, results)
    if "generalization" in results:  # a run on the held-out suite: its matrix, coloured
        table = browser.find_element("css selector", "table.generalization")
        assert len(table.find_elements("css selector", "td[style]")) > 0
    errors = [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
    assert errors == []
    browser.save_screenshot(str(tmp_path / "report.png"))
    assert (tmp_path / "report.png").stat().st_size > 0
