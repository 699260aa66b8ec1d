"""Background runs: a stopped run resumes to the same weights, a torchrun launch equals one process, failures
are reported, and a second Python process finds a running job by its folder."""
import json
import os
import subprocess
import sys
import time
from dataclasses import replace

import numpy as np
import pytest
import torch

from hyperkd.distill import TrainConfig, read_metrics, train
from hyperkd.launch import Job, launch


def _cfg(tmp_path, name, **kw):
    base = dict(name=name, runs_dir=str(tmp_path / "runs"), demo_scenes=1, demo_size=64, img_size=32, patch_size=8,
                batch_size=4, steps=16, ckpt_every=50, log_every=1, warmup_steps=2, progress=False)
    return TrainConfig.for_mode("mae", **{**base, **kw})


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HYPERKD_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The stopped and the preempted runs' reference: the same run in one piece, launched in a process of the same kind
    (one process, one thread). Both tests compare with it bit for bit; it is trained once."""
    tmp = tmp_path_factory.mktemp("uninterrupted")
    ref = launch(_cfg(tmp, "uninterrupted"), env={"HYPERKD_CACHE": str(tmp / "cache"), "OMP_NUM_THREADS": "1"})
    assert ref.wait(timeout=300)["state"] == "finished", ref.tail(30)
    return ref


def _until_step(job, step, timeout=300):
    t0 = time.time()
    while job.status()["state"] == "running" and job.status()["step"] < step and time.time() - t0 < timeout:
        time.sleep(0.1)


@pytest.mark.slow
def test_stop_writes_checkpoint_and_resume_equals_uninterrupted(tmp_path, uninterrupted):
    cfg = _cfg(tmp_path, "stopped")  # ckpt_every > steps: the only mid-run checkpoint is the one the stop writes
    job = launch(cfg)
    _until_step(job, 6)
    st = job.stop().wait(timeout=300)
    assert st["state"] == "stopped" and st["exit_code"] == 3, (st, job.tail(30))
    ck = torch.load(job.run_dir / "checkpoint.pt", weights_only=False)
    assert 6 <= ck["step"] < cfg.steps and (job.run_dir / "stopped.json").exists()
    assert not (job.run_dir / "student.pt").exists()
    assert job.resume().wait(timeout=300)["state"] == "finished", job.tail(30)
    ref = uninterrupted  # same kind of process (threads), in one piece
    a = torch.load(ref.run_dir / "student.pt", weights_only=False)["model"]
    b = torch.load(job.run_dir / "student.pt", weights_only=False)["model"]
    for k in a:
        assert torch.equal(a[k], b[k]), k  # bit for bit
    assert read_metrics(job.run_dir).step.tolist() == list(range(1, cfg.steps + 1))


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


# --- the Slurm path, through submitit ---------------------------------------------------------------------------------

@pytest.mark.slow
def test_submitit_requeue_after_preemption_equals_uninterrupted(tmp_path, uninterrupted):
    cfg = _cfg(tmp_path, "preempted")  # ckpt_every > steps: the only mid-run checkpoint is the one the preemption writes
    job = launch(cfg, executor="submitit-local", procs=1)
    _until_step(job, 6)
    job.preempt()  # Slurm's warning before a time limit / preemption: SIGUSR2 to every task
    st = job.wait(timeout=600)
    log = job.tail(60)
    assert st["state"] == "finished" and st["exit_code"] == 0, (st, log)
    assert "stopped by signal 12" in log and "Requeued job" in log and "Resumed" in log, log
    assert not (job.run_dir / "stopped.json").exists()  # the requeued run consumed it
    ref = uninterrupted  # a process of the same kind, in one piece
    a = torch.load(ref.run_dir / "student.pt", weights_only=False)["model"]
    b = torch.load(job.run_dir / "student.pt", weights_only=False)["model"]
    for k in a:
        assert torch.equal(a[k], b[k]), k  # bit for bit
    assert read_metrics(job.run_dir).step.tolist() == list(range(1, cfg.steps + 1))
    with pytest.raises(ValueError, match="preempt"):
        ref.preempt()


@pytest.mark.slow
def test_submitit_tasks_rendezvous_as_one_ddp_run(tmp_path):
    cfg = _cfg(tmp_path, "ddp", steps=6)
    job = launch(cfg, executor="submitit-local", procs=2)
    st = job.wait(timeout=600)
    assert st["state"] == "finished", job.tail(40)
    assert json.loads((job.run_dir / "run.json").read_text())["world_size"] == 2
    m1, m2 = read_metrics(train(replace(cfg, name="one"))), read_metrics(job.run_dir)
    torch.testing.assert_close(torch.tensor(m1.loss.values), torch.tensor(m2.loss.values), rtol=2e-4, atol=1e-5)
    np.testing.assert_allclose(m2.samples_per_s_per_device, m2.samples_per_s / 2)


def test_submitit_failure_is_reported(tmp_path):
    job = launch(_cfg(tmp_path, "bad", data=str(tmp_path / "missing.tif")), executor="submitit-local")
    st = job.wait(timeout=300)
    assert st["state"] == "failed" and st["exit_code"] == 2, (st, job.tail(30))
    assert "missing.tif" in st["error"]


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    """Slurm's command-line tools as the only thing stood in for: `sbatch` keeps the script it is given and answers
    as sbatch does, `scancel` records its arguments, `srun` exists (submitit looks for it). No sacct: Slurm has not
    reported on the job yet."""
    bin_dir = tmp_path / "slurm-bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(f'#!/bin/sh\ncp "$1" {tmp_path}/submitted.sh\necho "Submitted batch job 4242"\n')
    (bin_dir / "scancel").write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/scancel.txt\n')
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    return tmp_path


def test_slurm_submission_script(fake_slurm):
    cfg = TrainConfig.for_mode("distill", name="cluster", runs_dir=str(fake_slurm / "runs"))
    job = launch(cfg, executor="slurm", nodes=2, gpus_per_node=4, partition="gpu", time="02:00:00", account="proj",
                 slurm={"qos": "high", "additional_parameters": {"mail-type": "END"}})
    script = (fake_slurm / "submitted.sh").read_text()
    for line in ("--nodes=2", "--gpus-per-node=4", "--ntasks-per-node=4", "--time=120", "--partition=gpu",
                 "--account=proj", "--qos=high", "--requeue", "--signal=USR2@120", "--open-mode=append", "--mail-type=END"):
        assert f"#SBATCH {line}\n" in script, (line, script)
    assert f"srun --unbuffered --output {job.run_dir}/submitit/%j_%t_log.out {sys.executable} -u -m submitit.core._submit" in script
    assert (job.run_dir / "launch.yaml").exists() and job.info["job_id"] == "4242" and job.info["tasks"] == 8
    again = Job.attach(job.run_dir)
    assert again.status()["state"] == "queued" and again.log_path == job.run_dir / "submitit" / "4242_0_log.out"
    again.stop()  # still queued: cancelled
    assert (fake_slurm / "scancel.txt").read_text().split() == ["4242"]
    with pytest.raises(RuntimeError, match="still queued"):
        launch(cfg, executor="slurm", nodes=2, gpus_per_node=4)


def test_launch_argument_errors(tmp_path, monkeypatch):
    cfg = _cfg(tmp_path, "args")
    with pytest.raises(ValueError, match="executor='kubernetes'"):
        launch(cfg, executor="kubernetes")
    with pytest.raises(ValueError, match="nodes/gpus_per_node are for executor='slurm'"):
        launch(cfg, nodes=2)
    with pytest.raises(ValueError, match="runs on this machine only"):
        launch(cfg, executor="submitit-local", nodes=2)
    with pytest.raises(ValueError, match="HH:MM:SS"):
        launch(cfg, executor="slurm", time="soon")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no srun: not a Slurm login node
    with pytest.raises(RuntimeError, match="login node"):
        launch(cfg, executor="slurm", gpus_per_node=1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_run_logs_peak_memory_and_throughput(tmp_path):
    job = launch(_cfg(tmp_path, "gpu", steps=10), gpus=1)
    assert job.wait(timeout=600)["state"] == "finished", job.tail(40)
    m = read_metrics(job.run_dir)
    assert (m.peak_gpu_mem_gb > 0).all() and (m.samples_per_s_per_device > 0).all()
    assert json.loads((job.run_dir / "run.json").read_text())["device"].startswith("cuda")
