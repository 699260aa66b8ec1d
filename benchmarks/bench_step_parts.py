"""Where a training step's time goes: the parts of the MAE, kd-mse and default HyperKD steps, timed inside the step.

    python benchmarks/bench_step_parts.py [--rounds 31] [--batch 8] [--img 64] [--patch 8] [--student tiny]

The same variants as `bench_distill.py` (mae, kd-mse, hyperkd; CPU, the loss eager as the trainer runs it there),
timed in interleaved rounds (one step of each per round). Each part is timed by wrapping the function the step calls:
the teacher's view (`HyperKDStep.teacher_view`), the mask (`MAEStep.mask`: the guided mask's score and draw), the
student's forward pass (`net`), the teacher's features, the loss (`MAEStep.loss`), and inside the default loss the
one node's passes (`hyperkd.fused`: the SSIM kernel's pass, the spectral pass, the backward pass `_recon_times`);
`backward` and `AdamW` are the rest of the step. Prints each part's median in ms, and `gradient_score` alone on the
teacher's view of the batch, (B, 6, H, W). A part's time includes what it waits for (OpenMP threads, allocation);
the wrappers add a few microseconds each. Run it alternately with another checkout (`PYTHONPATH=...`) to compare.
"""
import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import hyperkd.cli  # noqa: F401  before torch, as the `hyperkd` command (GOMP_SPINCOUNT, hyperkd.cli.SPIN_SET)
import torch

from hyperkd import fused
from hyperkd.cli import keep_heap
from hyperkd.distill import TrainConfig, Trainer
from hyperkd.masking import gradient_score
from hyperkd.models import PRITHVI_PRESETS, PrithviMAE, save_prithvi

TIMES: dict = {}


def timed(key, f):
    "f, its wall time per call appended to TIMES[key]."
    def g(*a, **k):
        t = time.perf_counter()
        try:
            return f(*a, **k)
        finally:
            TIMES.setdefault(key, []).append(time.perf_counter() - t)
    return g


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=31)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--img", type=int, default=64)
    ap.add_argument("--patch", type=int, default=8)
    ap.add_argument("--student", default="tiny")
    a = ap.parse_args()
    keep_heap()
    tmp = Path(tempfile.mkdtemp())
    torch.manual_seed(0)
    teacher = save_prithvi(PrithviMAE(PRITHVI_PRESETS["prithvi-small"], img_size=a.img, patch_size=a.patch), tmp / "t.pt")
    common = dict(runs_dir=str(tmp / "runs"), demo_scenes=1, demo_size=max(128, a.img), img_size=a.img,
                  patch_size=a.patch, batch_size=a.batch, student=a.student, device="cpu", progress=False, steps=1000,
                  compile_loss="off")
    kd = dict(teacher=str(teacher), teacher_preset="prithvi-small")
    variants = {"mae": TrainConfig.for_mode("mae", name="mae", **common),
                "kd-mse": TrainConfig.for_mode("distill", name="kdmse", loss=dict(mse=1.0, ssim=0.0, kl=0.0, sam=0.0,
                                                                                    distill=1.0), **kd, **common),
                "hyperkd": TrainConfig.for_mode("distill", name="hkd", **kd, **common)}
    for name in ("_ssim_pass", "_spectral_pass", "_recon_times"):  # the one node's passes (the default loss on a CPU)
        setattr(fused, name, timed(("loss: node", name), getattr(fused, name)))
    steps, view = {}, None
    for name, cfg in variants.items():
        tr = Trainer(cfg, log=lambda *_: None)
        st = tr.train_step
        for part in ("teacher_view", "mask", "net", "loss"):
            if hasattr(st, part):
                setattr(st, part, timed((name, part), getattr(st, part)))
        if st.teacher is not None:
            st.teacher.features = timed((name, "teacher features"), st.teacher.features)
            view = st.teacher_view
        x = tr._to_device(torch.stack([tr.dataset[i % len(tr.dataset)] for i in range(a.batch)]))

        def step(tr=tr, x=x, name=name):
            t0 = time.perf_counter()
            tr.opt.zero_grad(set_to_none=True)
            total, _ = tr.compute_loss(x, 0)
            t1 = time.perf_counter()
            total.backward()
            t2 = time.perf_counter()
            tr.opt.step()
            t3 = time.perf_counter()
            for part, t in (("forward", t1 - t0), ("backward", t2 - t1), ("AdamW", t3 - t2), ("step", t3 - t0)):
                TIMES.setdefault((name, part), []).append(t)
        step(); step()  # warm-up (kernels compiled or loaded from numba's cache)
        steps[name] = step
    TIMES.clear()
    for _ in range(a.rounds):
        for step in steps.values():
            step()
    print(f"{a.rounds} interleaved rounds; batch {a.batch}, {a.img} px, patch {a.patch}, student {a.student}; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads; medians in ms")
    order = ("step", "forward", "teacher_view", "mask", "net", "teacher features", "loss", "backward", "AdamW")
    for name in variants:
        parts = [(p, statistics.median(TIMES[(name, p)]) * 1e3) for p in order if (name, p) in TIMES]
        print(f"{name:8s} " + "  ".join(f"{p} {t:.1f}" for p, t in parts))
    node = {k[1]: statistics.median(v) * 1e3 for k, v in TIMES.items() if k[0] == "loss: node"}
    if node:
        print("hyperkd's one node: " + "  ".join(f"{k} {v:.1f}" for k, v in node.items()))
    xt = view(x)[:, :, 0]
    ts = []
    for _ in range(max(50, a.rounds)):
        t = time.perf_counter()
        gradient_score(xt, a.patch)
        ts.append(time.perf_counter() - t)
    print(f"gradient_score alone on the teacher's view {tuple(xt.shape)}: {statistics.median(ts) * 1e3:.2f} ms")
    ratio = statistics.median(TIMES[("hyperkd", "step")]) / statistics.median(TIMES[("mae", "step")])
    print(f"ratio hyperkd / mae (steps as timed here): {ratio:.2f}")


if __name__ == "__main__":
    sys.exit(main())
