"""The real app in a real browser: `streamlit run app.py` driven by headless Chromium (Playwright).

Uses the default artifacts (data/zoo, data/hyperrep) when they exist, else the tiny test ones.
Screenshots go to a temporary folder; HYPERREP_REFRESH_SCREENSHOTS=1 writes them to
assets/screenshots/ instead, to refresh the pictures the README shows.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOTS = ROOT / "assets" / "screenshots"
pytestmark = pytest.mark.browser

playwright_api = pytest.importorskip("playwright.sync_api")
if not Path("/usr/bin/chromium").exists() and shutil.which("chromium") is None:
    pytest.skip("Chromium is not installed (apt-get install chromium)", allow_module_level=True)


def load_bench():
    """bench/app_latency.py holds the server and browser helpers (one implementation for both)."""
    spec = importlib.util.spec_from_file_location("app_latency", ROOT / "bench" / "app_latency.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture()
def artifacts(request) -> dict[str, str]:
    default_zoo, default_model = ROOT / "data" / "zoo", ROOT / "data" / "hyperrep"
    if (default_zoo / "zoo.json").is_file() and (default_model / "model.safetensors").is_file():
        return {"HYPERREP_ZOO": str(default_zoo), "HYPERREP_MODEL": str(default_model)}
    return {"HYPERREP_ZOO": str(request.getfixturevalue("tiny_zoo_path")),
            "HYPERREP_MODEL": str(request.getfixturevalue("tiny_hyperrep_path"))}


def navigate(page, title: str) -> None:
    """Click a page in the sidebar navigation (the session and its state stay)."""
    page.locator('[data-testid="stSidebarNav"]').get_by_role("link", name=title, exact=True).click()


def lasso_the_map(page) -> None:
    """Switch the region to map selection and draw a lasso around the middle of the map."""
    page.get_by_text("Map selection (lasso, box or click)").click()
    page.get_by_text("Nothing selected yet").wait_for()
    box = page.locator(".st-key-latent_map .nsewdrag").first.bounding_box()
    cx, cy, rx, ry = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2, box["width"] * 0.4, box["height"] * 0.4
    page.mouse.move(cx - rx, cy - ry)
    page.mouse.down()
    for x, y in ((cx + rx, cy - ry), (cx + rx, cy + ry), (cx - rx, cy + ry), (cx - rx, cy - ry + 2)):
        page.mouse.move(x, y, steps=8)
    page.mouse.up()


def no_exceptions(page) -> None:
    shown = page.locator('[data-testid="stException"]')
    assert shown.count() == 0, shown.first.inner_text()


def screenshot_folder(tmp_path: Path) -> Path:
    """assets/screenshots/ when HYPERREP_REFRESH_SCREENSHOTS=1, else a temporary folder (the suite
    leaves the checkout as it found it)."""
    folder = SCREENSHOTS if os.environ.get("HYPERREP_REFRESH_SCREENSHOTS") == "1" else tmp_path / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_browser_overview_map_sampling_and_lasso(artifacts, tmp_path):
    bench = load_bench()
    shots = screenshot_folder(tmp_path)
    env = artifacts | {"HYPERREP_IMPORT_CACHE": str(tmp_path / "imports")}
    with playwright_api.sync_playwright() as playwright:
        browser = bench.launch_chromium(playwright)
        with bench.AppServer(env=env, log=tmp_path / "streamlit.log") as server:
            server.wait_healthy()
            page = bench.open_page(browser, server.url)
            bench.wait_for_overview(page)
            no_exceptions(page)
            bench.screenshot(page, shots / "overview.png")

            navigate(page, "Latent map")
            page.locator(".st-key-latent_map .js-plotly-plot").wait_for()
            page.get_by_text("anchors", exact=True).wait_for()
            no_exceptions(page)
            bench.screenshot(page, shots / "latent_map.png")

            navigate(page, "Sample & evaluate")
            first, results = bench.request_samples(page, 10, strategy="S_Dist (gaussian)")
            assert 0 < first <= results
            page.get_by_text("test accuracy: gaussian samples vs anchors").wait_for()
            page.locator(".st-key-novelty_plot .js-plotly-plot").wait_for()
            no_exceptions(page)
            playwright_api.expect(page.locator('[data-testid="stMetricValue"]').filter(has_text="/ 10 finite")).to_have_count(1)
            bench.screenshot(page, shots / "sample.png")

            navigate(page, "Zoo")
            page.locator(".st-key-zoo_trajectories .js-plotly-plot").wait_for()
            no_exceptions(page)
            bench.screenshot(page, shots / "zoo.png")

            navigate(page, "Latent map")
            lasso_the_map(page)
            page.get_by_text("points selected on the map").wait_for()
            picked = int(page.locator('[data-testid="stMetricValue"]').first.inner_text().replace(",", ""))
            assert picked > 0
            no_exceptions(page)
        browser.close()


def test_browser_samples_survive_going_to_fine_tune_at_once(artifacts, tmp_path):
    """Sample, leave for Fine-tune while the comparisons still run: the population is there, and
    the comparisons finish in the background and show up back on the Sample page."""
    bench = load_bench()
    env = artifacts | {"HYPERREP_IMPORT_CACHE": str(tmp_path / "imports")}
    with playwright_api.sync_playwright() as playwright:
        browser = bench.launch_chromium(playwright)
        with bench.AppServer(env=env, log=tmp_path / "streamlit.log") as server:
            server.wait_healthy()
            page = bench.open_page(browser, server.url)
            bench.wait_for_overview(page)
            navigate(page, "Sample & evaluate")
            bench.request_samples(page, 100)
            page.get_by_text("Comparing with baselines, novelty and ensembles").wait_for()
            assert page.locator(".st-key-novelty_plot").count() == 0, "the comparisons finished too fast to test leaving"
            navigate(page, "Fine-tune")
            page.get_by_role("heading", name="Fine-tune").wait_for()
            page.locator(".st-key-finetune_button button").wait_for()
            assert page.get_by_text("Sample a population first").count() == 0
            no_exceptions(page)
            navigate(page, "Sample & evaluate")
            page.locator(".st-key-novelty_plot .js-plotly-plot").wait_for(timeout=180_000)
            playwright_api.expect(page.locator('[data-testid="stMetricValue"]').filter(has_text="/ 100 finite")).to_have_count(1)
            no_exceptions(page)
        browser.close()
