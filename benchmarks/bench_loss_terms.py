"""Each loss term, forward + backward, (8, 202, 64, 64) float32, before issue #20 (tests/frozen_losses_6c94a9b.py), now on
the PyTorch path (cpu_kernels(False): what GPUs and compiled code run) and now with the CPU kernels (hyperkd.kernels,
the default on a CPU), timed in interleaved rounds: python benchmarks/bench_loss_terms.py [rounds]

    python benchmarks/bench_loss_terms.py --blur [rounds]

The SSIM window's separable 7-tap Gaussian blur of a (5, 8, 202, 64, 64) stack, reflect-padded, three ways side by
side: two products with the banded (H x H), (W x W) blur matrices (what the loss does), 7 shifted views added with
their weights per axis, depthwise conv2d (a 1 x 7 then a 7 x 1 kernel, one group per map).

    python benchmarks/bench_loss_terms.py --malloc [rounds]

The default loss (all four terms) with glibc's default allocation of large blocks (mmap, returned at free: every new
full-size map is page-faulted again) against blocks up to 32 MiB kept on the heap (what MALLOC_MMAP_THRESHOLD_=33554432
MALLOC_TRIM_THRESHOLD_=1073741824 set for a process), toggled with mallopt between interleaved rounds (Linux, glibc).

    python benchmarks/bench_loss_terms.py --one-node [rounds]

What hyperkd.fused changed, side by side on 1 and 2 threads: the forward of both spectral terms as the two
single-term kernels (_kl_pixels, _sam_pixels) and as one pass (_kl_sam_pixels); and the backward pass of the default
loss (all four terms, spectral ones on reflectance) through two kernel nodes (_SSIMKernel, _SpectralKernel: two
gradients and autograd's sum) and through one node (_ReconKernel: one in-place pass). Minimum and median per way; freed
blocks kept on the heap and idle OpenMP threads that sleep sooner, as in the training commands (hyperkd.cli.keep_heap,
hyperkd.cli.SPIN_SET)."""
import importlib.util
import statistics
import sys
import time
from pathlib import Path

if "--one-node" in sys.argv:  # before torch, as the `hyperkd` command: libgomp's idle threads sleep sooner (SPIN_SET)
    import hyperkd.cli  # noqa: F401
import torch
import torch.nn.functional as F

from hyperkd import losses

args = [a for a in sys.argv[1:] if not a.startswith("--")]
ROUNDS = int(args[0]) if args else 5
torch.manual_seed(0)
B, C, H, W = 8, 202, 64, 64


def blur_matrices(z, g):
    return losses._blur_matrix(g, z.shape[-2]).T @ z @ losses._blur_matrix(g, z.shape[-1])


def blur_shifted(z, g):
    h, w, k = z.shape[-2], z.shape[-1], len(g)
    zp = F.pad(z.reshape(-1, 1, h, w), (k // 2,) * 4, mode="reflect")[:, 0]
    a = zp[..., 0:w] * g[0]
    for i in range(1, k):
        a.add_(zp[..., i:i + w], alpha=float(g[i]))
    o = a[:, 0:h] * g[0]
    for i in range(1, k):
        o.add_(a[:, i:i + h], alpha=float(g[i]))
    return o.reshape(z.shape)


def blur_depthwise(z, g):
    h, w, k = z.shape[-2], z.shape[-1], len(g)
    n = z.shape[:-2].numel()
    zp = F.pad(z.reshape(1, n, h, w), (k // 2,) * 4, mode="reflect")
    kw, kh = g.view(1, 1, 1, k).expand(n, 1, 1, k).contiguous(), g.view(1, 1, k, 1).expand(n, 1, k, 1).contiguous()
    return F.conv2d(F.conv2d(zp, kw, groups=n), kh, groups=n).reshape(z.shape)


def blur_bench():
    z = torch.randn(5, B, C, H, W)
    g = losses._gauss_1d(7, 1.5, z.device, z.dtype)
    fs = [blur_matrices, blur_shifted, blur_depthwise]
    ref = blur_matrices(z, g)
    for f in fs:
        assert torch.allclose(f(z, g), ref, atol=1e-5), f.__name__
    ts = {f.__name__: [] for f in fs}
    for _ in range(ROUNDS):
        for f in fs:
            t0 = time.perf_counter()
            f(z, g)
            ts[f.__name__].append(time.perf_counter() - t0)
    base = statistics.median(ts["blur_matrices"])
    for k, v in ts.items():
        print(f"{k:15s} median {statistics.median(v) * 1e3:6.0f} ms  ÷ matrices {statistics.median(v) / base:.2f}", flush=True)


def kernels_on(on: bool):
    from hyperkd.kernels import cpu_kernels
    return cpu_kernels(on)


def terms_bench():
    spec = importlib.util.spec_from_file_location("frozen_losses", str(Path(__file__).resolve().parent.parent / "tests" / "frozen_losses_6c94a9b.py"))
    fr = importlib.util.module_from_spec(spec); sys.modules["frozen_losses"] = fr; spec.loader.exec_module(fr)
    t = torch.randn(B, C, H, W); p = t + 0.3 * torch.randn_like(t)
    mask = (torch.rand(B, 1, 8, 8) < .75).float().repeat_interleave(8, 2).repeat_interleave(8, 3)
    mean, std = 0.2 + 0.1 * torch.rand(1, C, 1, 1), 0.05 * torch.ones(1, C, 1, 1)

    def one(mod, term, kernels=False):
        "One term alone (or all four, term 'all', as the trainer's default weights), spectral terms on reflectance."
        wts = None if term == "all" else {k: float(k == term) for k in ("mse", "ssim", "kl", "sam", "distill")}
        L = mod.HyperKDLoss(wts, ssim_data_range=4.0)
        q = p.clone().requires_grad_(True)
        spectral = term in ("kl", "sam", "all")  # as the trainer: reflectance only for the spectral terms
        with kernels_on(kernels):
            t0 = time.perf_counter()
            if mod is losses:  # as the trainer now: the spectral terms make the reflectance themselves
                tot, _ = L(q, t, mask, reflectance=(mean, std) if spectral else None)
            else:  # as the trainer before: converted copies
                tot, _ = L(q, t, mask, pred_refl=q * std + mean if spectral else None,
                           target_refl=t * std + mean if spectral else None)
            tot.backward()
            return time.perf_counter() - t0
    keys = ("mse", "ssim", "kl", "sam", "all")
    ways = (("before", fr, False), ("torch", losses, False), ("kernels", losses, True))
    ts = {(m, k): [] for m, _, _ in ways for k in keys}
    for _ in range(ROUNDS):
        for k in keys:
            for m, mod, kern in ways:
                ts[(m, k)].append(one(mod, k, kern))
    for k in keys:
        b, o, n = (statistics.median(ts[(m, k)][1:]) for m, _, _ in ways)
        print(f"{k:5s} before {b*1e3:6.0f} ms  torch {o*1e3:6.0f} ms  kernels {n*1e3:6.0f} ms  "
              f"kernels/before {n/b:.2f}  kernels/torch {n/o:.2f}", flush=True)


def malloc_bench():
    import ctypes
    libc = ctypes.CDLL("libc.so.6")
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3

    def heap(keep: bool):
        libc.mallopt(M_MMAP_THRESHOLD, 32 * 1024 * 1024 if keep else 128 * 1024)  # glibc's documented defaults otherwise
        libc.mallopt(M_TRIM_THRESHOLD, 1 << 30 if keep else 128 * 1024)
    t = torch.randn(B, C, H, W); p = t + 0.3 * torch.randn_like(t)
    mask = (torch.rand(B, 1, 8, 8) < .75).float().repeat_interleave(8, 2).repeat_interleave(8, 3)
    mean, std = 0.2 + 0.1 * torch.rand(1, C, 1, 1), 0.05 * torch.ones(1, C, 1, 1)
    L = losses.HyperKDLoss(ssim_data_range=4.0)

    def one():
        q = p.clone().requires_grad_(True)
        t0 = time.perf_counter()
        tot, _ = L(q, t, mask, pred_refl=q * std + mean, target_refl=t * std + mean)
        tot.backward()
        return time.perf_counter() - t0
    ts = {False: [], True: []}
    for _ in range(ROUNDS):
        for keep in (False, True):
            heap(keep)
            one()  # the first call after a switch settles the heap
            ts[keep].append(one())
    heap(False)
    d, k = statistics.median(ts[False]), statistics.median(ts[True])
    print(f"default loss, glibc default {d * 1e3:6.0f} ms, blocks kept on the heap {k * 1e3:6.0f} ms: ratio {k / d:.2f}")


def one_node_bench():
    from hyperkd import fused, kernels
    from hyperkd.cli import keep_heap
    import os
    print(f"heap kept (hyperkd.cli.keep_heap): {keep_heap()}; GOMP_SPINCOUNT={os.environ.get('GOMP_SPINCOUNT', 'unset')}")
    t = torch.randn(B, C, H, W); p = t + 0.3 * torch.randn_like(t)
    mask = (torch.rand(B, 1, 8, 8) < .75).float().repeat_interleave(8, 2).repeat_interleave(8, 3)
    mean, std = 0.2 + 0.1 * torch.rand(1, C, 1, 1), 0.05 * torch.ones(1, C, 1, 1)
    L, recon_w = losses.HyperKDLoss(ssim_data_range=4.0), losses._recon_w

    def spectral(forward_kernels):
        def run():
            t0 = time.perf_counter()
            kernels._spectral_pass(p, t, mask, (1e-4, 1e-12), forward_kernels, (mean, std))
            return time.perf_counter() - t0
        return run

    def backward(one: bool):
        def run():
            losses._recon_w = recon_w if one else (lambda *a, **k: None)
            try:
                q = p.clone().requires_grad_(True)
                tot, _ = L(q, t, mask, reflectance=(mean, std))
                t0 = time.perf_counter()
                tot.backward()
                return time.perf_counter() - t0
            finally:
                losses._recon_w = recon_w
        return run
    ways = {"spectral forward, two kernels": spectral((kernels._kl_pixels, kernels._sam_pixels)),
            "spectral forward, one pass": spectral(fused._KL_SAM[0]),
            "default loss backward, two nodes": backward(False), "default loss backward, one node": backward(True)}
    n_threads = torch.get_num_threads()
    for nt in sorted({1, n_threads}):
        torch.set_num_threads(nt)
        for f in ways.values():
            f()  # compiled (or loaded from numba's cache) before timing
        ts = {k: [] for k in ways}
        for _ in range(ROUNDS):
            for k, f in ways.items():
                ts[k].append(f())
        for k, v in ts.items():
            print(f"{nt} thread(s)  {k:34s} min {min(v) * 1e3:6.2f} ms  median {statistics.median(v) * 1e3:6.2f} ms", flush=True)
    torch.set_num_threads(n_threads)


if __name__ == "__main__":
    (malloc_bench if "--malloc" in sys.argv else blur_bench if "--blur" in sys.argv else
     one_node_bench if "--one-node" in sys.argv else terms_bench)()
