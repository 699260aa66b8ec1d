"""The trainer's promises: exact resume after SIGKILL, torchrun/gloo equals one process, divergence stops
cleanly, and the CLI writes a complete run folder."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from hyperkd.distill import TrainConfig, Trainer, TrainingDiverged, read_metrics, train

TINY = ["data=demo", "demo_scenes=1", "demo_size=64", "img_size=32", "patch_size=8", "batch_size=4",
        "warmup_steps=2", "log_every=1", "teacher_steps=10"]


def _env(tmp_path):
    env = dict(os.environ, HYPERKD_CACHE=str(tmp_path / "cache"), OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return env


def _cli(args, tmp_path, **kw):
    return subprocess.Popen([sys.executable, "-m", "hyperkd.cli", *args], cwd=tmp_path, env=_env(tmp_path),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def _weights(run_dir):
    return torch.load(Path(run_dir) / "checkpoint.pt", weights_only=False)["model"]


@pytest.mark.slow
def test_resume_after_sigkill_matches_uninterrupted(tmp_path):
    common = ["mae", "--no-progress", "--runs-dir", "runs", "--set", *TINY, "steps=20", "ckpt_every=4"]
    ref = _cli(common[:1] + ["--name", "ref"] + common[1:], tmp_path)
    assert ref.wait(timeout=600) == 0, ref.stdout.read()
    killed = _cli(common[:1] + ["--name", "killed"] + common[1:], tmp_path)
    ck = tmp_path / "runs" / "killed" / "checkpoint.pt"
    t0 = time.time()
    while time.time() - t0 < 300 and killed.poll() is None:
        if ck.exists() and torch.load(ck, weights_only=False)["step"] >= 8:
            break
        time.sleep(0.05)
    assert killed.poll() is None, "run finished before it could be killed"
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    step_at_kill = torch.load(ck, weights_only=False)["step"]
    assert 8 <= step_at_kill < 20
    res = _cli(["mae", "--no-progress", "--resume", "runs/killed"], tmp_path)
    assert res.wait(timeout=600) == 0, res.stdout.read()
    a, b = _weights(tmp_path / "runs" / "ref"), _weights(tmp_path / "runs" / "killed")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)
    ma, mb = read_metrics(tmp_path / "runs" / "ref"), read_metrics(tmp_path / "runs" / "killed")
    assert mb.step.tolist() == list(range(1, 21)), "metrics continue without gaps or duplicates"
    torch.testing.assert_close(torch.tensor(ma.loss.values), torch.tensor(mb.loss.values), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_torchrun_gloo_two_processes_equal_one(tmp_path):
    args = ["--no-progress", "--runs-dir", "runs", "--set", *TINY, "steps=6", "ckpt_every=6", "batch_size=4"]
    one = _cli(["distill", "--name", "one", *args], tmp_path)
    assert one.wait(timeout=600) == 0, one.stdout.read()
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29531",
                          "-m", "hyperkd.cli", "distill", "--name", "two", *args], cwd=tmp_path, env=_env(tmp_path),
                         capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stdout[-3000:] + two.stderr[-3000:]
    m1, m2 = read_metrics(tmp_path / "runs" / "one"), read_metrics(tmp_path / "runs" / "two")
    assert json.loads((tmp_path / "runs" / "two" / "run.json").read_text())["world_size"] == 2
    for term in ("loss", "mse", "ssim", "kl", "sam", "distill"):
        torch.testing.assert_close(torch.tensor(m1[term].values), torch.tensor(m2[term].values), rtol=2e-4, atol=1e-5,
                                   msg=term)


def test_divergence_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setenv("HYPERKD_CACHE", str(tmp_path / "cache"))
    cfg = TrainConfig.for_mode("mae", name="nan", runs_dir=str(tmp_path), demo_scenes=1, demo_size=64, img_size=32,
                               patch_size=8, batch_size=4, steps=10, ckpt_every=2, log_every=1, progress=False)
    tr = Trainer(cfg)
    real = tr.compute_loss

    def poisoned(x, micro, valid=None):
        total, terms = real(x, micro, valid)
        return (total * float("nan") if tr.step == 5 else total), terms
    tr.compute_loss = poisoned
    with pytest.raises(TrainingDiverged, match="at step 6.*checkpoint.pt"):
        tr.fit()
    ck = torch.load(tmp_path / "nan" / "checkpoint.pt", weights_only=False)
    assert ck["step"] == 4 and all(torch.isfinite(v).all() for v in ck["model"].values())
    assert read_metrics(tmp_path / "nan").step.max() == 5


def test_refuses_to_overwrite_a_run_and_resume_without_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setenv("HYPERKD_CACHE", str(tmp_path / "cache"))
    cfg = TrainConfig.for_mode("mae", name="r", runs_dir=str(tmp_path), demo_scenes=1, demo_size=64, img_size=32,
                               patch_size=8, batch_size=4, steps=2, ckpt_every=2, progress=False)
    run = train(cfg)
    assert {p.name for p in run.iterdir()} >= {"config.yaml", "band_stats.json", "metrics.jsonl", "checkpoint.pt",
                                               "student.pt", "reconstruction.png", "run.json"}
    with pytest.raises(FileExistsError, match="already holds a run"):
        Trainer(cfg)
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        Trainer(TrainConfig.for_mode("mae", name="none", runs_dir=str(tmp_path)), resume=True)


def test_dn_loader_trains_identically(tmp_path, spectral_earth_folder):
    "Raw int16 pixels normalised on the device (loader='dn', what CUDA runs use) give the same run as loader='float'."
    import numpy as np
    runs = {}
    for loader in ("float", "dn"):
        cfg = TrainConfig.for_mode("mae", name=loader, runs_dir=str(tmp_path / "runs"), data=f"spectral-earth:{spectral_earth_folder}",
                                   img_size=32, patch_size=8, batch_size=2, steps=3, log_every=1, ckpt_every=3, progress=False,
                                   loader=loader)
        t = Trainer(cfg, log=lambda *a: None)
        assert t.dataset.output == loader and t.dataset.sources[0].layout is not None
        runs[loader] = t.fit()
    a, b = read_metrics(runs["float"]), read_metrics(runs["dn"])
    assert np.array_equal(a["loss"].to_numpy(), b["loss"].to_numpy())
    wa, wb = _weights(runs["float"]), _weights(runs["dn"])
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    with pytest.raises(ValueError, match="loader='dn': output='dn' needs file sources"):
        Trainer(TrainConfig.for_mode("mae", runs_dir=str(tmp_path / "runs"), name="demo-dn", loader="dn", data="demo",
                                     demo_scenes=1, demo_size=64, img_size=32, progress=False), log=lambda *a: None)


def test_checkpoint_draws_the_figure_for_live_dashboards(tmp_path):
    "A run in progress has a reconstruction.png from its first checkpoint (redrawn at most once a minute)."
    cfg = TrainConfig.for_mode("mae", name="live", runs_dir=str(tmp_path), data="demo", demo_scenes=1, demo_size=64,
                               img_size=32, patch_size=8, batch_size=4, steps=2, progress=False)
    t = Trainer(cfg, log=lambda *a: None)
    t.save_checkpoint()
    fig = tmp_path / "live" / "reconstruction.png"
    assert fig.read_bytes()[:4] == b"\x89PNG" and not (tmp_path / "live" / "student.pt").exists()
    mtime = fig.stat().st_mtime_ns
    t.save_checkpoint()  # within the minute: not redrawn
    assert fig.stat().st_mtime_ns == mtime


def test_compiled_loss_equals_eager_for_both_ssim_windows(tmp_path, monkeypatch):
    """compile_loss='on' (the CUDA default, here on the CPU) gives the eager loss terms and gradients, with the
    Gaussian SSIM (the default terms, and the cheaper ones: SSIM of band means, KL and SAM on drawn pixels), and the
    per-patch SSIM; a 'patch' run trains and logs every term."""
    monkeypatch.setenv("HYPERKD_CACHE", str(tmp_path / "cache"))
    common = dict(runs_dir=str(tmp_path), data="demo", demo_scenes=1, demo_size=64, img_size=32, patch_size=8,
                  batch_size=4, teacher_steps=4, progress=False, steps=2, log_every=1, ckpt_every=2)
    fast = dict(ssim_band_bin=16, spectral_pixel_stride=4)
    for window, strides in (("gaussian", {}), ("gaussian", fast), ("patch", {})):
        trainers = {c: Trainer(TrainConfig.for_mode("distill", name=f"{window}-{len(strides)}-{c}", compile_loss=c,
                                                    ssim_window=window, **strides, **common), log=lambda *a: None)
                    for c in ("off", "on")}
        assert trainers["off"].loss_fn.spectral_pixel_stride == (4 if strides else 1)
        x = torch.stack([trainers["off"].dataset[i] for i in range(4)])
        out = {}
        for c, tr in trainers.items():
            tr.opt.zero_grad()
            total, terms = tr.compute_loss(x, 0)
            total.backward()
            out[c] = terms, [p.grad.clone() for p in tr.model.parameters() if p.grad is not None]
        assert sorted(out["on"][0]) == ["distill", "kl", "mse", "sam", "ssim"]
        for k in out["off"][0]:
            torch.testing.assert_close(out["on"][0][k], out["off"][0][k], rtol=1e-4, atol=1e-6)
        for a, b in zip(out["on"][1], out["off"][1]):
            torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-6)
    assert trainers["off"].loss_fn.ssim_window == "patch"
    m = read_metrics(trainers["off"].fit())
    assert {"ssim", "kl", "sam", "distill"} <= set(m.columns) and m.ssim.notna().all() and (m.ssim > 0).all()
    with pytest.raises(ValueError, match="ssim_window must be 'gaussian' or 'patch'"):
        TrainConfig(ssim_window="box")


def test_nan_reconstruction_stops_the_run(tmp_path, monkeypatch):
    "A model whose output turns NaN stops with TrainingDiverged (the MSE must not average NaN pixels away as nodata)."
    monkeypatch.setenv("HYPERKD_CACHE", str(tmp_path / "cache"))
    cfg = TrainConfig.for_mode("mae", name="nanw", runs_dir=str(tmp_path), demo_scenes=1, demo_size=64, img_size=32,
                               patch_size=8, batch_size=4, steps=6, ckpt_every=2, log_every=1, progress=False)
    tr = Trainer(cfg, log=lambda *a: None)
    real = tr.compute_loss

    def poisoned(x, micro, valid=None):
        if tr.step == 3:
            with torch.no_grad():
                for p in tr.model.parameters():
                    p.fill_(float("nan"))
        return real(x, micro, valid)
    tr.compute_loss = poisoned
    with pytest.raises(TrainingDiverged, match="at step 4"):
        tr.fit()
    ck = torch.load(tmp_path / "nanw" / "checkpoint.pt", weights_only=False)
    assert ck["step"] == 2 and all(torch.isfinite(v).all() for v in ck["model"].values())


@pytest.mark.slow
def test_second_small_teacher_does_not_collide(tmp_path):
    """Two distills with different seeds in one runs folder each need their own small teacher: both succeed, the
    teachers' pretraining runs live in the cache (not the user's runs folder), and an interrupted one resumes."""
    common = ["--no-progress", "--runs-dir", "runs", "--set", *TINY, "steps=2", "teacher_steps=4", "ckpt_every=2"]
    for seed in (0, 1):
        p = _cli(["distill", *common, f"seed={seed}"], tmp_path)
        out = p.communicate(timeout=600)[0]
        assert p.returncode == 0, out
        assert "pretraining one" in out
    assert sorted(p.name for p in (tmp_path / "runs").iterdir() if "teacher" in p.name) == []
    teacher_runs = sorted((tmp_path / "cache" / "teacher-runs").iterdir())
    assert [p.name.split("-seed")[1] for p in teacher_runs] == ["0-ln5-aug", "1-ln5-aug"]
    assert len(list((tmp_path / "cache" / "teachers").glob("*.pt"))) == 2
    # an interrupted pretraining (checkpoint, no teacher.pt, nothing cached) resumes instead of failing
    (teacher_runs[1] / "teacher.pt").unlink()
    next((tmp_path / "cache" / "teachers").glob("*seed1-ln5-aug.pt")).unlink()
    ck = torch.load(teacher_runs[1] / "checkpoint.pt", weights_only=False)
    ck["step"] = 2  # as if killed after the step-2 checkpoint
    torch.save(ck, teacher_runs[1] / "checkpoint.pt")
    p = _cli(["distill", *common, "seed=1"], tmp_path)
    out = p.communicate(timeout=600)[0]
    assert p.returncode == 0, out
    assert "Resuming the interrupted teacher pretraining" in out
    assert read_metrics(teacher_runs[1]).step.max() == 4


def test_teacher_input_out_of_range_is_flagged_with_the_likely_cause(tmp_path, monkeypatch):
    "A cube in radiance-like units (reflectance x 100, as a file with a missing scale factor gives) gets a warning."
    from hyperkd.data import demo_scene, write_cube
    monkeypatch.setenv("HYPERKD_CACHE", str(tmp_path / "cache"))
    scene = demo_scene(seed=7, size=64).reflectance
    write_cube(scene, tmp_path / "ok.tif")
    write_cube(scene * 100.0, tmp_path / "radiance.tif")
    reports, logs = {}, []
    for name in ("ok", "radiance"):
        cfg = TrainConfig.for_mode("distill", name=name, runs_dir=str(tmp_path / "runs"), data=str(tmp_path / f"{name}.tif"),
                                   img_size=32, patch_size=8, batch_size=2, steps=1, teacher_steps=10, progress=False)
        t = Trainer(cfg, log=logs.append)
        reports[name] = json.loads((t.run_dir / "teacher_signal.json").read_text())
    assert not any("out of its range" in w for w in reports["ok"]["warnings"]), reports["ok"]
    bad = [w for w in reports["radiance"]["warnings"] if "out of its range" in w]
    assert bad and "radiance or digital numbers" in bad[0], reports["radiance"]["warnings"]
    assert any(l.startswith("WARNING: the teacher's input is out of its range") for l in logs)
    sig = next(iter(reports["ok"]["layers"].values()))
    assert 0 <= sig["constant_share"] <= 1 and 1 <= sig["effective_rank"] <= sig["dim"] and sig["floor"] >= 0


@pytest.mark.slow
def test_standardized_targets_resume_exactly(tmp_path, monkeypatch):
    "distill_target='standardize' keeps running statistics: they are checkpointed, so a resumed run equals one piece."
    monkeypatch.setenv("HYPERKD_CACHE", str(tmp_path / "cache"))
    base = dict(runs_dir=str(tmp_path / "runs"), data="demo", demo_scenes=1, demo_size=64, img_size=32, patch_size=8,
                batch_size=4, steps=6, ckpt_every=3, log_every=1, warmup_steps=2, teacher_steps=10, progress=False,
                distill_target="standardize")
    from hyperkd.distill import TrainingStopped, graceful_stop, request_stop, resume
    whole = train(TrainConfig.for_mode("distill", name="whole", **base))
    t = Trainer(TrainConfig.for_mode("distill", name="part", **base), log=lambda *a: None)
    with graceful_stop(), pytest.raises(TrainingStopped):
        request_stop()  # as a signal would: the run stops after its first step, with a checkpoint
        t.fit()
    part = resume(t.run_dir)
    a, b = read_metrics(whole), read_metrics(part)
    assert a.distill.tolist() == b.distill.tolist() and a.step.tolist() == b.step.tolist()
    ck = torch.load(part / "checkpoint.pt", weights_only=False)
    assert int(ck["target_norm"]["0.count"]) == 6
    with pytest.raises(ValueError, match="distill_target must be one of"):
        TrainConfig.for_mode("distill", distill_target="whiten")


def test_shipped_teacher_knows_more_than_trivial_predictors():
    "The teacher in the package beats the per-band mean and a bilinear fill on held-out rows, as its JSON says."
    from hyperkd.distill import AugmentedScenes, shipped_teacher_path, teacher_skill
    from hyperkd.models import load_prithvi
    from hyperkd.samples import load_multispectral_scene
    path = shipped_teacher_path()
    made = json.loads(path.with_suffix(".json").read_text())
    assert path.stat().st_size < 5 * 2**20 and made["steps"] == 30000
    held = AugmentedScenes([load_multispectral_scene(n) for n in ("sentinel2", "landsat8")], 32).heldout_patches()
    sk = teacher_skill(load_prithvi(path, num_frames=1, img_size=32), held)
    assert sk["teacher"] < 0.85 * min(sk["band_mean"], sk["bilinear_fill"]), sk
    assert abs(sk["teacher"] - made["skill"]["teacher"]) < 1e-5
    # the trivial predictors are what they say: exact on images they can represent
    flat = torch.full((2, 6, 32, 32), 0.2)
    trivial = teacher_skill(load_prithvi(path, num_frames=1, img_size=32), flat)
    assert trivial["band_mean"] < 1e-12 and trivial["bilinear_fill"] < 1e-12


def test_teacher_layers_half_depth_and_errors():
    from hyperkd.distill import resolve_layers
    assert resolve_layers(("half",), 4) == (1,) and resolve_layers(("half",), 12) == (5,) and resolve_layers(("half", -1), 24) == (11, -1)
    with pytest.raises(ValueError, match="not a block of this 4-block teacher"):
        resolve_layers((7,), 4)
    assert TrainConfig().teacher_layers == ("half",)


# --- issue #19: nodata reaches no loss; configurations that train nothing are refused

SMALL = ["img_size=16", "patch_size=8", "batch_size=2", "steps=2", "log_every=1", "ckpt_every=2", "warmup_steps=1"]


def _nan_rows(cube, rows=3):
    cube = cube.copy()
    cube[:, :rows, :] = float("nan")
    return cube


def _other_sensor_cube(n=32):
    "A 10 nm imaging spectrometer (400-2450 nm) holding real earthlib spectra: another sensor than EnMAP."
    import numpy as np
    import xarray as xr
    from hyperkd.data import load_spectral_library
    lib = load_spectral_library()
    keep = (lib.wavelength.values >= 400) & (lib.wavelength.values <= 2450)
    spectra = lib.values[np.linspace(0, lib.sizes["spectrum"] - 1, n * n).astype(int)][:, keep]
    wl = lib.wavelength.values[keep]
    return xr.DataArray(spectra.T.reshape(-1, n, n).astype(np.float32), dims=("band", "y", "x"),
                        coords={"band": [f"B{i + 1}" for i in range(wl.size)], "wavelength": ("band", wl),
                                "fwhm": ("band", np.full(wl.size, 10.0))})


@pytest.mark.slow
def test_cli_trains_on_a_float_file_with_nan_nodata(tmp_path):
    "`hyperkd mae --set data=nan.tif`: write_cube's float32 file with NaN nodata trains (no 'Loss became nan at step 1')."
    from hyperkd.data import demo_scene, write_cube
    write_cube(_nan_rows(demo_scene(seed=1, size=32).reflectance), tmp_path / "nan.tif", dtype="float32")
    p = _cli(["mae", "--no-progress", "--name", "nan", "--runs-dir", "runs", "--set", "data=nan.tif", *SMALL], tmp_path)
    out = p.communicate(timeout=600)[0]
    assert p.returncode == 0, out
    m = read_metrics(tmp_path / "runs" / "nan")
    assert m.step.tolist() == [1, 2] and m.loss.notna().all() and (m.loss > 0).all()


@pytest.mark.slow
def test_cli_trains_another_sensors_cube_with_nodata_resampled_srf(tmp_path):
    "Any cube with nodata trained with resample=srf: the resample cache (float32, NaN nodata) trains."
    from hyperkd.data import write_cube
    write_cube(_nan_rows(_other_sensor_cube()), tmp_path / "other.tif", dtype="float32")
    p = _cli(["mae", "--no-progress", "--name", "srf", "--runs-dir", "runs", "--set", "data=other.tif", "resample=srf",
              *SMALL], tmp_path)
    out = p.communicate(timeout=600)[0]
    assert p.returncode == 0, out
    assert read_metrics(tmp_path / "runs" / "srf").loss.notna().all()


@pytest.mark.parametrize("setting, message", [
    ("mask_ratio=0", "mask_ratio=0: masks 0 of the 4 patches"),
    ("mask_ratio=0.1", "mask_ratio=0.1: masks 0 of the 4 patches"),
    ("steps=0", "steps=0: expected a whole number ≥ 1"),
    ("lr=0", "lr=0: expected a number > 0"),
    ("batch_size=0", "batch_size=0"),
    ("grad_accum=0", "grad_accum=0"),
    ("loss.mse=0", "Every loss term is off"),
    ("clip_grad=-1", "flip the gradient"),
    ("max_nodata=-0.5", "max_nodata=-0.5"),
    ("demo_size=8", "demo_size=8 is smaller than img_size=16"),
])
def test_cli_refuses_a_configuration_that_trains_nothing(tmp_path, monkeypatch, capsys, setting, message):
    "Refused before the first step, with the setting named: exit status 2, no run folder."
    from hyperkd.cli import main
    monkeypatch.chdir(tmp_path)
    rc = main(["mae", "--no-progress", "--name", "r", "--set", "demo_scenes=1", "demo_size=32", *SMALL, setting])
    assert rc == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_cli_names_the_product_with_dead_bands(tmp_path, monkeypatch, capsys):
    "An EnMAP product whose B130-B136 are nodata everywhere, trained with bands=enmap-224."
    import numpy as np
    from hyperkd.cli import main
    from hyperkd.data import write_enmap_product
    import xarray as xr
    from hyperkd.spectral import ENMAP
    values = np.random.default_rng(2).uniform(0.02, 0.5, (224, 32, 32)).astype(np.float32)
    values[129:136] = np.nan
    cube = xr.DataArray(values, dims=("band", "y", "x"), coords={"band": list(ENMAP.band_names),
                        "wavelength": ("band", ENMAP.wavelengths), "fwhm": ("band", ENMAP.fwhm)})
    prod = write_enmap_product(cube, tmp_path)
    monkeypatch.chdir(tmp_path)
    assert main(["mae", "--no-progress", "--set", f"data={prod}", "bands=enmap-224", *SMALL]) == 2
    err = capsys.readouterr().err
    assert prod.name in err and "B130-B136" in err and "bands=enmap-202" in err and "[0, 1, 2, 3, 4]" not in err


def test_divergence_at_step_one_points_to_no_missing_checkpoint(tmp_path, monkeypatch):
    "A run that diverges at step 1 says no checkpoint exists yet (none does), and that the data is the likely cause."
    monkeypatch.setenv("HYPERKD_CACHE", str(tmp_path / "cache"))
    cfg = TrainConfig.for_mode("mae", name="d1", runs_dir=str(tmp_path), demo_scenes=1, demo_size=32, img_size=16,
                               patch_size=8, batch_size=2, steps=4, ckpt_every=2, log_every=1, progress=False)
    tr = Trainer(cfg, log=lambda *a: None)
    real = tr.compute_loss
    tr.compute_loss = lambda *a: (lambda t: (t[0] * float("nan"), t[1]))(real(*a))
    with pytest.raises(TrainingDiverged, match="at step 1") as e:
        tr.fit()
    assert "no checkpoint has been written yet" in str(e.value) and "checkpoint.pt" not in str(e.value)
    assert "not the cause" in str(e.value)
    assert not (tmp_path / "d1" / "checkpoint.pt").exists()


def test_resuming_a_finished_run_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("HYPERKD_CACHE", str(tmp_path / "cache"))
    from hyperkd.distill import resume
    cfg = TrainConfig.for_mode("mae", name="done", runs_dir=str(tmp_path), demo_scenes=1, demo_size=32, img_size=16,
                               patch_size=8, batch_size=2, steps=2, ckpt_every=2, progress=False)
    run = train(cfg)
    with pytest.raises(ValueError, match=r"the run is finished \(step 2 of steps=2\); nothing to train"):
        resume(run)
    assert read_metrics(resume(run, steps=3)).step.max() == 3


def test_nodata_is_left_out_of_the_loss(tmp_path, monkeypatch):
    "Nodata pixels reach the model filled (0) but the loss's target as NaN: no term learns the fill value there."
    import numpy as np
    import xarray as xr
    from hyperkd.data import demo_scene, write_cube
    monkeypatch.setenv("HYPERKD_CACHE", str(tmp_path / "cache"))
    cube = demo_scene(size=32, bands="enmap-202", seed=3).reflectance.where(xr.DataArray(np.arange(32) >= 4, dims="y"))
    path = write_cube(cube, tmp_path / "border.tif", dtype="float32")  # NaN nodata in the 4 top rows
    cfg = TrainConfig.for_mode("mae", name="nd", runs_dir=str(tmp_path), data=str(path), img_size=16, patch_size=8,
                               batch_size=2, steps=2, max_nodata=0.5, progress=False, log_every=1)
    tr = Trainer(cfg, log=lambda *a: None)
    seen = []
    real = tr.train_step._loss  # the step's loss module (hyperkd.step)
    tr.train_step._loss = lambda pred, target, *a: (seen.append(target.detach().clone()), real(pred, target, *a))[1]
    tr.fit()
    target = torch.cat(seen)
    nodata = torch.isnan(target).all(1)  # (B, H, W): every band NaN, or none
    assert torch.isnan(target).any(1).eq(nodata).all()
    per_patch = sorted(set(nodata.sum((1, 2)).tolist()))
    assert set(per_patch) <= {0, 4 * 16} and 4 * 16 in per_patch  # a top patch: its 4 nodata rows, and nothing else
    assert torch.isfinite(target[~nodata[:, None].expand_as(target)]).all()
    assert all(np.isfinite(v) for v in read_metrics(tmp_path / "nd")["loss"])


def test_image_size_not_a_multiple_of_the_patch_is_named_first():
    "A 12-px image with 8-px patches is refused for its size, not blamed on a mask_ratio the user never set."
    with pytest.raises(ValueError, match="img_size 12 must be a multiple of patch_size 8"):
        TrainConfig.for_mode("mae", img_size=12, patch_size=8)
