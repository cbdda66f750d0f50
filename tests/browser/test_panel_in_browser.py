"""The Quality panel in a real browser: the App server, headless Chromium, Playwright.

One App server (127.0.0.1, free port) serves a dataset of scikit-image's photos, some
blurred at their own resolution, assessed with two bundled default models (blur,
brightness), opened with a workspace that shows the panel; and a second dataset that
nothing has scored yet. Each test drives the App as a user does and checks what the user
sees: the charts' traces, the grid's counts and view stages, the tags written, the
dropdown's models. Screenshots go to ``$SQ_SCREENSHOTS_DIR`` (default: the test's tmp
folder); ``docs/images/`` holds the ones the README shows, taken by these tests.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import cv2
import fiftyone as fo
import numpy as np
import pytest
from conftest import unique_name
from PIL import Image

import siamese_quality as sq
from siamese_quality import actions, runs
from siamese_quality.app.panel import PANEL_NAME
from siamese_quality.demo import SKIMAGE_GRAYSCALE_PHOTOS, write_skimage_photos

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
# the panel's actions on a dataset with no model, in the order it offers them
EMPTY_STATE_ACTIONS = ("Assess with the default models", "Train a model")
PANEL_URI_SUFFIX = f"/{PANEL_NAME}"
# what open-source FiftyOne needs before the App can schedule delegated operations
SCHEDULING_ENV = {"FIFTYONE_ALLOW_LEGACY_ORCHESTRATORS": "true"}
PLOTS_JS = """() => [...document.querySelectorAll('.js-plotly-plot')].map(g => ({
    title: g.layout && g.layout.title && g.layout.title.text,
    traces: (g.data || []).map(t => ({name: t.name, x: t.x || [], y: t.y || []})),
}))"""


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


def _dataset_with_the_panel(name: str, paths: list[str]) -> fo.Dataset:
    dataset = fo.Dataset(name, persistent=True)  # the server process must see it
    dataset.add_samples([fo.Sample(filepath=p) for p in paths])
    dataset.save_workspace(
        WORKSPACE,
        fo.Space(
            children=[fo.Panel(type="Samples", pinned=True), fo.Panel(type=PANEL_NAME)],
            orientation="horizontal",
        ),
    )
    return dataset


def _blur_in_place(path: str, sigma: float) -> None:
    """Blurs a photo file at its own resolution, as a shaken camera would (OpenCV)."""
    pixels = cv2.imread(path, cv2.IMREAD_COLOR)
    cv2.imwrite(path, cv2.GaussianBlur(pixels, (0, 0), sigma))


@pytest.fixture(scope="module")
def panel_dataset(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("photos"))
    # 18 photos: enough for histogram bars that hold more than one; a third of them
    # blurred, so that the blur charts, the worst first and the heat maps have
    # something to show (and the README's screenshots mean something)
    paths = write_skimage_photos(folder) + write_skimage_photos(folder, SKIMAGE_GRAYSCALE_PHOTOS)
    for path, sigma in zip(paths[::3], (1.5, 2.5, 3.5, 5.0, 2.0, 4.0), strict=True):
        _blur_in_place(path, sigma)
    dataset = _dataset_with_the_panel(unique_name("sq-browser"), paths)
    for task in ("blur", "brightness"):  # one at a time: no summary yet (a test makes it)
        sq.assess(dataset, tasks=[task], progress=False)
    yield dataset
    fo.delete_dataset(dataset.name)


@pytest.fixture(scope="module")
def unscored_dataset(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("new_photos"))
    dataset = _dataset_with_the_panel(unique_name("sq-browser-new"), write_skimage_photos(folder))
    yield dataset
    fo.delete_dataset(dataset.name)


@pytest.fixture(scope="module")
def logs(tmp_path_factory) -> str:
    """Where the App server and the worker write their logs (a pipe nobody reads would
    block them once full), printed when a test fails on what they did."""
    return str(tmp_path_factory.mktemp("logs"))


def _log_tail(path: str, chars: int = 4000) -> str:
    with open(path, errors="replace") as log:
        return log.read()[-chars:]


@pytest.fixture(scope="module")
def app_server(panel_dataset, logs):
    port = _free_port()
    log_path = os.path.join(logs, "app_server.log")
    with open(log_path, "w") as log:  # the server keeps its own copy of the handle
        server = subprocess.Popen(
            [sys.executable, "-m", "fiftyone.server.main", "--port", str(port)]
            + ["--address", "127.0.0.1"],
            env={**os.environ, **SCHEDULING_ENV},
            stdout=subprocess.DEVNULL,
            stderr=log,
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
                        f"App server did not start: {_log_tail(log_path, 2000)}"
                    ) from None
                time.sleep(0.2)
        _warm_up(base, panel_dataset.name)
        yield base
    finally:
        # a terminated server takes about 9 s to shut down; its state is in the database
        server.terminate()
        try:
            server.wait(timeout=3)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=30)


@pytest.fixture(scope="module")
def chromium():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> str:
    folder = os.environ.get("SQ_SCREENSHOTS_DIR") or str(tmp_path_factory.mktemp("shots"))
    os.makedirs(folder, exist_ok=True)
    return folder


class App:
    """The App page with the panel open, and what a user can do and see there."""

    def __init__(self, page, dataset):
        self.page, self.dataset = page, dataset
        self.calls: list[dict] = []  # the panel's calls to the server, in order
        page.on("request", self._record)

    def _record(self, request) -> None:
        if not request.url.endswith("/operators/execute"):
            return
        body = json.loads(request.post_data or "{}")
        if (body.get("operator_uri") or "").endswith(PANEL_URI_SUFFIX):
            self.calls.append({"method": body["params"].get("__method__"), "t": time.time()})

    def goto(self, base: str) -> App:
        """Loads the dataset's page with the panel's workspace, until its grid shows."""
        slug = fo.core.utils.to_slug(WORKSPACE)
        self.page.goto(
            f"{base}/datasets/{self.dataset.name}?workspace={slug}", wait_until="domcontentloaded"
        )
        for _ in range(3):  # safety net for a cold first load
            try:
                self.page.wait_for_selector('[data-cy="fo-grid"]', timeout=20000)
                break
            except Exception:
                self.page.reload(wait_until="domcontentloaded")
        return self

    def open(self, base: str) -> App:
        """:meth:`goto`, then waits for the panel's charts, on the whole dataset."""
        self.goto(base)
        self.page.wait_for_selector("text=Worst first", timeout=60000)
        self.wait_for_traces("Calibration", 2)
        # the server keeps the last test's view across page loads: start from the whole
        # dataset, as the panel's state line confirms (the view bar may still be loading)
        if "the whole dataset" not in self.grid_line():
            self.page.click('[data-cy="btn-clear-view-bar"]')
        self.wait_for_grid_line("the whole dataset")
        return self

    @staticmethod
    def _stages_js() -> str:
        return """[...document.querySelectorAll('input[data-cy="input-view-stage"]')]
                  .map(e => e.value).filter(v => v)"""

    def stages(self) -> list[str]:
        return self.page.evaluate(f"() => {self._stages_js()}")

    def wait_for_stage(self, stage: str) -> None:
        self.page.wait_for_function(
            f"() => ({self._stages_js()}).includes({json.dumps(stage)})", timeout=30000
        )

    def shown_count(self) -> int:
        """How many samples the grid shows, from the App's "5 of 8 samples" counter."""
        text = self.page.inner_text('[data-cy="entry-counts"]')
        return int(re.match(r"\s*([\d,]+)", text).group(1).replace(",", ""))

    def wait_for_count(self, count: int) -> None:
        deadline = time.monotonic() + 30
        while self.shown_count() != count and time.monotonic() < deadline:
            self.page.wait_for_timeout(250)
        assert self.shown_count() == count

    def wait_until_quiet(self, seconds: float = 3.0, limit: float = 30.0) -> None:
        """Waits until the panel has made no call but its timer's for ``seconds``."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            busy = [c["t"] for c in self.calls if c["method"] != "poll"]
            if not busy or time.time() - max(busy) >= seconds:
                return
            self.page.wait_for_timeout(250)
        raise AssertionError(f"the panel kept calling the server: {self.calls[-10:]}")

    def plot(self, title_start: str) -> dict | None:
        plots = self.page.evaluate(PLOTS_JS)
        found = [p for p in plots if (p["title"] or "").startswith(title_start)]
        return found[0] if found else None

    def wait_for_traces(self, title_start: str, count: int) -> dict:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            plot = self.plot(title_start)
            if plot and len(plot["traces"]) >= count and plot["traces"][-1]["x"]:
                return plot
            self.page.wait_for_timeout(250)
        raise AssertionError(f"no {title_start!r} chart with {count} traces")

    def grid_line(self) -> str:
        return self.page.locator("p", has_text="Grid:").first.inner_text()

    def wait_for_grid_line(self, text: str) -> str:
        deadline = time.monotonic() + 30
        while text not in self.grid_line() and time.monotonic() < deadline:
            self.page.wait_for_timeout(250)
        line = self.grid_line()
        assert text in line, line
        return line

    def click(self, button: str) -> None:
        self.page.get_by_role("button", name=button, exact=True).click()

    def slider(self, label: str):
        return self.page.locator(
            f'xpath=//*[contains(text(),"{label}")]/ancestor::*'
            '[.//span[contains(@class,"MuiSlider-root")]][1]'
            '//span[contains(@class,"MuiSlider-root")]'
        ).first

    def slider_value(self, label: str) -> float:
        return float(self.slider(label).locator("input").input_value())

    def drag(self, label: str, fraction: float) -> None:
        """Drags a slider's knob with the mouse to ``fraction`` of its width, in steps."""
        box = self.slider(label).bounding_box()
        knob = self.slider(label).locator(".MuiSlider-thumb").bounding_box()
        y = box["y"] + box["height"] / 2
        self.page.mouse.move(knob["x"] + knob["width"] / 2, y)
        self.page.mouse.down()
        start = (knob["x"] + knob["width"] / 2 - box["x"]) / box["width"]
        for step in range(1, 11):
            x = start + (fraction - start) * step / 10
            self.page.mouse.move(box["x"] + box["width"] * x, y)
            self.page.wait_for_timeout(40)
        self.page.mouse.up()

    def choose(self, current: str, option: str, within: str = "body") -> None:
        """Picks ``option`` in the dropdown that shows ``current``."""
        self.page.locator(within).locator("[role=combobox]", has_text=current).first.click()
        self.page.locator("[role=option]", has_text=re.compile(f"^{option}$")).first.click()

    def dropdown_options(self, current: str) -> list[str]:
        self.page.locator("[role=combobox]", has_text=current).first.click()
        options = self.page.locator("[role=option]").all_inner_texts()
        self.page.keyboard.press("Escape")
        return options

    def click_bar(self, index: int, title_start: str = "blur over the current view") -> None:
        """Clicks bar ``index`` of the first trace of the chart whose title starts with
        ``title_start``, where a user would: inside the drawn bar, scrolled into view (a
        thin bar's own element can have no area to click)."""
        box = self.page.evaluate(
            """([index, title]) => {
                const plot = [...document.querySelectorAll('.js-plotly-plot')].find(
                    g => (g.layout.title.text || '').startsWith(title));
                plot.scrollIntoView({block: 'center'});
                const bar = plot.querySelectorAll('.barlayer .trace')[0]
                    .querySelectorAll('.point path')[index];
                const r = bar.getBoundingClientRect();
                return {x: r.x, y: r.y, width: r.width, height: r.height};
            }""",
            [index, title_start],
        )
        assert box["height"] > 0, box  # a bar with samples in it
        self.page.mouse.click(
            box["x"] + box["width"] / 2, box["y"] + box["height"] - min(3, box["height"] / 2)
        )

    def close_sample(self) -> None:
        """Closes the sample view: the server keeps it open across page loads otherwise."""
        sample = self.page.locator('[data-cy="modal-looker-container"]')
        for _ in range(5):
            if not sample.count():
                return
            self.page.mouse.click(5, 300)  # outside the sample view: focus, then Escape
            self.page.keyboard.press("Escape")
            self.page.wait_for_timeout(500)
        assert not sample.count(), "the sample view did not close"

    def open_first_tile(self) -> None:
        """Clicks the grid's first tile, which opens it in the sample view.

        Low in the tile: the App's selection strip (checkbox and title) runs along a
        tile's top, and on a short tile (one row of 6 photos: 87 px) its centre lies in
        the strip, so a click there selected the sample instead of opening it."""
        tile = self.page.locator('[data-cy="fo-grid"] [data-cy="looker"]').first.bounding_box()
        self.page.mouse.click(tile["x"] + tile["width"] / 2, tile["y"] + tile["height"] * 0.8)
        self.page.wait_for_selector('[data-cy="modal-looker-container"]', timeout=30000)

    def sample_in_view(self) -> str:
        """The id of the sample the sample view shows, as its sidebar lists it."""
        modal = self.page.locator('[data-cy="modal"]')
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            found = re.search(r"\b([0-9a-f]{24})\s*\n\s*id\s*\n", modal.inner_text())
            if found:
                return found.group(1)
            self.page.wait_for_timeout(250)
        raise AssertionError(f"no sample id in the sample view: {modal.inner_text()[:300]}")

    def fill(self, label: str, value: str) -> None:
        """Types ``value`` into the operator form's field labelled ``label``."""
        self.page.locator(
            f'xpath=//p[normalize-space()="{label}"]'
            '/ancestor::div[contains(@class,"MuiGrid-item")][1]//input'
        ).first.fill(value)

    def open_operator(self, search: str) -> None:
        grid = self.page.locator('[data-cy="fo-grid"]')
        box = grid.bounding_box()  # an empty spot below the tiles: focus, no selection
        grid.click(position={"x": box["width"] / 2, "y": box["height"] - 20})
        self.page.keyboard.press("Backquote")
        self.page.wait_for_selector('[data-cy="operators-browser"]', timeout=10000)
        self.page.keyboard.type(search)
        self.page.wait_for_timeout(300)
        self.page.keyboard.press("Enter")
        self.page.wait_for_selector('[data-cy="operators-prompt-modal"]', timeout=30000)


def _new_page(chromium):
    context = chromium.new_context(viewport={"width": 1800, "height": 1300})
    # the App's own e2e switch: no "Explore Enterprise" popover swallowing clicks
    context.add_init_script("window.IS_PLAYWRIGHT = true;")
    context.route(re.compile(r"^https?://(?!127\.0\.0\.1[:/])"), lambda route: route.abort())
    return context, context.new_page()


@pytest.fixture
def app(chromium, app_server, panel_dataset):
    context, page = _new_page(chromium)
    try:
        yield App(page, panel_dataset).open(app_server)
    finally:
        App(page, panel_dataset).close_sample()
        context.close()
        panel_dataset.untag_samples(panel_dataset.distinct("tags"))


def _stored_curve(dataset, key: str) -> tuple[int, int]:
    results = runs.load_results(dataset, key)
    return len(results["calibration"]["x"]), len(results["evaluation"]["points"]["score"])


def test_switching_models_redraws_each_chart_then_a_dragged_slider_settles_and_is_used(
    app, panel_dataset, shots
):
    app.page.screenshot(path=os.path.join(shots, "quality-panel.png"))
    stored = {key: _stored_curve(panel_dataset, key) for key in ("blur", "brightness")}
    assert stored["blur"][0] != stored["brightness"][0], stored  # else the test sees nothing
    for previous, key in (("blur", "brightness"), ("brightness", "blur")):  # there and back
        app.choose(previous, key)
        curve_points, held_out = stored[key]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            calibration = app.wait_for_traces("Calibration", 4)
            if len(calibration["traces"][3]["x"]) == curve_points:
                break
            app.page.wait_for_timeout(250)
        assert len(calibration["traces"][3]["x"]) == curve_points, (key, calibration)
        assert len(calibration["traces"][2]["x"]) == held_out
        correlation = app.wait_for_traces("Magnitude correlation", 2)
        assert len(correlation["traces"][0]["x"]) == held_out
        distribution = app.wait_for_traces(key, 2)
        assert sum(distribution["traces"][0]["y"]) == panel_dataset.count(key)

    # back on blur, the slider (one test: each page load costs 15-35 s)
    label = "Worst % (for"
    assert app.slider(label).bounding_box()["width"] > 300  # a real slider, not a knob
    app.wait_until_quiet()  # the App sends bursts of view events while a page loads
    app.drag(label, 0.5)
    app.page.wait_for_timeout(500)
    settled = app.slider_value(label)
    # the value does not bounce between browser and server: the old loop made 2.5 calls
    # a second for ever, and every click slowed down. The App answers a slider change
    # with a few bursts of view events; then the panel falls quiet.
    app.wait_until_quiet(seconds=3.0, limit=20.0)
    assert app.slider_value(label) == settled and 30 <= settled <= 70, settled
    total = app.dataset.count("blur")

    app.click("Show worst %")
    app.wait_for_stage("Limit")
    app.wait_for_count(max(1, round(total * settled / 100)))
    app.wait_for_grid_line(f"the worst {settled:g} % by blur")
    app.page.screenshot(path=os.path.join(shots, "quality-panel-worst-percent.png"))

    # the keyboard moves it too, and the next "Show worst %" replaces the last one
    app.slider(label).locator("input").focus()
    app.page.keyboard.press("End")
    app.page.wait_for_timeout(500)
    assert app.slider_value(label) == 100
    app.click("Show worst %")
    app.wait_for_count(total)


def _fullest_bar(app, above_zero: bool = False) -> tuple[int, float, float]:
    """The histogram bar with the most samples (ties: the first), and its range;
    ``above_zero``: among the bars above 0 px (samples that have some blur)."""
    counts = app.wait_for_traces("blur", 2)["traces"][0]["y"]
    _, edges, _ = app.dataset.histogram_values("blur", bins=len(counts))
    bars = [i for i in range(len(counts)) if not above_zero or edges[i] > 0]
    index = max(bars, key=lambda i: (counts[i], -i))
    assert counts[index] > 0, counts
    return index, edges[index], edges[index + 1]


def test_worst_first_after_a_bar_click_keeps_the_filter_then_tag_beyond_threshold_tags_the_view(
    app, shots
):
    index, low, high = _fullest_bar(app)
    in_bar = actions.in_range(app.dataset, "blur", low, high)
    app.click_bar(index)
    app.wait_for_stage("Match")
    app.wait_for_count(in_bar.count())

    app.click("Worst first")
    app.wait_for_stage("SortBy")
    assert "Match" in app.stages()  # the filter stays
    app.wait_for_count(in_bar.count())
    app.wait_for_grid_line(f"worst first by blur: {in_bar.count()} of {app.dataset.count()}")
    app.page.screenshot(path=os.path.join(shots, "quality-panel-worst-first.png"))
    # the first tile is the bar's worst sample: a click opens it, and the sample view's
    # sidebar names it
    app.open_first_tile()
    assert app.dataset[app.sample_in_view()]["blur"] == max(in_bar.values("blur"))  # ties: any
    app.close_sample()

    # then tagging, from the whole dataset again (one test: each page load costs 15-35 s)
    app.click("Clear filter")
    app.wait_for_grid_line("the whole dataset")
    index, low, high = _fullest_bar(app, above_zero=True)
    in_bar = actions.in_range(app.dataset, "blur", low, high)
    app.click_bar(index)
    app.wait_for_count(in_bar.count())
    threshold = app.slider_value("Tag threshold")
    expected = set(actions.severity_threshold(in_bar, "blur", threshold).values("id"))
    assert expected and len(expected) < app.dataset.count()  # else the test sees nothing
    app.click("Tag beyond threshold")
    app.page.wait_for_selector(f"text=Tagged {len(expected)} samples of this view", timeout=30000)
    assert set(app.dataset.match_tags("worst_blur").values("id")) == expected


def _looker_pixels(app) -> np.ndarray:
    shot = app.page.locator('[data-cy="modal-looker-container"]').first.screenshot()
    return np.asarray(Image.open(io.BytesIO(shot)).convert("RGB"), dtype=np.int16)


def test_score_with_heat_maps_summarize_click_an_issue_and_see_where_in_a_sample(
    app, panel_dataset, shots
):
    """The whole flow: the score operator (with heat maps) from the operator browser, the
    Overview's summary, an issue bar that shows its samples worst first, and a sample
    opened with its heat map drawn over it."""
    from playwright.sync_api import expect

    modal = '[data-cy="operators-prompt-modal"]'
    app.open_operator("score samples")
    app.page.locator(modal).get_by_text("Heat maps of where", exact=True).click()
    app.page.wait_for_timeout(1000)  # the form resolves its inputs again
    app.page.locator(modal).get_by_role("button", name="Execute", exact=True).click()
    photos = len(panel_dataset)
    app.page.get_by_text(f"scored {photos} of {photos} samples").wait_for(timeout=120000)
    panel_dataset.reload()
    assert panel_dataset.count("blur_heatmap") == photos  # the App's server wrote them

    app.page.get_by_role("button", name="Summarize issues", exact=True).click()
    app.page.wait_for_selector(modal, timeout=30000)
    app.page.wait_for_timeout(1000)
    app.page.locator(modal).get_by_role("button", name="Execute", exact=True).click()
    bars = app.wait_for_traces("Worst issue per sample", 1)["traces"][0]
    panel_dataset.reload()
    counts = panel_dataset.count_values("quality_issue")
    assert dict(zip(bars["x"], bars["y"], strict=True)) == counts
    app.page.get_by_text("held-out Spearman").first.scroll_into_view_if_needed()
    app.page.screenshot(path=os.path.join(shots, "quality-panel-overview.png"))

    issue, count = bars["x"][0], bars["y"][0]
    app.click_bar(0, "Worst issue per sample")
    app.wait_for_stage("SortBy")
    assert "Match" in app.stages()
    app.wait_for_count(count)
    app.wait_for_grid_line(f"samples whose worst issue is {issue}, worst first")

    app.click("Clear filter")
    app.wait_for_grid_line("the whole dataset")
    app.click("Worst first, with heat maps")
    app.wait_for_grid_line("worst first by blur, with its heat maps")
    app.open_first_tile()
    checkbox = app.page.locator('[data-cy="modal"] [data-cy="checkbox-blur_heatmap"] input')
    checkbox.wait_for(state="attached", timeout=30000)
    app.page.wait_for_selector(
        '[data-cy="modal-looker-container"] canvas[canvas-loaded="true"]', timeout=30000
    )
    # the panel turned the heat maps on, for the modal too (under load the modal's sidebar
    # shows the active fields a few seconds after its canvas)
    expect(checkbox).to_be_checked(timeout=30000)
    app.page.wait_for_timeout(1500)  # the map drawn over the photo
    app.page.screenshot(path=os.path.join(shots, "quality-panel-heatmap.png"))
    with_map = _looker_pixels(app)
    checkbox.click()  # off: the same sample, the photo alone
    app.page.wait_for_timeout(1500)
    without = _looker_pixels(app)
    assert with_map.shape == without.shape
    changed = np.abs(with_map - without).max(axis=2) > 30
    assert changed.mean() > 0.2, changed.mean()  # the map covers the image, not a corner
    app.close_sample()


def test_the_train_form_follows_its_fields_and_a_scheduled_run_ends_in_the_panel(
    app, panel_dataset, shots, logs
):
    """The training form's fields that depend on another field follow it; then the
    training, scheduled from the App, runs in a worker and the panel shows its model
    (one test: each page load costs 15-35 s)."""
    assert "contrast" not in runs.list_model_keys(panel_dataset)
    app.open_operator("train model")
    modal = '[data-cy="operators-prompt-modal"]'
    current = app.page.locator(modal).locator("[role=combobox]").first.inner_text()
    app.choose(current, "blur", within=modal)
    app.page.wait_for_selector(f"{modal} >> text=A model 'blur' exists", timeout=30000)
    app.choose("blur", "contrast", within=modal)
    app.page.wait_for_selector(f"{modal} >> text=empty: 'contrast'", timeout=30000)
    # the form resolves again after a change (debounced): the error goes once it has
    app.page.locator(f"{modal} >> text=A model 'blur' exists").wait_for(
        state="detached", timeout=30000
    )
    app.fill("Time budget (seconds)", "5")
    app.page.wait_for_selector(f"{modal} >> text=up to 5 s of training", timeout=30000)
    app.fill("Working resolution (px, optional)", "64")
    app.page.wait_for_timeout(1000)  # the form resolves its inputs again
    app.page.locator(modal).get_by_role("button", name="Schedule", exact=True).click()
    try:
        app.page.get_by_text("training 'contrast': queued").wait_for(timeout=30000)
    except Exception:
        from siamese_quality.jobs import active_jobs

        print("JOBS", active_jobs(panel_dataset), app.page.inner_text("body")[:600])
        raise
    app.page.screenshot(path=os.path.join(shots, "quality-panel-job-queued.png"))

    fiftyone_cli = os.path.join(os.path.dirname(sys.executable), "fiftyone")
    worker_log = os.path.join(logs, "worker.log")
    with open(worker_log, "w") as log:  # the worker keeps its own copy of the handle
        worker = subprocess.Popen(
            [fiftyone_cli, "delegated", "launch"],
            env={**os.environ, **SCHEDULING_ENV},
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    try:
        # the panel notices the job ending by itself: no reload
        job = app.page.get_by_text("training 'contrast'")
        job.filter(has_text="running").wait_for(timeout=120000)  # the worker's progress
        app.page.screenshot(path=os.path.join(shots, "quality-panel-job-running.png"))
        job.wait_for(state="detached", timeout=300000)
    except Exception:
        print("WORKER LOG", _log_tail(worker_log))
        raise
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    app.page.screenshot(path=os.path.join(shots, "quality-panel-job-done.png"))
    assert not app.page.get_by_text("Jobs that failed").count(), app.page.inner_text("body")
    panel_dataset.reload()  # the worker, another process, added the run
    assert "contrast" in runs.list_model_keys(panel_dataset)
    assert "contrast" in app.dropdown_options("blur")


def test_a_dataset_nothing_scored_is_assessed_by_the_panels_first_action(
    chromium, app_server, unscored_dataset, logs
):
    from siamese_quality.core.defaults import DEFAULT_MODELS_VERSION, default_tasks

    context, page = _new_page(chromium)
    try:
        app = App(page, unscored_dataset).goto(app_server)
        page.get_by_text("No quality model yet").wait_for(timeout=60000)
        first, then = (page.get_by_role("button", name=n, exact=True) for n in EMPTY_STATE_ACTIONS)
        assert first.bounding_box()["y"] < then.bounding_box()["y"]  # offered first
        first.click()
        modal = page.locator('[data-cy="operators-prompt-modal"]')
        modal.wait_for(timeout=30000)
        for task in default_tasks():  # the form offers every task, all ticked
            modal.get_by_text(task, exact=True).first.wait_for(timeout=30000)
        page.wait_for_timeout(1000)  # the form resolves its inputs
        modal.get_by_role("button", name="Execute", exact=True).click()
        count = len(unscored_dataset)
        try:
            done = page.get_by_text(re.compile(f"scored {count} of {count} samples"))
            done.wait_for(timeout=120000)
        except Exception:  # seen in fresh-clone runs under load: say what the user saw
            unscored_dataset.reload()
            print("MODELS", runs.list_model_keys(unscored_dataset, include_incomplete=True))
            print("COMPLETE", runs.list_model_keys(unscored_dataset), "CALLS", app.calls[-20:])
            error = page.get_by_text("Error occurred during operator execution")
            if error.count():
                error.first.click()  # the App folds the error's message and trace under it
                page.wait_for_timeout(500)
            print("PAGE", page.inner_text("body")[:4000])
            print("APP SERVER LOG", _log_tail(os.path.join(logs, "app_server.log")))
            raise
        # the panel leaves its empty state by itself: the bundled models' charts
        try:
            app.wait_for_traces("Calibration", 2)
        except AssertionError:  # seen once in a full local run under load: say what showed
            print("PANEL", page.inner_text("body")[:1500], "CALLS", app.calls[-20:])
            raise
        unscored_dataset.reload()
        assert sorted(runs.list_model_keys(unscored_dataset)) == sorted(default_tasks())
        for task in default_tasks():
            assert unscored_dataset.count(task) == len(unscored_dataset), task
        description = unscored_dataset.get_field("blur").description
        assert f"bundled default model v{DEFAULT_MODELS_VERSION}" in description
        # the tilt model writes its confidence: its actions get a slider for it
        shown = re.compile("^(" + "|".join(t for t in default_tasks() if t != "rotation") + ")$")
        page.locator("[role=combobox]", has_text=shown).first.click()
        page.locator("[role=option]", has_text=re.compile("^rotation$")).first.click()
        label = "Only samples read with rotation_confidence"
        page.get_by_text(label).first.wait_for(timeout=30000)
        assert app.slider(label).bounding_box()["width"] > 300
        # it starts among the tilts read surely, and the actions use it from the start
        assert app.slider_value(label) == 0.5
        app.click("Worst first")
        app.wait_for_grid_line("worst first by rotation, read with confidence ≥ 0.5")
        # the noise model's summary shows its reader of JPEG files beside the first
        page.locator("[role=combobox]", has_text=re.compile("^rotation$")).first.click()
        page.locator("[role=option]", has_text=re.compile("^noise$")).first.click()
        page.get_by_text("its reader of JPEG files").first.wait_for(timeout=30000)
        assert page.get_by_text("trained on copies saved as JPEGs").count()
    finally:
        context.close()


@pytest.fixture(scope="module")
def noise_model_file(noise_model_and_progress, tmp_path_factory) -> str:
    """conftest's tiny noise model as a file: it holds a reader of JPEG files, measured
    on held-out copies saved as JPEG 95 (the bundled one predates that record)."""
    path = str(tmp_path_factory.mktemp("models") / "noise.pt")
    noise_model_and_progress[0].save(path)
    return path


def test_a_noise_models_reader_of_jpeg_files_shows_in_the_panel_and_its_evaluation(
    chromium, app_server, noise_model_file, tmp_path
):
    """The panel's summary row of the JPEG-file reader on saved copies, and the evaluate
    operator's output for that reader, as the App draws them."""
    dataset = _dataset_with_the_panel(
        unique_name("sq-browser-noise"), write_skimage_photos(str(tmp_path))[:4]
    )
    context, page = _new_page(chromium)
    try:
        sq.import_model(dataset, noise_model_file, key="noise")
        sq.score(dataset, key="noise", progress=False)
        reader = sq.model_info(dataset, "noise").training["jpeg_file_reader"]
        app = App(page, dataset).goto(app_server)
        row = page.locator("tr", has_text="its reader, copies saved as JPEG 95")
        row.first.wait_for(timeout=60000)
        assert f"{reader['saved_metrics']['spearman']:.3f}" in row.first.inner_text()

        app.open_operator("evaluate model")
        modal = page.locator('[data-cy="operators-prompt-modal"]')
        page.wait_for_timeout(1000)  # the form resolves its inputs
        modal.get_by_role("button", name="Execute", exact=True).click()
        label = "Its reader of JPEG files, on the copies saved as JPEG 95"
        page.get_by_text(label).first.wait_for(timeout=120000)
        assert page.get_by_text("Classical baseline").count()
    finally:
        context.close()
        fo.delete_dataset(dataset.name)
