"""The explorer and run dashboard: Viewer classes rendered to Bokeh models (parameters change -> the plotted
data follow), input errors, and (marked `browser`) the served apps driven in Debian's Chromium by Playwright."""
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

hv = pytest.importorskip("holoviews")
pn = pytest.importorskip("panel")
from bokeh.document import Document
from bokeh.models import GlyphRenderer, Image as BkImage, Plot
from panel.models.markup import HTML as Markdown

from hyperkd.data import demo_scene, write_cube
from hyperkd.distill import TrainConfig, Trainer
from hyperkd.explorer import (ReconstructionExplorer, RunsDashboard, latest_run, open_explorer_inputs, reconstruct_scene,
                              run_summary)

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    "A real (tiny, short) MAE run folder: config.yaml, metrics.jsonl, student.pt, reconstruction.png."
    runs = tmp_path_factory.mktemp("runs")
    cfg = TrainConfig.for_mode("mae", name="tiny-mae", runs_dir=str(runs), steps=20, img_size=32, patch_size=8,
                               demo_scenes=2, demo_size=64, batch_size=8, progress=False, ckpt_every=20, log_every=5)
    return Trainer(cfg, log=lambda *a: None).fit()


@pytest.fixture(scope="module")
def cube_file(tmp_path_factory):
    "A real GeoTIFF cube (float32, wavelengths in the metadata) of a held-out demo scene, written by our writer."
    path = tmp_path_factory.mktemp("cube") / "scene.tif"
    write_cube(demo_scene(seed=1002, size=80).reflectance, path)
    return path


@pytest.fixture(scope="module")
def explorer(trained_run, cube_file):
    hv.extension("bokeh", logo=False)
    i = open_explorer_inputs(trained_run, cube_file, log=lambda *a: None)
    return ReconstructionExplorer(i.model, i.stats, i.cube, source=i.source, cube_source=i.cube_source)


def _plots(root) -> dict:
    "Bokeh plots of a rendered page by title."
    return {p.title.text: p for p in root.select({"type": Plot}) if p.title is not None and p.title.text}


def _image_data(plot) -> np.ndarray:
    r = [r for r in plot.renderers if isinstance(r, GlyphRenderer) and isinstance(r.glyph, BkImage)][0]
    return np.asarray(r.data_source.data["image"][0])


def _find(plots, prefix):
    hits = [p for t, p in plots.items() if t.startswith(prefix)]
    assert len(hits) == 1, (prefix, list(plots))
    return hits[0]


def test_open_inputs_from_files(trained_run, cube_file):
    i = open_explorer_inputs(trained_run, cube_file, log=lambda *a: None)
    ref = demo_scene(seed=1002, size=80).reflectance
    assert i.cube.shape == (202, 80, 80) and i.source.endswith("student.pt") and i.cube_source == str(cube_file)
    np.testing.assert_allclose(i.cube.values, ref.values, rtol=1e-6)  # the file round-trips, rows north-up
    np.testing.assert_allclose(i.cube.wavelength.values, ref.wavelength.values)
    assert open_explorer_inputs(trained_run, cube_file, window=(10, 20, 30, 40), log=lambda *a: None).cube.shape == (202, 30, 40)
    assert open_explorer_inputs(trained_run, cube_file, max_size=48, log=lambda *a: None).cube.shape == (202, 48, 48)
    assert latest_run(trained_run.parent) == trained_run


def test_open_inputs_errors(trained_run, cube_file, tmp_path):
    bad = tmp_path / "broken.tif"
    bad.write_bytes(cube_file.read_bytes()[:5000])  # a truncated TIFF
    with pytest.raises(Exception, match="broken.tif"):
        open_explorer_inputs(trained_run, bad, log=lambda *a: None)
    few = tmp_path / "few.tif"
    write_cube(demo_scene(seed=1, size=32).reflectance.isel(band=slice(0, 40)), few)
    with pytest.raises(ValueError, match=r"few.tif: 40 bands, the model expects 202"):
        open_explorer_inputs(trained_run, few, log=lambda *a: None)
    with pytest.raises(ValueError, match="teacher.pt: not a hyperkd student checkpoint"):
        (tmp_path / "teacher.pt").write_bytes(b"not a checkpoint")
        open_explorer_inputs(tmp_path / "teacher.pt", cube_file, log=lambda *a: None)
    with pytest.raises(ValueError, match="window"):
        open_explorer_inputs(trained_run, cube_file, window=(500, 0), log=lambda *a: None)


def test_untrained_fallback_is_flagged(tmp_path):
    msgs = []
    i = open_explorer_inputs(runs_dir=tmp_path, cube=demo_scene(seed=5, size=40), log=msgs.append)
    assert i.source == "untrained" and "UNTRAINED" in msgs[0]
    ex = ReconstructionExplorer(i.model, i.stats, i.cube, source=i.source)
    assert "untrained model" in ex.summary()


def test_nodata_pixels_are_kept_out(trained_run, cube_file):
    i = open_explorer_inputs(trained_run, cube_file, log=lambda *a: None)
    cube = i.cube.copy()
    cube[:, 3:6, 3:6] = np.nan
    ex = ReconstructionExplorer(i.model, i.stats, cube)
    assert np.isnan(ex.band_array("original")[3:6, 3:6]).all() and np.isfinite(ex.band_array("reconstruction")).all()
    assert ex.metrics["all"]["n_pixels"] == 80 * 80 - 9
    assert "nodata" in ex.pixel_text((4, 4))


def test_band_change_updates_all_four_images(explorer):
    root = pn.panel(explorer).get_root(Document())
    for band in (10, 150):
        explorer.band = band
        plots = _plots(root)
        r = explorer.result
        np.testing.assert_array_equal(_image_data(_find(plots, "original")), np.flipud(r.original[band]))
        np.testing.assert_array_equal(_image_data(_find(plots, "reconstruction")), np.flipud(r.reconstruction[band]))
        np.testing.assert_allclose(_image_data(_find(plots, "|error|")), np.flipud(np.abs(r.reconstruction[band] - r.original[band])))
        masked = _image_data(_find(plots, "masked input"))
        np.testing.assert_array_equal(np.isnan(masked), np.flipud(r.mask))
        assert explorer.band_label(band) in _find(plots, "original").title.text
    four = [_find(plots, k) for k in ("original", "masked input", "reconstruction", "|error|")]
    assert len({id(p.x_range) for p in four}) == 1 and len({id(p.y_range) for p in four}) == 1  # shared zoom and pan


def test_mask_controls_rerun_the_model(explorer):
    root = pn.panel(explorer).get_root(Document())
    before = explorer.result.mask.copy()
    explorer.param.update(mask_strategy="gradient", mask_ratio=0.5, seed=3)
    r = explorer.result
    assert (r.mask != before).any() and abs(r.mask[:64, :64].mean() - 0.5) < 1e-9
    masked = _image_data(_find(_plots(root), "masked input"))
    np.testing.assert_array_equal(np.isnan(masked), np.flipud(r.mask))
    assert "gradient, ratio 0.50, seed 3" in explorer.summary()
    explorer.param.update(mask_strategy="random", mask_ratio=0.75, seed=0)


def test_tap_updates_spectrum(explorer):
    root = pn.panel(explorer).get_root(Document())
    explorer.tap.event(x=float(explorer.xs[7]), y=float(explorer.ys[30]))
    assert explorer.pixel == (30, 7)
    spec = _find(_plots(root), "spectrum at row 30, col 7")
    curves = [r.data_source.data for r in spec.renderers if isinstance(r, GlyphRenderer) and "wavelength (nm)" in r.data_source.data]
    ys = [np.asarray(d["reflectance"], float) for d in curves]
    want = explorer.result.original[:, 30, 7]
    assert any(np.allclose(np.sort(y[np.isfinite(y)]), np.sort(want)) for y in ys)  # the original spectrum is plotted
    teacher = [y for y in ys if len(y) == 6][0]
    np.testing.assert_allclose(teacher, explorer.result.aligned[:, 30, 7], rtol=1e-5)
    assert "row 30, col 7" in explorer.pixel_text()


def test_per_band_metric_curves(explorer):
    psnr = explorer.per_band["psnr"].to_numpy()
    err = explorer.result.reconstruction - explorer.result.original
    m = explorer.result.mask
    mse = (err[:, m] ** 2).mean(1)
    np.testing.assert_allclose(psnr, 10 * np.log10(explorer.metrics["data_range"] ** 2 / mse), rtol=1e-3)
    assert explorer.local_sam.shape == (202,) and np.isfinite(explorer.local_sam).all()


def test_runs_dashboard(trained_run, tmp_path):
    runs = tmp_path / "runs"
    shutil.copytree(trained_run, runs / trained_run.name)
    dash = RunsDashboard(runs, refresh_s=0)
    assert dash.runs == ["tiny-mae"] and run_summary(runs / "tiny-mae")["state"] == "finished"
    root = pn.panel(dash).get_root(Document())
    loss = _find(_plots(root), "total loss")
    xs = [np.asarray(r.data_source.data["step"]) for r in loss.renderers if isinstance(r, GlyphRenderer)]
    np.testing.assert_array_equal(xs[0], [5, 10, 15, 20])
    other = runs / "second"
    other.mkdir()
    (other / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "loss": 2.0 / s, "lr": 1e-3, "samples_per_s": 9.0}) + "\n"
                                                 for s in (1, 2, 3)))
    assert dash.refresh() and dash.param.runs.objects == ["tiny-mae", "second"]
    dash.runs = ["tiny-mae", "second"]
    loss = _find(_plots(root), "total loss")
    assert sorted(len(r.data_source.data["step"]) for r in loss.renderers if isinstance(r, GlyphRenderer)) == [3, 4]
    assert run_summary(other)["state"] == "live"


# --- the served apps in a real browser -------------------------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
needs_browser = pytest.mark.skipif(not Path(CHROMIUM).exists() and not os.environ.get("CI"),
                                   reason="Debian's chromium is not installed (.ci/run installs it)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Server:
    def __init__(self, cmd, port, path, log):
        self.url = f"http://localhost:{port}/{path}"
        self.log = log
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=open(log, "w"), stderr=subprocess.STDOUT,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})
        deadline = time.time() + 120
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {Path(log).read_text()[-3000:]}")
            try:
                urllib.request.urlopen(self.url, timeout=60).read()
                return
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"server did not answer in time: {Path(log).read_text()[-3000:]}")

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture
def browser_page():
    sync_api = pytest.importorskip("playwright.sync_api")
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
            "--disable-background-networking", "--disable-component-update"])
        page = browser.new_page(viewport={"width": 1600, "height": 1400})
        page.errors = []
        page.on("console", lambda m: page.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: page.errors.append(str(e)))
        page.set_default_timeout(120_000)  # as in test_jupyterlab: a loaded 2-core machine answers slowly
        yield page
        browser.close()


def _wait_for(fn, timeout=120.0, what="condition"):
    "Poll `fn` until it is truthy (generous: a loaded 2-core machine running 2 pytest-xdist workers answers slowly)."
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = fn()
        if v:
            return v
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.browser
@needs_browser
def test_explorer_in_browser(browser_page, trained_run, cube_file, tmp_path):
    port = _free_port()
    srv = _Server([sys.executable, "-m", "panel", "serve", "apps/explorer.py", "--port", str(port),
                   "--args", "--checkpoint", str(trained_run), "--cube", str(cube_file)], port, "explorer", tmp_path / "explorer.log")
    page = browser_page
    try:
        page.goto(srv.url)
        images = page.locator(".hkd-images")
        images.locator("canvas").first.wait_for(timeout=60000)
        page.wait_for_timeout(1500)
        page.screenshot(path=ARTIFACTS / "explorer-initial.png", full_page=True)
        before = images.screenshot()
        label = page.get_by_text("Band (wavelength · band)").first.inner_text()
        handle = page.locator(".noUi-handle").first
        handle.focus()
        for _ in range(25):
            page.keyboard.press("ArrowRight")
        _wait_for(lambda: page.get_by_text("Band (wavelength · band)").first.inner_text() != label, what="the band label to change")
        _wait_for(lambda: images.screenshot() != before, what="the band images to change")
        page.wait_for_timeout(500)
        page.screenshot(path=ARTIFACTS / "explorer-band-changed.png", full_page=True)

        pixel = page.locator(".hkd-pixel p").first  # the Markdown pane's text (inside its shadow root)
        text = pixel.inner_text()
        spectrum = page.locator(".hkd-spectrum")
        spec_before = spectrum.screenshot()
        box = images.locator("canvas").first.bounding_box()  # the first image plot: original
        page.mouse.click(box["x"] + 60, box["y"] + 70)
        _wait_for(lambda: pixel.inner_text() != text, what="the pixel line to change after a click")
        _wait_for(lambda: spectrum.screenshot() != spec_before, what="the spectrum plot to change after a click")
        page.screenshot(path=ARTIFACTS / "explorer-pixel-clicked.png", full_page=True)
        assert pixel.inner_text().startswith("Pixel row") and "SAM" in pixel.inner_text()
        assert page.errors == [], page.errors
    finally:
        srv.stop()


@pytest.mark.browser
@needs_browser
def test_runs_dashboard_in_browser(browser_page, trained_run, tmp_path):
    runs = tmp_path / "runs"
    shutil.copytree(trained_run, runs / "tiny-mae")
    port = _free_port()
    srv = _Server([sys.executable, "-m", "hyperkd.cli", "runs", "--runs-dir", str(runs), "--port", str(port), "--no-show",
                   "--refresh", "1"], port, "", tmp_path / "runs.log")
    page = browser_page
    try:
        page.goto(srv.url)
        page.locator(".hkd-plots canvas").first.wait_for(timeout=60000)
        assert page.get_by_text("tiny-mae").count() >= 1
        live = runs / "live-run"
        live.mkdir()
        (live / "metrics.jsonl").write_text(json.dumps({"step": 1, "loss": 1.0, "lr": 1e-4, "samples_per_s": 5.0}) + "\n")
        _wait_for(lambda: page.get_by_text("live-run").count() >= 1, what="a new run to be listed")
        page.wait_for_timeout(500)
        page.screenshot(path=ARTIFACTS / "runs-dashboard.png", full_page=True)
        assert page.errors == [], page.errors
    finally:
        srv.stop()


def test_hyperkd_explore_command(trained_run, tmp_path):
    "`hyperkd explore` serves a page (the server builds the explorer per request); a missing cube is a clear error."
    bad = subprocess.run([sys.executable, "-m", "hyperkd.cli", "explore", "--no-show", "--cube", str(tmp_path / "missing.tif"),
                          "--runs-dir", str(trained_run.parent)], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "missing.tif" in bad.stderr, bad.stderr
    port = _free_port()
    srv = _Server([sys.executable, "-m", "hyperkd.cli", "explore", "--no-show", "--port", str(port), "--runs-dir",
                   str(trained_run.parent), "--max-size", "64"], port, "", tmp_path / "explore.log")
    try:
        html = urllib.request.urlopen(srv.url, timeout=120).read().decode()
        assert "HyperKD explorer" in html and "bokeh" in html.lower()
    finally:
        srv.stop()


def test_enmap_product_with_224_bands(trained_run, tmp_path):
    "An EnMAP L2A product folder (all 224 bands) opens in the explorer with the run's 202 bands selected."
    from hyperkd.data import write_enmap_product
    from hyperkd.spectral import ENMAP
    want = demo_scene(seed=1003, size=48).reflectance
    full = want.drop_vars(["wavelength", "fwhm"]).reindex(band=list(ENMAP.band_names), fill_value=0.01)  # 22 absorption bands
    full = full.assign_coords(wavelength=("band", ENMAP.wavelengths), fwhm=("band", ENMAP.fwhm))
    prod = write_enmap_product(full, tmp_path)
    i = open_explorer_inputs(trained_run, prod, log=lambda *a: None)
    assert i.cube.shape == (202, 48, 48) and list(i.cube.band.values) == list(want.band.values)
    np.testing.assert_allclose(i.cube.values, want.values, atol=6e-5)  # int16 DNs with gain 1e-4
    ex = ReconstructionExplorer(i.model, i.stats, i.cube, cube_source=i.cube_source)
    assert ex.result.reconstruction.shape == (202, 48, 48) and str(prod) in ex.summary()


def test_runs_dashboard_shows_launched_jobs(tmp_path, monkeypatch):
    from hyperkd.launch import launch
    monkeypatch.setenv("HYPERKD_CACHE", str(tmp_path / "cache"))
    runs = tmp_path / "runs"
    cfg = TrainConfig.for_mode("mae", name="bad", runs_dir=str(runs), data=str(tmp_path / "missing.tif"), progress=False)
    dash = RunsDashboard(runs, refresh_s=0)
    assert dash.table().empty
    job = launch(cfg)
    assert dash.refresh() and dash.table().loc[0, "run"] == "bad"  # listed before it logs anything
    assert job.wait(timeout=300)["state"] == "failed"
    assert dash.refresh()  # the state changed without a metrics line: the page is redrawn
    row = dash.table().iloc[0]
    assert (row["state"], row["executor"]) == ("failed", "local") and "missing.tif" in row["error"]
    hv.extension("bokeh", logo=False)
    root = pn.panel(dash).get_root(Document())
    texts = [m.text for m in root.select({"type": Markdown}) if "hkd-failures" in (m.css_classes or [])]
    assert texts and "bad failed" in texts[0] and "missing.tif" in texts[0]
    assert not dash.refresh()  # nothing changed since


def test_runs_dashboard_shows_the_teacher_signal(tmp_path):
    run = tmp_path / "runs" / "kd"
    run.mkdir(parents=True)
    (run / "metrics.jsonl").write_text(json.dumps({"step": 1, "loss": 1.0, "distill": 0.2, "lr": 1e-3, "samples_per_s": 5.0}) + "\n")
    rep = {"layers": {"-1": {"constant_share": 0.853, "effective_rank": 2.6, "floor": 0.147, "dim": 128, "n_tokens": 512}},
           "input": {"bands": ["BLUE", "GREEN"], "mean": [1.05, 0.2], "std": [0.08, 0.9]}, "distill_target": "layernorm",
           "n_patches": 32, "warnings": ["the teacher's input is out of its range: BLUE mean +1.05"]}
    (run / "teacher_signal.json").write_text(json.dumps(rep))
    hv.extension("bokeh", logo=False)
    dash = RunsDashboard(tmp_path / "runs", refresh_s=0)
    text = dash.teacher_signal()
    assert "85.3%" in text and "2.6 / 128" in text and "0.147" in text and "BLUE +1.05" in text and "out of its range" in text
    root = pn.panel(dash).get_root(Document())
    assert any("85.3%" in m.text for m in root.select({"type": Markdown}) if "hkd-teacher-signal" in (m.css_classes or []))


def test_runs_dashboard_refreshes_inside_a_jupyter_kernel(tmp_path):
    "Displayed in a notebook (a real ipykernel, as JupyterLab runs it), the dashboard re-reads the runs while a cell runs."
    import nbformat
    from nbclient import NotebookClient
    runs = tmp_path / "runs"
    (runs / "live").mkdir(parents=True)
    line = lambda s: json.dumps({"step": s, "loss": 1.0 / s, "lr": 1e-3, "samples_per_s": 5.0}) + "\n"
    (runs / "live" / "metrics.jsonl").write_text(line(1))
    cells = [f"import panel as pn\nfrom hyperkd.explorer import RunsDashboard\npn.extension()\n"
             f"dash = RunsDashboard({str(runs)!r}, refresh_s=0.3)\nv0 = dash.version\ndash",
             f"import time\nwith open({str(runs / 'live' / 'metrics.jsonl')!r}, 'a') as f:\n    f.write({line(2)!r})\n"
             "time.sleep(8.0)  # the kernel is busy (as during Run All): the dashboard's thread re-reads meanwhile\n"
             "print('VERSION', dash.version > v0, list(dash.metrics('live').step))"]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    # store_widget_state=False: nbclient's widget-state hook fails on Panel's comm messages (JSON strings)
    NotebookClient(nb, timeout=120, kernel_name="python3", store_widget_state=False,
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    out = "".join(o.get("text", "") for o in nb.cells[1].outputs)
    assert "VERSION True [1, 2]" in out, nb.cells[1].outputs


def test_reconstruction_figure_keeps_its_text_inside(tmp_path):
    "Every title and label of reconstruction.png lies inside the image (the first title was clipped at the left edge)."
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.text import Text
    cfg = TrainConfig.for_mode("mae", name="fig", runs_dir=str(tmp_path), steps=1, img_size=32, patch_size=8, demo_scenes=1,
                               demo_size=64, batch_size=4, progress=False)
    fig = Trainer(cfg, log=lambda *a: None).reconstruction_figure(tmp_path / "reconstruction.png")
    assert (tmp_path / "reconstruction.png").stat().st_size > 0
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    W, H = canvas.get_width_height()
    texts = [fig._suptitle] + [a.title for a in fig.axes] + [fig.axes[4].xaxis.label] + fig.axes[4].get_legend().get_texts()
    texts = [t for t in texts if t is not None and t.get_text().strip()]
    assert texts[1].get_text().startswith("input")
    for t in texts:
        b = t.get_window_extent(canvas.get_renderer())
        assert b.x0 >= 0 and b.x1 <= W and b.y0 >= 0 and b.y1 <= H, (t.get_text(), b.bounds, (W, H))


def test_runs_dashboard_follows_the_newest_live_run(tmp_path):
    "Unpicked, the dashboard shows the newest live run, else the newest run; a pick stops that, an empty pick resumes it."
    runs = tmp_path / "runs"
    line = lambda s: json.dumps({"step": s, "loss": 1.0 / s, "lr": 1e-3, "samples_per_s": 5.0}) + "\n"
    for name in ("old", "done"):
        (runs / name).mkdir(parents=True)
        (runs / name / "metrics.jsonl").write_text(line(1))
        os.utime(runs / name / "metrics.jsonl", (time.time() - 600, time.time() - 600))  # not live any more
    (runs / "done" / "student.pt").write_bytes(b"")
    os.utime(runs / "old" / "metrics.jsonl", (time.time() - 900, time.time() - 900))
    dash = RunsDashboard(runs, refresh_s=0)
    assert dash.runs == ["done"] and dash.default_run() == "done"  # no live run: the newest one
    (runs / "live").mkdir()
    (runs / "live" / "metrics.jsonl").write_text(line(1))
    assert dash.refresh() and dash.runs == ["live"]
    dash.runs = ["old"]  # the user's pick
    with open(runs / "live" / "metrics.jsonl", "a") as f:
        f.write(line(2))
    assert dash.refresh() and dash.runs == ["old"]
    dash.runs = []
    dash.refresh()
    assert dash.runs == ["live"]


def test_runs_dashboard_refreshes_from_a_thread_outside_a_server(tmp_path):
    "Rendered outside a Bokeh server (a notebook), the re-reads run in a thread, not in an event loop that may be busy."
    runs = tmp_path / "runs"
    (runs / "live").mkdir(parents=True)
    line = lambda s: json.dumps({"step": s, "loss": 1.0 / s, "lr": 1e-3, "samples_per_s": 5.0}) + "\n"
    (runs / "live" / "metrics.jsonl").write_text(line(1))
    dash = RunsDashboard(runs, refresh_s=0.2)
    hv.extension("bokeh", logo=False)
    root = pn.panel(dash).get_root(Document())
    assert dash._thread is not None and dash._thread.is_alive() and dash._callback is None
    with open(runs / "live" / "metrics.jsonl", "a") as f:
        f.write(line(2))
    t0 = time.time()
    while list(dash.metrics("live").step) != [1, 2] and time.time() - t0 < 30:
        time.sleep(0.1)  # nothing else refreshes it: no event loop runs here
    assert list(dash.metrics("live").step) == [1, 2]
    steps = lambda: [list(r.data_source.data["step"]) for r in _find(_plots(root), "total loss").renderers
                     if isinstance(r, GlyphRenderer)]
    t0 = time.time()
    while steps() != [[1, 2]] and time.time() - t0 < 10:
        time.sleep(0.1)  # the thread redraws right after reading
    assert steps() == [[1, 2]]
    dash.stop_refreshing()
    dash._thread.join(5)
    assert not dash._thread.is_alive()


def test_click_in_a_notebook_loads_nothing_from_a_cdn(tmp_path, monkeypatch):
    "With inline resources (a notebook), the update after a click (the pixel line) keeps Panel's stylesheets inline: "
    "Markdown panes re-send their stylesheets as cdn.holoviz.org links when their text changes (4 failed requests offline)."
    from bokeh.models import ImportedStyleSheet, UIElement
    from panel.io.notebook import patch_inline_stylesheets  # what Panel does to a page drawn in a notebook
    i = open_explorer_inputs(runs_dir=tmp_path / "no-runs", cube=demo_scene(seed=1002, size=64), log=lambda *a: None)
    ex = ReconstructionExplorer(i.model, i.stats, i.cube, source=i.source, cube_source=i.cube_source)
    monkeypatch.setattr(pn.config, "inline", True)
    doc = Document()
    root = pn.panel(ex).get_root(doc)
    doc.add_root(root)
    cdn = lambda: sorted({s.url for s in root.references() if isinstance(s, ImportedStyleSheet) and str(s.url).startswith("http")})
    for m in root.select({"type": UIElement}):
        patch_inline_stylesheets(m)
    assert cdn() == []
    text = [m for m in root.select({"type": Markdown}) if "hkd-pixel" in m.css_classes][0]
    ex.tap.event(x=float(ex.xs[3]), y=float(ex.ys[5]))  # a click on a pixel
    assert "row 5, col 3" in text.text
    assert cdn() == [], cdn()
