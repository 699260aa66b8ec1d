"""The dashboards as researchers use them: a real JupyterLab (started from this venv) driven by Debian's Chromium with
the network blocked (every non-localhost request aborted, like a GPU cluster node), notebooks run with the "Run All
Cells" menu command. Screenshots go to test-artifacts/."""
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import pytest

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
TOKEN = "hyperkd-test-token"

pytestmark = [pytest.mark.browser, pytest.mark.slow,
              pytest.mark.skipif(not Path(CHROMIUM).exists() and not os.environ.get("CI"),
                                 reason="Debian's chromium is not installed (.ci/run installs it)")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _notebook(path: Path, cells: list[str]):
    nb = {"cells": [{"cell_type": "code", "execution_count": None, "id": f"c{i}", "metadata": {}, "outputs": [],
                     "source": src} for i, src in enumerate(cells)],
          "metadata": {"kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}},
          "nbformat": 4, "nbformat_minor": 5}
    path.write_text(json.dumps(nb, indent=1))


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    "A JupyterLab server on a free port, rooted in a fresh folder, its settings and kernels isolated from the user's."
    root = tmp_path_factory.mktemp("lab")
    home = tmp_path_factory.mktemp("jupyter-home")
    settings = home / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
           "HYPERKD_CACHE": str(root / "cache"), "JUPYTERLAB_SETTINGS_DIR": str(home / "settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"), "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
           "MPLBACKEND": "Agg", "PYTHONUNBUFFERED": "1"}
    env.pop("PANEL_INLINE", None)  # the user's environment must not matter: the dashboards load inline themselves
    log = root.parent / "jupyterlab.log"
    proc = subprocess.Popen([sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
                             "--ServerApp.port_retries=0", f"--IdentityProvider.token={TOKEN}", f"--ServerApp.root_dir={root}",
                             "--LabApp.news_url=None", "--ServerApp.terminals_enabled=False",
                             *(["--allow-root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else [])],
                            cwd=root, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 180
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"JupyterLab exited: {log.read_text()[-3000:]}")
        try:
            urllib.request.urlopen(f"{url}/api/status?token={TOKEN}", timeout=30).read()
            break
        except OSError:
            if time.time() > deadline:
                proc.kill()
                raise RuntimeError(f"JupyterLab did not answer in time: {log.read_text()[-3000:]}")
            time.sleep(0.5)
    yield {"url": url, "root": root, "log": log}
    from hyperkd.launch import Job
    for job in root.glob("runs/*/job.json"):  # a test that failed before stopping its run leaves it training for good
        Job.attach(job.parent).stop()  # (its own process session): it would take a core from every later test
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture
def page(lab):
    "Chromium (1500 x 1100 window) with every request that is not for localhost aborted; console errors collected."
    sync_api = pytest.importorskip("playwright.sync_api")
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-quic", "--no-first-run", "--disable-sync"])
        page = browser.new_page(viewport={"width": 1500, "height": 1100})
        page.errors, page.blocked = [], []
        page.on("console", lambda m: page.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: page.errors.append(str(e)))

        def offline(route):
            if urlparse(route.request.url).hostname in ("localhost", "127.0.0.1"):
                return route.continue_()
            page.blocked.append(route.request.url)
            return route.abort("internetdisconnected")
        page.route("**/*", offline)
        page.set_default_timeout(120_000)
        yield page
        page.screenshot(path=ARTIFACTS / "jupyterlab-last.png", full_page=True)  # where a failed test stopped
        (ARTIFACTS / "jupyterlab-last.txt").write_text("\n".join(["console errors:", *page.errors, "blocked:", *page.blocked]))
        browser.close()


def _wait_for(fn, timeout: float, what: str, every: float = 0.5):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = fn()
        if v:
            return v
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _open_and_run_all(page, lab, name: str):
    "Open the notebook in JupyterLab, wait for its kernel, then Run > Run All Cells (the menu, as a user does)."
    # ?reset: a fresh workspace. Without it JupyterLab restores the notebooks an earlier test opened (their tabs stay
    # in the page, hidden), and ".jp-Notebook .jp-Cell" found the earlier notebook's cells: the explorer test waited
    # for canvases in the dashboard notebook's hidden first cell (it passed alone, never after the dashboard test).
    page.goto(f"{lab['url']}/lab/tree/{name}?reset&token={TOKEN}")
    page.locator(".jp-Notebook .jp-Cell").first.wait_for()
    assert page.locator(".jp-NotebookPanel").count() == 1, "another notebook is open in the page"
    dialog = page.locator(".jp-Dialog")
    try:  # JupyterLab may ask which kernel to start (the notebook names python3): keep its choice
        dialog.get_by_role("button", name="Select", exact=True).click(timeout=20_000)
    except Exception:
        pass
    _wait_for(lambda: page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']").count(), 180, "the kernel to start")
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_role("menuitem", name="Run All Cells", exact=True).click()


def _cell(page, i: int):
    return page.locator(".jp-Notebook .jp-Cell").nth(i)


def _outputs(cell) -> str:
    "The text of a cell's outputs (not of its source)."
    return "\n".join(cell.locator(".jp-OutputArea").all_inner_texts())


def _fits(page, cell, selector: str) -> list[str]:
    "What of `selector` (canvases, images) in the cell's last output sticks out of the output area (empty: it all fits)."
    out = cell.locator(".jp-OutputArea-output").last.bounding_box()
    bad = []
    for el in cell.locator(selector).all():
        b = el.bounding_box()
        if b and b["width"] > 0 and (b["x"] < out["x"] - 1 or b["x"] + b["width"] > out["x"] + out["width"] + 1):
            bad.append(f"{selector} at x {b['x']:.0f}-{b['x'] + b['width']:.0f} outside the output area "
                       f"{out['x']:.0f}-{out['x'] + out['width']:.0f}")
    return bad


def test_runs_dashboard_in_jupyterlab(lab, page):
    "Run All: a launched run shows in the dashboard (state, loss plot) while the next cell still waits for it."
    from hyperkd.launch import Job
    _notebook(lab["root"] / "dashboard.ipynb", [
        "from hyperkd.distill import TrainConfig\nfrom hyperkd.launch import launch\nfrom hyperkd.explorer import RunsDashboard\n"
        "cfg = TrainConfig.for_mode('mae', name='live-run', runs_dir='runs', demo_scenes=1, demo_size=64, img_size=32,\n"
        "                           patch_size=8, batch_size=4, steps=100000, ckpt_every=1000, log_every=1, warmup_steps=2)\n"
        "job = launch(cfg)\ndash = RunsDashboard('runs', refresh_s=1)\ndash",
        "st = job.wait(timeout=900)  # the kernel is busy here until the test stops the run\nprint('FINAL', st['state'])",
        "dash.plots()"])
    _open_and_run_all(page, lab, "dashboard.ipynb")
    dash_cell, wait_cell, plots_cell = (_cell(page, i) for i in range(3))
    dash_cell.locator(".hkd-runs").first.wait_for(timeout=180_000)  # the Panel root rendered
    # no click from here on: the refresh thread must bring the run's state and its loss curve
    _wait_for(lambda: dash_cell.locator(".hkd-plots canvas").count() > 0
              and dash_cell.locator(".hkd-runs-table").get_by_text("running").count() > 0, 300, "the running run and its loss plot")
    page.wait_for_timeout(1500)
    page.screenshot(path=ARTIFACTS / "jupyterlab-runs-live.png")
    assert "FINAL" not in _outputs(wait_cell), "the run ended before the dashboard showed it"  # the kernel was busy
    assert dash_cell.locator(".hkd-runs").get_by_text("live-run").count() >= 1
    assert dash_cell.locator(".hkd-plots").get_by_text("No run selected").count() == 0
    assert dash_cell.locator("select option").all_inner_texts() == ["live-run"]  # no literal "[]" entry
    assert not _fits(page, dash_cell, ".hkd-runs canvas"), _fits(page, dash_cell, ".hkd-runs canvas")

    Job.attach(lab["root"] / "runs" / "live-run").stop()  # from outside the kernel, as another process would
    _wait_for(lambda: "FINAL stopped" in _outputs(wait_cell), 300, "the run to stop")
    _wait_for(lambda: dash_cell.locator(".hkd-runs-table").get_by_text("stopped").count() > 0, 180, "the dashboard to show 'stopped'")  # generous: a loaded 2-core CI machine took over 60 s
    _wait_for(lambda: plots_cell.locator(".jp-OutputArea-output canvas").count() > 0, 120, "dash.plots() to be drawn")
    assert ":Div" not in _outputs(plots_cell) and ":Layout" not in _outputs(plots_cell)
    page.wait_for_timeout(1000)
    page.screenshot(path=ARTIFACTS / "jupyterlab-runs-stopped.png", full_page=True)
    assert not _fits(page, plots_cell, "canvas"), _fits(page, plots_cell, "canvas")
    assert page.errors == [], page.errors
    assert page.blocked == [], page.blocked  # nothing was fetched from the internet


def test_explorer_in_jupyterlab(lab, page):
    "Run All: the explorer displayed in a cell renders offline, fits the output area and answers a click, still offline."
    _notebook(lab["root"] / "explorer.ipynb", [
        "from hyperkd.data import demo_scene\nfrom hyperkd.explorer import ReconstructionExplorer, open_explorer_inputs\n"
        "i = open_explorer_inputs(runs_dir='no-runs-here', cube=demo_scene(seed=1002, size=64))\n"
        "ex = ReconstructionExplorer(i.model, i.stats, i.cube, source=i.source, cube_source=i.cube_source)\nex"])
    _open_and_run_all(page, lab, "explorer.ipynb")
    cell = _cell(page, 0)
    parts = ("hkd-images", "hkd-spectrum", "hkd-psnr", "hkd-sam", "hkd-rgb", "hkd-aligned")  # each part drawn by Bokeh
    missing = lambda: [p for p in parts if cell.locator(f".{p} canvas").count() == 0]
    _wait_for(lambda: not missing() and cell.locator(".hkd-explorer").get_by_text("HyperKD explorer").count() > 0, 240,
              "every part of the explorer to be drawn (still missing: a canvas in each of .hkd-...)")
    page.wait_for_timeout(1500)
    page.screenshot(path=ARTIFACTS / "jupyterlab-explorer.png", full_page=True)
    assert not _fits(page, cell, ".hkd-explorer canvas"), _fits(page, cell, ".hkd-explorer canvas")
    assert page.errors == [], page.errors
    assert page.blocked == [], page.blocked
    pixel = cell.locator(".hkd-pixel").get_by_text(re.compile(r"row \d+, col \d+")).first  # inside the pane's shadow root
    text = pixel.inner_text()
    assert "row 32, col 32" in text, text  # the centre pixel of the 64 x 64 scene
    boxes = [b for b in (c.bounding_box() for c in cell.locator(".hkd-images canvas").all()) if b and b["width"] >= 150]
    box = min(boxes, key=lambda b: (round(b["y"] / 50), b["x"]))  # the top-left image: original
    page.mouse.click(box["x"] + 60, box["y"] + 70)  # inside the image, below its title: a round trip through the kernel's comm
    _wait_for(lambda: pixel.inner_text() != text, 120, "the pixel line to change after a click")
    assert "row 32, col 32" not in pixel.inner_text()
    page.wait_for_timeout(2000)  # what the update asks the browser to load comes within this
    page.screenshot(path=ARTIFACTS / "jupyterlab-explorer-clicked.png", full_page=True)
    assert page.errors == [], page.errors  # the update's stylesheets are inline (InlineMarkdown), not CDN links
    assert page.blocked == [], page.blocked
