"""Each loss term, forward + backward, (8, 202, 64, 64) float32, before issue #20 (tests/frozen_losses_6c94a9b.py) and
now, timed in interleaved rounds: python benchmarks/bench_loss_terms.py [rounds]"""
import time, statistics, sys, importlib.util, torch
from hyperkd import losses
spec = importlib.util.spec_from_file_location("frozen_losses", str(__import__("pathlib").Path(__file__).resolve().parent.parent / "tests" / "frozen_losses_6c94a9b.py"))
fr = importlib.util.module_from_spec(spec); sys.modules["frozen_losses"] = fr; spec.loader.exec_module(fr)
torch.manual_seed(0)
B, C, H, W = 8, 202, 64, 64
t = torch.randn(B, C, H, W); p = t + 0.3 * torch.randn_like(t)
mask = (torch.rand(B, 1, 8, 8) < .75).float().repeat_interleave(8, 2).repeat_interleave(8, 3)
mean, std = 0.2 + 0.1 * torch.rand(1, C, 1, 1), 0.05 * torch.ones(1, C, 1, 1)
pr, tr = p * std + mean, t * std + mean
def one(mod, term):
    wts = {k: float(k == term) for k in ("mse", "ssim", "kl", "sam", "distill")}
    L = mod.HyperKDLoss(wts, ssim_data_range=4.0)
    q = (pr if term in ("kl", "sam") else p).clone().requires_grad_(True)
    tt = tr if term in ("kl", "sam") else t
    t0 = time.perf_counter()
    tot, _ = L(q, tt, mask) if term not in ("kl", "sam") else L(q, tt, mask, pred_refl=q, target_refl=tt)
    tot.backward()
    return time.perf_counter() - t0
ts = {(m, k): [] for m in ("before", "now") for k in ("mse", "ssim", "kl", "sam")}
for r in range(int(sys.argv[1]) if len(sys.argv) > 1 else 5):
    for k in ("mse", "ssim", "kl", "sam"):
        for m, mod in (("before", fr), ("now", losses)):
            ts[(m, k)].append(one(mod, k))
for k in ("mse", "ssim", "kl", "sam"):
    b, n = statistics.median(ts[("before", k)][1:]), statistics.median(ts[("now", k)][1:])
    print(f"{k:5s} before {b*1e3:6.0f} ms  now {n*1e3:6.0f} ms  now/before {n/b:.2f}", flush=True)
