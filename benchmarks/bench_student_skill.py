"""How many steps (and how much training data) a student needs before it is skilful (issue #21, part 2).

    python benchmarks/bench_student_skill.py mae 2000 --set demo_scenes=24
    python benchmarks/bench_student_skill.py mae 1000                         # the default 4 demo scenes

Trains one run of the given mode (`TrainConfig.for_mode(mode)`, then the `--set key=value` overrides, loss not
compiled) for `steps` steps and, at steps 0, 100, 250, 500, 1000, 1500, 2000, 3000, 4000, ..., measures the student's
masked reconstruction of the evaluation's held-out tiles (`demo_downstream_data`: demo scenes 1000-1002, 256 px, cut
into `img_size` tiles, normalised with the run's band statistics; never trained on) against the per-band mean and the
bilinear fill (`hyperkd.skill.student_skill`, fixed mask: seed 0, ratio 0.75). Prints one JSON line per
measurement and writes them to `--out` (JSON lines). Skill > 0: the student beats both trivial predictors.
The learning-rate schedule is the run's (cosine over `steps`), so a point at step k of a longer run is not a run of k
steps. One torch thread (`--threads`), so that it can share a machine.
"""
import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from hyperkd.config import apply_overrides
from hyperkd.distill import TrainConfig, Trainer
from hyperkd.evaluate import demo_downstream_data
from hyperkd.skill import student_skill

AT = (0, 100, 250, 500, 1000, 1500, 2000, 3000, 4000, 6000, 8000, 12000, 16000)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["mae", "distill"])
    ap.add_argument("steps", type=int)
    ap.add_argument("--set", nargs="*", default=[], help="config overrides key=value")
    ap.add_argument("--out", default=None, help="JSON-lines file (default: a temporary folder)")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    tmp = Path(tempfile.mkdtemp(prefix="bench-skill-"))
    out = Path(a.out or tmp / "skill.jsonl")
    out.write_text("")
    cfg = apply_overrides(TrainConfig.for_mode(a.mode, name=a.mode, runs_dir=str(tmp / "runs"), steps=a.steps,
                                               progress=False, ckpt_every=50, compile_loss="off"), a.set)
    tr = Trainer(cfg, log=lambda *_: None)
    data = demo_downstream_data(tr.stats, cfg.img_size, tr.dataset.n_bands)

    def measure():
        r = {"step": tr.step, **student_skill(tr.model, data.x, None, 0.75, seed=0), "mode": a.mode, "overrides": a.set,
             "time": time.time()}
        with open(out, "a") as f:
            f.write(json.dumps(r) + "\n")
        print(json.dumps(r), flush=True)

    save = tr.save_checkpoint

    def save_and_measure(*args, **kw):
        if tr.step in AT:
            measure()
        return save(*args, **kw)
    tr.save_checkpoint = save_and_measure
    measure()
    tr.fit()
    print(f"written: {out}")


if __name__ == "__main__":
    main()
