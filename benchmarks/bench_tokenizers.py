"""A student training step with flat against grouped tokens, side by side in one run (03e_designs chose grouped).

    python benchmarks/bench_tokenizers.py [--repeats 12] [--threads 1]

Tiny student (`HyperspectralMAE.from_preset("tiny")`, 202 bands, patch 8, mask ratio 0.75), batch 8 of random
data at 32 and 64 px; one step = forward (random mask), MSE of the whole reconstruction against the input, backward, AdamW step. Median of
`repeats` steps per case. The loss is the MSE alone, so this times the tokenizer's share of a step; the full
HyperKD step and the README's main job are in bench_distill.py and bench_main_job.py.
"""
import argparse
import time

import torch

from hyperkd.models import HyperspectralMAE


def step_ms(model: torch.nn.Module, x: torch.Tensor, repeats: int) -> float:
    opt = torch.optim.AdamW(model.parameters())
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = model(x)
        ((out.pred - x) ** 2).mean().backward()
        opt.step()
        opt.zero_grad()
        times.append(time.perf_counter() - t0)
    return 1e3 * sorted(times)[len(times) // 2]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=12)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    print(f"| px | tokenizer | parameters | step (ms, median of {a.repeats}) |\n|---:|---|---:|---:|")
    for img in (32, 64):
        x = torch.randn(8, 202, img, img, generator=torch.Generator().manual_seed(0))
        for tok in ("flat", "grouped"):
            torch.manual_seed(0)
            m = HyperspectralMAE.from_preset("tiny", img_size=img, patch_size=8, tokenizer=tok)
            print(f"| {img} | {tok} | {sum(p.numel() for p in m.parameters()):,} | {step_ms(m, x, a.repeats):.1f} |", flush=True)


if __name__ == "__main__":
    main()
