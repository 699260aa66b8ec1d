"""Fine-tuning step time against the frozen-head step time, measured side by side in one run.

    python benchmarks/bench_protocols.py [--students tiny base] [--img 32] [--patch 8] [--batch 16] [--repeats 5]

One optimiser step of each downstream protocol of `hyperkd.evaluate.run_protocol` on the same student and batch
(crop-type segmentation, 202 bands, per-pixel labels):
  frozen   : the multi-level `PixelHead` on precomputed frozen features (4 layers): the head alone trains;
  finetune : the same head and the student's encoder, trained together (layer-wise learning-rate decay);
  linear   : a 1x1 linear layer on the final tokens (for scale).
Timed in interleaved rounds (one step of each per round, --repeats rounds after a warm-up); prints the median step
times and finetune / frozen for each student. Feature extraction of the frozen protocol is done once per dataset
and is not part of its step; its time per batch is printed too (`features`).
"""
import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from hyperkd.evaluate import PixelHead, TaskHead, _Finetuned, encoder_features, layer_decay_groups, pyramid_layers
from hyperkd.models import HyperspectralMAE


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--students", nargs="*", default=["tiny", "base"])
    ap.add_argument("--img", type=int, default=32)
    ap.add_argument("--patch", type=int, default=8)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="auto")
    a = ap.parse_args()
    dev = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if a.device == "auto" else a.device)
    torch.manual_seed(0)
    x = torch.randn(a.batch, 202, a.img, a.img, device=dev)
    y = torch.randint(1, 5, (a.batch, a.img, a.img), device=dev)
    print(f"device {dev}, batch {a.batch}, {a.img} px, patch {a.patch}, 202 bands, segmentation (5 classes)")
    for name in a.students:
        model = HyperspectralMAE.from_preset(name, in_chans=202, img_size=a.img, patch_size=a.patch).to(dev).eval()
        layers = pyramid_layers(len(model.encoder.blocks))
        dim = model.encoder.norm.normalized_shape[0]
        t = time.perf_counter()
        feats = encoder_features(model, x, layers=layers)
        sync(dev)
        t_feat = time.perf_counter() - t
        last = feats[-1]
        frozen = PixelHead([dim] * len(layers), 5, "segmentation", upsample=a.patch).to(dev)
        linear = TaskHead(dim, 5, "segmentation", linear=True, upsample=a.patch).to(dev)
        ft = _Finetuned(model, layers, PixelHead([dim] * len(layers), 5, "segmentation", upsample=a.patch)).to(dev)
        opts = {"frozen": torch.optim.AdamW(frozen.parameters(), 3e-3),
                "linear": torch.optim.AdamW(linear.parameters(), 3e-3),
                "finetune": torch.optim.AdamW([{"params": list(ft.head.parameters()), "lr": 3e-3}]
                                              + layer_decay_groups(ft.model, 3e-4))}
        steps = {"frozen": lambda: frozen(feats, y.shape[-2:]), "linear": lambda: linear(last),
                 "finetune": lambda: ft(x, y.shape[-2:])}
        times = {k: [] for k in steps}
        for r in range(a.repeats + 1):
            for k, fwd in steps.items():
                sync(dev)
                t = time.perf_counter()
                loss = F.cross_entropy(fwd(), y)
                opts[k].zero_grad(); loss.backward(); opts[k].step()
                sync(dev)
                if r:  # the first round warms up
                    times[k].append(time.perf_counter() - t)
        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"\nstudent {name} ({sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters)")
        for k in steps:
            print(f"  {k:9s} median {1e3 * med[k]:8.1f} ms   min {1e3 * min(times[k]):8.1f} ms")
        print(f"  features  {1e3 * t_feat:8.1f} ms once per batch (frozen and linear)")
        print(f"  finetune / frozen step time: {med['finetune'] / med['frozen']:.2f}")


if __name__ == "__main__":
    main()
