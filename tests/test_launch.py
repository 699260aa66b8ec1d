"""Background runs: a stopped run resumes to the same weights, a torchrun launch equals one process, failures
are reported, and a second Python process finds a running job by its folder."""
import os
import subprocess
import sys
import time
from dataclasses import replace

import pytest
import torch

from hyperkd.distill import TrainConfig, read_metrics, train
from hyperkd.launch import Job, launch


def _cfg(tmp_path, name, **kw):
    base = dict(name=name, runs_dir=str(tmp_path / "runs"), demo_scenes=1, demo_size=64, img_size=32, patch_size=8,
                batch_size=4, steps=40, ckpt_every=50, log_every=1, warmup_steps=2, progress=False)
    return TrainConfig.for_mode("mae", **{**base, **kw})


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HYPERKD_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def _until_step(job, step, timeout=300):
    t0 = time.time()
    while job.status()["state"] == "running" and job.status()["step"] < step and time.time() - t0 < timeout:
        time.sleep(0.1)


@pytest.mark.slow
def test_stop_writes_checkpoint_and_resume_equals_uninterrupted(tmp_path):
    cfg = _cfg(tmp_path, "stopped")  # ckpt_every > steps: the only mid-run checkpoint is the one the stop writes
    job = launch(cfg)
    _until_step(job, 6)
    st = job.stop().wait(timeout=300)
    assert st["state"] == "stopped" and st["exit_code"] == 3, (st, job.tail(30))
    ck = torch.load(job.run_dir / "checkpoint.pt", weights_only=False)
    assert 6 <= ck["step"] < 40 and (job.run_dir / "stopped.json").exists()
    assert not (job.run_dir / "student.pt").exists()
    assert job.resume().wait(timeout=300)["state"] == "finished", job.tail(30)
    ref = launch(replace(cfg, name="uninterrupted"))  # same kind of process (threads), in one piece
    assert ref.wait(timeout=300)["state"] == "finished"
    a = torch.load(ref.run_dir / "student.pt", weights_only=False)["model"]
    b = torch.load(job.run_dir / "student.pt", weights_only=False)["model"]
    for k in a:
        assert torch.equal(a[k], b[k]), k  # bit for bit
    assert read_metrics(job.run_dir).step.tolist() == list(range(1, 41))


@pytest.mark.slow
def test_background_torchrun_equals_in_process(tmp_path):
    cfg = _cfg(tmp_path, "two", steps=6)
    job = launch(cfg, procs=2, port=29547)
    assert job.status()["state"] == "running"  # launch returned while the run goes on
    st = job.wait(timeout=600)
    assert st["state"] == "finished", job.tail(40)
    ref = train(replace(cfg, name="one"))
    m1, m2 = read_metrics(ref), read_metrics(job.run_dir)
    torch.testing.assert_close(torch.tensor(m1.loss.values), torch.tensor(m2.loss.values), rtol=2e-4, atol=1e-5)


def test_failed_run_reports_the_error(tmp_path):
    job = launch(_cfg(tmp_path, "bad", data=str(tmp_path / "missing.tif")))
    st = job.wait(timeout=300)
    assert st["state"] == "failed" and st["exit_code"] == 2
    assert "missing.tif" in st["error"]


def test_another_process_attaches_to_a_running_job(tmp_path):
    job = launch(_cfg(tmp_path, "attached", steps=2000))
    try:
        _until_step(job, 1)
        code = (f"from hyperkd.launch import Job; j = Job.attach({str(job.run_dir)!r}); s = j.status(); "
                "print(s['state'], s['step'] > 0)")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=os.environ)
        assert out.stdout.split() == ["running", "True"], out.stderr
    finally:
        assert job.stop().wait(timeout=300)["state"] == "stopped"
    with pytest.raises(FileNotFoundError, match="job.json"):
        Job.attach(tmp_path / "runs" / "never-launched")
    with pytest.raises(FileExistsError, match="already holds a run"):
        launch(_cfg(tmp_path, "attached"))
