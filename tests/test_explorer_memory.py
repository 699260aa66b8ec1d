"""Issue #19 part 5: the explorer's memory follows the window, not the scene; the resample cache can be measured
and cleared."""
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from hyperkd.cubes import cache_info, clear_cache, open_cube
from hyperkd.spectral import enmap_preset, resample, sensor_from_cube


def _scene(path: Path, size: int, bands: int = 100) -> Path:
    wl = np.linspace(390, 2510, bands)
    rng = np.random.default_rng(0)
    (1000 + rng.integers(0, 3000, (bands, size, size))).astype("<i2").tofile(path)
    path.with_suffix(".hdr").write_text(
        f"ENVI\nsamples = {size}\nlines = {size}\nbands = {bands}\nheader offset = 0\nfile type = ENVI Standard\n"
        "data type = 2\ninterleave = bsq\nbyte order = 0\nwavelength units = Nanometers\nreflectance scale factor = 10000\n"
        "wavelength = {" + ", ".join(f"{w:.3f}" for w in wl) + "}\nfwhm = {" + ", ".join(["30"] * bands) + "}\n")
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from hyperkd.distill import TrainConfig, Trainer
    root = tmp_path_factory.mktemp("runs")
    cfg = TrainConfig.for_mode("mae", name="mem", runs_dir=str(root), steps=2, img_size=32, patch_size=8, demo_scenes=1,
                               demo_size=64, batch_size=2, progress=False, ckpt_every=2, log_every=1)
    return Trainer(cfg, log=lambda *a: None).fit()


def test_explorer_window_memory_and_cache(tmp_path, monkeypatch, run):
    from hyperkd.explorer import open_explorer_inputs
    monkeypatch.setenv("HYPERKD_CACHE", str(tmp_path / "cache"))
    scene = _scene(tmp_path / "scene.bsq", 512)
    full_f32 = 100 * 512 * 512 * 4  # the whole scene as float32: 105 MB; resampled to 202 bands: 212 MB
    tracemalloc.start()
    i = open_explorer_inputs(checkpoint=run, cube=scene, resample="srf", teacher=None, window=(0, 0, 32, 32),
                             log=lambda *a: None)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert i.cube.shape == (202, 32, 32)
    assert peak < full_f32, f"peak {peak / 2**20:.0f} MiB: the whole scene was resampled before the window was cropped"
    assert cache_info()["files"] == 0  # no whole-scene copy written to the cache
    c = open_cube(scene).sel(y=i.cube.y, x=i.cube.x)
    want = resample(c.values, sensor_from_cube(c), enmap_preset("enmap-202"), "srf")
    np.testing.assert_allclose(i.cube.values, want, rtol=1e-4, atol=1e-6)
    assert 0.1 <= float(np.nanmean(i.cube.values)) <= 0.4  # reflectance, the header's scale factor applied


def test_cache_info_and_clear(tmp_path, monkeypatch):
    from hyperkd.cubes import to_preset
    monkeypatch.setenv("HYPERKD_CACHE", str(tmp_path / "cache"))
    scene = _scene(tmp_path / "small.bsq", 16)
    assert cache_info()["files"] == 0
    logs = []
    to_preset(open_cube(scene), "enmap-202", "srf", log=logs.append)
    info = cache_info()
    assert info["files"] == 1 and info["bytes"] > 202 * 16 * 16 * 4 * 0.9
    assert any("clear_cache" in m for m in logs)
    part = to_preset(open_cube(scene).isel(y=slice(0, 8)), "enmap-202", "srf", log=logs.append)
    assert part.sizes["y"] == 8 and cache_info()["files"] == 2  # a crop never reuses the whole file's entry
    assert clear_cache()["files"] == 2 and cache_info() == {**info, "files": 0, "bytes": 0}
