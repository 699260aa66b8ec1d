"""Model speed against this machine's matrix-multiply peak, measured side by side in one run.

    python benchmarks/bench_models.py [--batch 8] [--repeats 3]

For the student (tiny and base presets, 128x128 px, 202 bands, patch 16, mask ratio 0.75) one AdamW
training step, and for the teacher (Prithvi-EO-1.0-100M architecture at T=1, 224 px: random weights,
same cost) one encoder forward in inference mode on the visible tokens. FLOPs are counted with
torch.utils.flop_counter; achieved FLOP/s are divided by the fp32 matmul peak measured here first.
"""
import argparse
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from hyperkd.models import PRITHVI_PRESETS, HyperspectralMAE, PrithviMAE, random_mask


def best_time(fn, repeats):
    fn()  # warm-up
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return min(ts)


def flops(fn):
    with FlopCounterMode(display=False) as fc:
        fn()
    return fc.get_total_flops()


def matmul_peak(n=2048, repeats=5):
    a, b = torch.randn(n, n), torch.randn(n, n)
    t = best_time(lambda: a @ b, repeats)
    return 2 * n ** 3 / t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    torch.manual_seed(0)
    peak = matmul_peak()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; fp32 matmul peak {peak / 1e9:.0f} GFLOP/s")
    x = torch.randn(a.batch, 202, 128, 128)
    for preset in ("tiny", "base"):
        s = HyperspectralMAE.from_preset(preset, in_chans=202, img_size=128, patch_size=16)
        opt = torch.optim.AdamW(s.parameters(), lr=1e-4)
        mask = random_mask(a.batch, s.n_tokens, 0.75, torch.Generator().manual_seed(0))

        def step():
            out = s(x, mask)
            loss = ((out.pred - x) ** 2 * out.mask_pixels).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        f = flops(lambda: s(x, mask).pred.sum().backward())
        t = best_time(step, a.repeats)
        print(f"student {preset:5s} train step  batch {a.batch}: {t * 1e3:8.1f} ms  {f / t / 1e9:7.1f} GFLOP/s  "
              f"= {f / t / peak:.2f} of peak")
    teacher = PrithviMAE(PRITHVI_PRESETS["prithvi-eo-1.0-100m"], num_frames=1).eval()
    xt = torch.randn(a.batch, 6, 1, 224, 224)
    mt = random_mask(a.batch, teacher.n_tokens, 0.75, torch.Generator().manual_seed(0))
    f = flops(lambda: teacher.features(xt, mt))
    t = best_time(lambda: teacher.features(xt, mt), a.repeats)
    print(f"teacher prithvi-eo-1.0-100m forward batch {a.batch}: {t * 1e3:8.1f} ms  {f / t / 1e9:7.1f} GFLOP/s  "
          f"= {f / t / peak:.2f} of peak")


if __name__ == "__main__":
    main()
