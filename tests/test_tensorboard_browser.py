"""TensorBoard in a real browser on a two-job sweep of the default job: the Custom Scalars
dashboard, the Time Series page's first groups, the Images tab and the HParams table."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from cnn_train.distributed import free_port
from tests.helpers import get_json, run_cli

webdriver = pytest.importorskip(
    "selenium.webdriver", reason="selenium is missing: pip install -e '.[test]'"
)
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (CHROMIUM and CHROMEDRIVER),
        reason="chromium is missing: apt-get install -y chromium chromium-driver",
    ),
]
# Without these Chromium waits on connections a closed network never answers.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1000",
)
# Two jobs of the default job, cut short: 2 epochs of 2 steps, the LR at every step, no graph.
SWEEP = [
    "-m",
    "seed=0,1",
    "trainer.epochs=2",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.log_every_steps=1",
    "tracking.graph=false",
]
WAIT_S = 90
# Every element matching a CSS selector, looking inside shadow roots (Polymer dashboards).
DEEP = """
function deep(root, selector, found = []) {
  root.querySelectorAll(selector).forEach((element) => found.push(element));
  root.querySelectorAll('*').forEach((element) => {
    if (element.shadowRoot) deep(element.shadowRoot, selector, found);
  });
  return found;
}
"""


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cwd = tmp_path_factory.mktemp("browser")
    result = run_cli("cnn-train", *SWEEP, cwd=cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    (folder,) = (cwd / "outputs" / "multirun").glob("*/*")
    return folder


@pytest.fixture(scope="module")
def tensorboard(sweep: Path) -> Iterator[tuple[str, list[str]]]:
    """The real server on the sweep folder: its address and its runs (one per job)."""
    port = free_port()
    command = [sys.executable, "-m", "tensorboard.main", "--logdir", str(sweep)]
    command += ["--host", "127.0.0.1", "--port", str(port), "--reload_interval", "1"]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline, runs = time.monotonic() + WAIT_S, []
        while time.monotonic() < deadline and len(runs) < 2:
            assert server.poll() is None, server.stderr.read().decode() if server.stderr else ""
            try:
                runs = get_json(f"{url}/data/runs")
            except (urllib.error.URLError, ConnectionError, json.JSONDecodeError):
                time.sleep(0.5)
        assert len(runs) == 2, f"the server lists runs {runs}"
        yield url, runs
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    with tempfile.TemporaryDirectory() as profile:
        options = Options()
        options.binary_location = str(CHROMIUM)
        for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
            options.add_argument(flag)
        driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
        try:
            yield driver
        finally:
            driver.quit()


@pytest.fixture
def page(browser: Any, tensorboard: tuple[str, list[str]]) -> Callable[[str], None]:
    """Open a dashboard tab afresh."""
    url, _ = tensorboard

    def open_tab(tab: str) -> None:
        browser.get("about:blank")
        browser.get(f"{url}/#{tab}")

    return open_tab


@contextmanager
def screenshot_on_failure(driver: Any, folder: Path) -> Iterator[None]:
    """Leave what the browser showed in the test's tmp folder when the test fails."""
    try:
        yield
    except BaseException:
        driver.save_screenshot(str(folder / "screenshot.png"))
        raise


def until(driver: Any, script: str, done: Callable[[Any], bool]) -> Any:
    """Run `script` in the page until `done` accepts its result; return that result."""
    deadline, state = time.monotonic() + WAIT_S, None
    while time.monotonic() < deadline:
        state = driver.execute_script(DEEP + script)
        if done(state):
            return state
        time.sleep(0.5)
    pytest.fail(f"the page did not get there in {WAIT_S} s; it shows {state}")


CHARTS = """
return deep(document, 'tf-custom-scalar-multi-line-chart-card').map((card) => ({
  title: card.title,
  series: deep(card.shadowRoot, '.match-list-entry').map((e) => e.textContent.trim()),
  // a drawn series is a path with at least one line segment
  lines: deep(card.shadowRoot, 'path.line')
    .filter((path) => (path.getAttribute('d') || '').includes('L')).length,
}));
"""


def series_of(chart: dict[str, Any]) -> set[tuple[str, str]]:
    """(tag, run) of each series a chart lists under "Matches", e.g. `val/loss (0_seed=0/tb)`."""
    found = (re.search(r"(\S+) \((.+)\)$", " ".join(text.split())) for text in chart["series"])
    return {(match[1], match[2]) for match in found if match}


def test_the_dashboard_draws_train_and_val_of_every_run(
    page: Callable[[str], None],
    browser: Any,
    tensorboard: tuple[str, list[str]],
    tmp_path: Path,
) -> None:
    _, runs = tensorboard
    wanted = {
        "loss": {"train/loss", "val/loss"},
        "top-1 accuracy": {"train/acc1", "val/acc1"},
        "top-5 accuracy": {"val/acc5"},
        "learning rate": {"train/lr"},
    }
    expected = {title: {(t, run) for t in tags for run in runs} for title, tags in wanted.items()}

    def drawn(charts: list[dict[str, Any]]) -> bool:
        shown = {chart["title"]: chart for chart in charts}
        return all(
            title in shown
            and series_of(shown[title]) == series
            and shown[title]["lines"] >= len(series)
            for title, series in expected.items()
        )

    with screenshot_on_failure(browser, tmp_path):
        page("custom_scalars")
        charts = until(browser, CHARTS, drawn)
        assert [chart["title"] for chart in charts] == list(wanted)


def test_time_series_opens_on_the_train_and_val_groups(
    page: Callable[[str], None], browser: Any, tmp_path: Path
) -> None:
    script = """
    return deep(document, '.card-group').map((group) => ({
      name: group.querySelector('.group-title').getAttribute('title'),
      cards: group.querySelectorAll('card-view').length,
    }));
    """
    with screenshot_on_failure(browser, tmp_path):
        page("timeseries")
        groups = until(browser, script, lambda groups: any(g["name"] == "vitals" for g in groups))
        names = [group["name"] for group in groups]
        assert names[:2] == ["train", "val"], names
        open_groups = [group["name"] for group in groups if group["cards"]]
        assert open_groups == ["train", "val"], groups


def test_the_images_tab_shows_the_input_grid_and_the_confusion_matrix(
    page: Callable[[str], None],
    browser: Any,
    tensorboard: tuple[str, list[str]],
    tmp_path: Path,
) -> None:
    _, runs = tensorboard
    script = """
    return deep(document, 'tf-image-loader').map((loader) => {
      const image = deep(loader.shadowRoot || loader, 'img')[0];
      return {run: loader.run, tag: loader.tag,
              size: image && image.complete ? [image.naturalWidth, image.naturalHeight] : [0, 0]};
    });
    """
    wanted = {(run, tag) for run in runs for tag in ("train/images", "val/confusion_matrix")}

    def loaded(images: list[dict[str, Any]]) -> bool:
        shown = {(image["run"], image["tag"]) for image in images if min(image["size"]) > 0}
        return wanted <= shown

    with screenshot_on_failure(browser, tmp_path):
        page("images")
        images = until(browser, script, loaded)
        for image in images:
            if image["tag"] == "val/confusion_matrix":
                width, height = image["size"]
                assert width == height == 10 * 8, image  # 10 digit classes, 8 px cells


def test_hparams_lists_every_job_of_the_sweep(
    page: Callable[[str], None],
    browser: Any,
    tensorboard: tuple[str, list[str]],
    tmp_path: Path,
) -> None:
    _, runs = tensorboard
    script = """
    const table = deep(document, 'tf-hparams-table-view')[0];
    if (!table) return [];
    const cells = deep(table.shadowRoot, 'vaadin-grid-cell-content');
    return cells.map((cell) => cell.textContent.trim());
    """
    with screenshot_on_failure(browser, tmp_path):
        page("hparams")
        cells = until(browser, script, lambda cells: all(run in cells for run in runs))
        assert {"val/best_acc1", "val/acc1", "val/loss"} <= set(cells)  # the metric columns
