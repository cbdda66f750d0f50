"""The Quality panel in a real browser: the App server, headless Chromium, Playwright.

Starts the FiftyOne App server on 127.0.0.1 (free port) with a small dataset and
a tiny trained model, opens the dataset with a workspace that shows the panel,
checks that the Plotly charts rendered, clicks an action and checks that the
grid changed. Screenshots go to ``$SQ_SCREENSHOTS_DIR`` (default: the test's tmp
folder); ``docs/images/`` holds the ones the README shows.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import fiftyone as fo
import pytest
from conftest import unique_name

import siamese_quality as sq
from siamese_quality.app.panel import PANEL_NAME
from siamese_quality.demo import write_skimage_photos

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# CI sets SQ_REQUIRE_BROWSER=1: there a missing browser is a failure, not a skip
_MISSING = not os.path.exists(CHROMIUM) and os.environ.get("SQ_REQUIRE_BROWSER") != "1"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.browser,
    pytest.mark.skipif(_MISSING, reason="needs Debian's chromium: apt-get install -y chromium"),
]
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WORKSPACE = "sq_quality_panel"
HAS_SORT = """() => [...document.querySelectorAll('input[data-cy="input-view-stage"]')]
                    .some(e => e.value === 'SortBy')"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _warm_up(base: str, dataset: str) -> None:
    """The first /events subscription after a server start may never get its state:
    subscribe until one does, so the browser is not that first client."""
    body = json.dumps(
        {
            "initializer": {
                "dataset": dataset,
                "group_id": None,
                "group_slice": None,
                "sample_id": None,
                "view": None,
                "workspace": None,
            },
            "subscription": "warm-up",
            "events": ["state_update"],
        }
    ).encode()
    for _ in range(10):
        request = urllib.request.Request(
            f"{base}/events", data=body, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=4) as response:
                deadline = time.time() + 4
                while time.time() < deadline:
                    if b"state_update" in response.readline():
                        return
        except OSError:
            continue


@pytest.fixture
def panel_dataset(tmp_path):
    name = unique_name("sq-browser")
    dataset = fo.Dataset(name, persistent=True)  # the server process must see it
    paths = write_skimage_photos(str(tmp_path / "photos"))
    dataset.add_samples([fo.Sample(filepath=p) for p in paths])
    # a short real training, so the charts (and the README's screenshots) mean something
    sq.train(
        dataset, task="blur", max_seconds=None, max_steps=150, working_resolution=64, progress=False
    )
    sq.score(dataset, key="blur", progress=False)
    dataset.save_workspace(
        WORKSPACE,
        fo.Space(
            children=[fo.Panel(type="Samples", pinned=True), fo.Panel(type=PANEL_NAME)],
            orientation="horizontal",
        ),
    )
    yield dataset
    fo.delete_dataset(name)


@pytest.fixture
def app_server(panel_dataset):
    port = _free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fiftyone.server.main",
            "--port",
            str(port),
            "--address",
            "127.0.0.1",
        ],
        env=os.environ.copy(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while True:
            try:
                urllib.request.urlopen(f"{base}/fiftyone", timeout=2).read()
                break
            except OSError:
                if server.poll() is not None or time.time() > deadline:
                    raise RuntimeError(
                        f"App server did not start: {server.stderr.read().decode()[-2000:]}"
                    ) from None
                time.sleep(0.2)
        _warm_up(base, panel_dataset.name)
        yield base
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


def _wait_tiles(page, count: int = 4) -> None:
    page.wait_for_function(
        f"""() => document.querySelectorAll(
              '[data-cy="fo-grid"] [data-cy="looker"] canvas[canvas-loaded="true"]'
            ).length >= {count}""",
        timeout=60000,
    )


def test_panel_renders_charts_and_its_action_changes_the_grid(app_server, panel_dataset, tmp_path):
    from playwright.sync_api import sync_playwright

    shots = os.environ.get("SQ_SCREENSHOTS_DIR") or str(tmp_path)
    os.makedirs(shots, exist_ok=True)
    slug = fo.core.utils.to_slug(WORKSPACE)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1800, "height": 2000})
        # the App's own e2e switch: no "Explore Enterprise" popover swallowing clicks
        context.add_init_script("window.IS_PLAYWRIGHT = true;")
        context.route(
            __import__("re").compile(r"^https?://(?!127\.0\.0\.1[:/])"), lambda route: route.abort()
        )
        page = context.new_page()
        page.goto(
            f"{app_server}/datasets/{panel_dataset.name}?workspace={slug}",
            wait_until="domcontentloaded",
        )
        for _ in range(3):  # safety net for a cold first load
            try:
                page.wait_for_selector('[data-cy="fo-grid"]', timeout=20000)
                break
            except Exception:
                page.reload(wait_until="domcontentloaded")
        _wait_tiles(page)

        # the panel's three Plotly charts, with real SVG traces in them
        page.wait_for_function(
            "() => document.querySelectorAll('.js-plotly-plot .main-svg').length >= 3",
            timeout=60000,
        )
        page.wait_for_selector("text=Calibration: true magnitude vs branch score", timeout=30000)
        # the chart frames render before the panel's data arrives: wait for the traces
        counts_js = """() => {
            const n = (selector) => document.querySelectorAll('.js-plotly-plot ' + selector).length;
            return {
                points: n('.scatterlayer .trace .points path'),
                lines: n('.scatterlayer .trace .js-line'),
                bars: n('.barlayer .bars path'),
            };
        }"""
        try:
            page.wait_for_function(
                f"() => {{ const c = ({counts_js})(); "
                "return c.points >= 18 && c.lines >= 2 && c.bars >= 1; }",
                timeout=60000,
            )
        except Exception:
            page.screenshot(path=os.path.join(shots, "quality-panel-timeout.png"))
        counts = page.evaluate(counts_js)
        # on failure, show what the panel displayed (an error, an empty state)
        seen = (counts, page.inner_text("body")[-1500:])
        assert counts["points"] >= 2 * 9, seen  # held-out copies in two charts
        assert counts["lines"] >= 2, seen  # calibration curve and the diagonal
        assert counts["bars"] >= 1, seen  # distribution of the field
        page.screenshot(path=os.path.join(shots, "quality-panel.png"))

        grid_box = page.locator('[data-cy="fo-grid"]').bounding_box()
        before = page.screenshot(clip=grid_box)
        page.get_by_role("button", name="Worst first").click()
        page.wait_for_function(HAS_SORT, timeout=30000)
        _wait_tiles(page)
        # the old tiles stay loaded until the grid redraws, which can take seconds on a
        # busy machine: poll instead of one fixed wait
        deadline = time.monotonic() + 30
        after = page.screenshot(clip=grid_box)
        while after == before and time.monotonic() < deadline:
            page.wait_for_timeout(500)
            after = page.screenshot(clip=grid_box)
        page.screenshot(path=os.path.join(shots, "quality-panel-worst-first.png"))
        browser.close()

    assert before != after, "the grid did not change after 'Worst first'"
