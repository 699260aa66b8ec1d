"""HyperKD step time against the MAE-baseline step on the same student, measured side by side in one run.

    python benchmarks/bench_distill.py [--batch 8] [--img 64] [--patch 8] [--repeats 5] [--device auto]

Variants of one optimiser step (forward, backward, AdamW) on the same student and batch:
  mae       : random mask, masked MSE (the baseline); mae-compiled: its loss compiled (the baseline of the
              compiled variants, so that each ratio compares like with like)
  kd-mse    : + teacher features (inference mode, visible tokens), channel alignment (one matmul),
              gradient-guided mask, feature distillation; reconstruction loss still the plain MSE
  hyperkd   : kd-mse + the enhanced loss (SSIM with a 7x7 Gaussian window, spectral KL, SAM), eager: what the
              trainer runs on a CPU by default
  hyperkd-backward-grad : hyperkd with the one loss node's gradient made in the backward pass (its guess of the
              backward factors, HyperKDLoss._recon_guess, cleared before each step), as before commit a8a1301
  hyperkd-before : the same with the loss as it was before issue #20 (tests/frozen_losses_6c94a9b.py: autograd
              through every term), to measure the change side by side
  hyperkd-compiled : the same with the loss compiled by torch.compile (the trainer's default on CUDA)
  hyperkd-patch, hyperkd-patch-compiled : hyperkd with SSIM in one window per MAE patch (ssim_window="patch")
  hyperkd-fast : hyperkd with the cheaper terms of 01c1_sampling, eager: SSIM of 16-band means (ssim_band_bin=16), KL
              and SAM on one pixel drawn per 4 x 4 cell (spectral_pixel_stride=4); off by default (03c_ablation)
  hyperkd-sampled : SSIM on every 16th band (ssim_band_stride=16), KL and SAM on one pixel per 8 x 8 cell, eager
The teacher is an untrained prithvi-small (same cost as a trained one). The variants are timed in interleaved
rounds (one step of each per round, --repeats rounds); prints each median step time (and the minimum), the
ratios of the medians to the baseline (target for hyperkd: <= 1.3) and achieved FLOP/s / the matmul peak.
--no-compile skips the compiled variants; --variants picks some; --profile N then runs N more steps of each variant
under torch.profiler and prints its operators by self CPU time per step (the loss's kernel nodes among them:
_ReconKernel, _SSIMKernel, _SpectralKernel and their backward passes). --parts: where each step's time goes, the
medians of its parts timed inside the step by wrapping what it calls (teacher view, mask, student `net`, teacher
features, loss and in it the one node's passes: hyperkd.fused's _ssim_pass, _spectral_pass, _recon_times; the
step's forward, backward and AdamW), and gradient_score alone on the teacher's view (the wrappers add a few
microseconds a call). The process keeps freed blocks up to 64 MiB on its
heap as the training commands do (hyperkd.cli.keep_heap); --default-heap leaves glibc's allocator as it is. It imports
hyperkd.cli before torch, as the `hyperkd` command does, so libgomp's idle threads spin briefly (GOMP_SPINCOUNT, see
hyperkd.cli.SPIN_SET); --default-spin leaves libgomp's default.

    python benchmarks/bench_distill.py --memory [--img 128 --student base --batch 8]

Peak memory of one HyperKD step (forward, backward, AdamW) with the loss before issue #20, today's default loss, and
today's cheaper terms (hyperkd-fast), each measured in
a fresh subprocess on the CPU: the peak resident set (VmHWM, reset through /proc/self/clear_refs just before the
step) minus the resident set before it. Must not grow.
"""
import argparse
import atexit
import contextlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import statistics
import tempfile
import time
from pathlib import Path

if "--default-spin" not in sys.argv:
    import hyperkd.cli  # noqa: F401  before torch, as the `hyperkd` command: sets GOMP_SPINCOUNT (hyperkd.cli.SPIN_SET)
import torch
from torch.utils.flop_counter import FlopCounterMode

import hyperkd.step
from hyperkd import fused
from hyperkd.ablation import ABLATION_VARIANTS
from hyperkd.cli import keep_heap
from hyperkd.distill import TrainConfig, Trainer
from hyperkd.masking import gradient_score
from hyperkd.models import PRITHVI_PRESETS, PrithviMAE, save_prithvi

PARTS: dict = {}  # (variant, part) -> seconds per call, for --parts
RUNNING = [None]  # the variant whose step runs now: the one node's passes are timed under its name


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def matmul_peak(dev, n: int, dtype) -> float:
    "FLOP/s of an n x n x n matrix product (best of 10 after 3 warm-ups)."
    A, B = torch.randn(n, n, device=dev, dtype=dtype), torch.randn(n, n, device=dev, dtype=dtype)
    for _ in range(3):
        A @ B
    sync(dev)
    t = time.perf_counter()
    for _ in range(10):
        A @ B
    sync(dev)
    return 2 * n ** 3 * 10 / (time.perf_counter() - t)


def cheaper_terms(variant: str) -> dict:
    "The cheaper-term settings of an ablation variant (01c1_sampling; off by default), so the benchmark times what the study trained."
    return {k: v for k, v in ABLATION_VARIANTS[variant].items() if k in ("ssim_band_stride", "spectral_pixel_stride", "ssim_band_bin")}


FAST = cheaper_terms("hyperkd-fast")
FROZEN = Path(__file__).resolve().parent.parent / "tests" / "frozen_losses_6c94a9b.py"


@contextlib.contextmanager
def loss_before():
    "Trainers built inside use HyperKDLoss as it was before issue #20 (the frozen copy kept for the tests)."
    spec = importlib.util.spec_from_file_location("frozen_losses", FROZEN)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["frozen_losses"] = mod
    spec.loader.exec_module(mod)
    class Frozen(mod.HyperKDLoss):  # takes today's arguments; the frozen loss knows only the full terms
        def __init__(self, *a, ssim_band_stride=1, spectral_pixel_stride=1, ssim_band_bin=1, **k):
            assert ssim_band_stride == spectral_pixel_stride == ssim_band_bin == 1, "the loss before #20 has only the full terms"
            super().__init__(*a, **k)
            self.ssim_band_stride = self.spectral_pixel_stride = self.ssim_band_bin = 1

        def forward(self, pred, target, mask=None, *, offsets=None, reflectance=None, **k):
            if reflectance is not None:  # what the step passed before: converted copies of the prediction and target
                mean, std = reflectance
                k.update(pred_refl=pred * std + mean, target_refl=target * std + mean)
            return super().forward(pred, target, mask, **k)
    orig = hyperkd.step.HyperKDLoss
    hyperkd.step.HyperKDLoss = Frozen
    try:
        yield
    finally:
        hyperkd.step.HyperKDLoss = orig


def _status_kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{key} not in /proc/self/status")


def heap_mode(a) -> str:
    "Keep freed blocks on the heap as the training commands do (hyperkd.cli.keep_heap), unless --default-heap; says which."
    if a.default_heap:
        return "glibc default"
    return "kept (hyperkd.cli.keep_heap, as the training commands)" if keep_heap() else "glibc default (keep_heap not applicable here)"


def memory_child(a, which: str):
    "One HyperKD step in this (fresh) process; prints JSON: resident set before the step and its peak during it (MiB)."
    heap = heap_mode(a)
    tmp = Path(tempfile.mkdtemp())
    atexit.register(shutil.rmtree, tmp, True)  # the teacher, the demo scenes' cache and the runs (hundreds of MB)
    os.environ.setdefault("HYPERKD_CACHE", str(tmp / "cache"))
    torch.manual_seed(0)
    teacher = save_prithvi(PrithviMAE(PRITHVI_PRESETS["prithvi-small"], img_size=a.img, patch_size=a.patch), tmp / "t.pt")
    cfg = TrainConfig.for_mode("distill", name="mem", teacher=str(teacher), teacher_preset="prithvi-small", compile_loss="off",
                               **(FAST if which == "fast" else {}),
                               runs_dir=str(tmp / "runs"), demo_scenes=1, demo_size=max(128, a.img), img_size=a.img,
                               patch_size=a.patch, batch_size=a.batch, student=a.student, device="cpu", progress=False)
    with (loss_before() if which == "before" else contextlib.nullcontext()):
        tr = Trainer(cfg, log=lambda *_: None)
    x = tr._to_device(torch.stack([tr.dataset[i % len(tr.dataset)] for i in range(a.batch)]))

    def step():
        tr.opt.zero_grad(set_to_none=True)
        total, _ = tr.compute_loss(x, 0)
        total.backward()
        tr.opt.step()
    step()  # optimiser state exists from here on, as in a run
    rss = _status_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak resident set to the current one
    step()
    print(json.dumps({"loss": which, "rss_before_mib": rss / 1024, "peak_mib": _status_kib("VmHWM") / 1024,
                      "step_peak_mib": (_status_kib("VmHWM") - rss) / 1024, "heap": heap}))


def memory(a):
    res = {}
    for which in ("before", "after", "fast"):
        out = subprocess.run([sys.executable, __file__, "--memory-child", which, "--img", str(a.img), "--patch", str(a.patch),
                              "--batch", str(a.batch), "--student", a.student,
                              *(["--default-heap"] if a.default_heap else []), *(["--default-spin"] if a.default_spin else [])],
                             capture_output=True, text=True)
        if out.returncode:
            raise SystemExit(out.stderr[-3000:])
        res[which] = json.loads(out.stdout.strip().splitlines()[-1])
        r = res[which]
        print(f"loss {dict(before='before #20', after='now', fast='now, fast').get(which):11s}: one HyperKD step ({a.student} student, {a.img} px, patch {a.patch}, batch {a.batch}, CPU) "
              f"peak {r['step_peak_mib']:7.0f} MiB above the {r['rss_before_mib']:.0f} MiB resident before it; heap {r['heap']}", flush=True)
    print(f"ratio after / before: {res['after']['step_peak_mib'] / res['before']['step_peak_mib']:.2f} (must be <= 1)")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=type("F", (argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter), {}))
    ap.add_argument("--batch", type=int, default=8, help="images per step")
    ap.add_argument("--img", type=int, default=64, help="image size in px")
    ap.add_argument("--patch", type=int, default=8, help="MAE patch size in px")
    ap.add_argument("--student", default="tiny", help="student preset")
    ap.add_argument("--repeats", type=int, default=5, help="interleaved rounds (the medians are over them)")
    ap.add_argument("--device", default="auto", help="cpu, cuda, or auto (as the trainer)")
    ap.add_argument("--no-compile", action="store_true", help="skip the variants with the torch.compile'd loss")
    ap.add_argument("--variants", nargs="*", help="run only these (and their baselines, mae / mae-compiled)")
    ap.add_argument("--data", nargs="*", help="cube files (GeoTIFF/COG) instead of the demo scene (e.g. on a machine "
                                           "without the sample-data packages)")
    ap.add_argument("--memory", action="store_true", help="peak memory of a step, loss before issue #20 and now")
    ap.add_argument("--profile", type=int, default=0, metavar="N", help="then profile N steps of each variant: operators "
                    "by self CPU time per step")
    ap.add_argument("--parts", action="store_true", help="also the median time of each part of each step (see above)")
    ap.add_argument("--default-spin", action="store_true", help="libgomp's default spin of idle OpenMP threads (the "
                    "`hyperkd` command shortens it: hyperkd.cli.SPIN_SET)")
    ap.add_argument("--default-heap", action="store_true", help="leave glibc's allocator as it is (the training commands "
                    "call hyperkd.cli.keep_heap, and so does this benchmark unless this flag is given)")
    ap.add_argument("--memory-child", choices=["before", "after", "fast"], help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.memory_child:
        return memory_child(a, a.memory_child)
    if a.memory:
        return memory(a)
    heap = heap_mode(a)
    tmp = Path(tempfile.mkdtemp())
    atexit.register(shutil.rmtree, tmp, True)  # the teacher, the demo scenes' cache and the runs (hundreds of MB)
    os.environ.setdefault("HYPERKD_CACHE", str(tmp / "cache"))
    torch.manual_seed(0)
    teacher = save_prithvi(PrithviMAE(PRITHVI_PRESETS["prithvi-small"], img_size=a.img, patch_size=a.patch), tmp / "t.pt")
    common = dict(runs_dir=str(tmp / "runs"), demo_scenes=1, demo_size=max(128, a.img), img_size=a.img, patch_size=a.patch,
                  batch_size=a.batch, student=a.student, device=a.device, progress=False, steps=1000,
                  **({"data": list(a.data), "stride": a.img // 2} if a.data else {}))
    variants = {
        "mae": TrainConfig.for_mode("mae", name="mae", compile_loss="off", **common),
        "mae-compiled": TrainConfig.for_mode("mae", name="maec", compile_loss="on", **common),
        "kd-mse": TrainConfig.for_mode("distill", name="kdmse", teacher=str(teacher), teacher_preset="prithvi-small",
                                       loss=dict(mse=1.0, ssim=0.0, kl=0.0, sam=0.0, distill=1.0), compile_loss="off", **common),
        "hyperkd": TrainConfig.for_mode("distill", name="hkd", teacher=str(teacher), teacher_preset="prithvi-small",
                                        compile_loss="off", **common),
        "hyperkd-backward-grad": TrainConfig.for_mode("distill", name="hkdg", teacher=str(teacher), teacher_preset="prithvi-small",
                                                      compile_loss="off", **common),
        "hyperkd-before": TrainConfig.for_mode("distill", name="hkdb", teacher=str(teacher), teacher_preset="prithvi-small",
                                               compile_loss="off", **common),
        "hyperkd-compiled": TrainConfig.for_mode("distill", name="hkdc", teacher=str(teacher), teacher_preset="prithvi-small",
                                                 compile_loss="on", **common),
        "hyperkd-patch": TrainConfig.for_mode("distill", name="hkdp", teacher=str(teacher), teacher_preset="prithvi-small",
                                              compile_loss="off", ssim_window="patch", **common),
        "hyperkd-fast": TrainConfig.for_mode("distill", name="hkdf", teacher=str(teacher), teacher_preset="prithvi-small",
                                             compile_loss="off", **FAST, **common),
        "hyperkd-sampled": TrainConfig.for_mode("distill", name="hkds", teacher=str(teacher), teacher_preset="prithvi-small",
                                                compile_loss="off", **cheaper_terms("hyperkd-sampled"), **common),
        "hyperkd-patch-compiled": TrainConfig.for_mode("distill", name="hkdpc", teacher=str(teacher), teacher_preset="prithvi-small",
                                                       compile_loss="on", ssim_window="patch", **common),
    }
    if a.no_compile:
        variants = {k: v for k, v in variants.items() if not k.endswith("compiled")}
    if a.variants:
        unknown = set(a.variants) - set(variants)
        if unknown:
            raise SystemExit(f"unknown variant(s) {sorted(unknown)}; choose from {list(variants)}")
        keep = set(a.variants) | {"mae"} | ({"mae-compiled"} if any(v.endswith("compiled") for v in a.variants) else set())
        variants = {k: v for k, v in variants.items() if k in keep}
    dev = Trainer(variants["mae"]).device
    peak, kind = matmul_peak(dev, 2048, torch.float32), "fp32"
    if dev.type == "cuda":  # the steps run under bf16 autocast there: compare with the bf16 matmul peak
        peak, kind = matmul_peak(dev, 8192, torch.bfloat16), "bf16"
    print(f"device {dev} ({torch.cuda.get_device_name(dev) if dev.type == 'cuda' else 'cpu'}), torch {torch.__version__}; "
          f"{kind} matmul peak {peak / 1e9:.0f} GFLOP/s; batch {a.batch}, {a.img} px, patch {a.patch}, student {a.student}; "
          f"heap {heap}; OpenMP spin GOMP_SPINCOUNT={os.environ.get('GOMP_SPINCOUNT', 'unset (libgomp default)')}")
    steps, flops, view = {}, {}, None
    if a.parts:  # the one node's passes (the default loss on a CPU)
        for part in ("_ssim_pass", "_spectral_pass", "_recon_times"):
            setattr(fused, part, timed(lambda part=part: (RUNNING[0], part), getattr(fused, part)))
    for name, cfg in variants.items():
        with (loss_before() if name == "hyperkd-before" else contextlib.nullcontext()):
            tr = Trainer(cfg, log=lambda *_: None)
        x = tr._to_device(torch.stack([tr.dataset[i % len(tr.dataset)] for i in range(a.batch)]))  # normalised on the device (dn loader)
        if a.parts:
            view = time_parts(name, tr.train_step) or view

        guesses = [tr.train_step.loss_fn._recon_guess] if name == "hyperkd-backward-grad" else []  # HyperKDLoss's

        def step(tr=tr, x=x, name=name, guesses=guesses):
            for g in guesses:  # no factors kept: the one node makes its gradient in the backward pass
                g[0] = None
            RUNNING[0] = name
            t0 = time.perf_counter()
            tr.opt.zero_grad(set_to_none=True)
            total, _ = tr.compute_loss(x, 0)
            t1 = time.perf_counter()
            total.backward()
            t2 = time.perf_counter()
            tr.opt.step()
            for part, t in (("forward", t1 - t0), ("backward", t2 - t1), ("AdamW", time.perf_counter() - t2)):
                PARTS.setdefault((name, part), []).append(t)
        step(); step()  # warm-up (and compilation)
        steps[name] = step
        if name.endswith("-compiled") and name[:-9] in flops:  # same FLOPs as eager (the counter cannot see compiled code)
            flops[name] = flops[name[:-9]]
        else:
            with FlopCounterMode(display=False) as fc:
                step()
            flops[name] = fc.get_total_flops()
    # interleaved rounds (one step of every variant per round): drifts of the machine hit all variants alike
    ts = {name: [] for name in steps}
    PARTS.clear()  # the rounds' only
    for _ in range(a.repeats):
        for name, step in steps.items():
            sync(dev)
            t = time.perf_counter()
            step()
            sync(dev)
            ts[name].append(time.perf_counter() - t)
    times = {name: statistics.median(v) for name, v in ts.items()}
    for name, t in times.items():
        print(f"{name:22s} step median {t * 1e3:8.1f} ms (min {min(ts[name]) * 1e3:8.1f})   "
              f"{flops[name] / t / 1e9:9.1f} GFLOP/s = {flops[name] / t / peak:.3f} of peak")
    for name in times:
        base = "mae-compiled" if name.endswith("-compiled") else "mae"
        if name.startswith("mae"):
            continue
        note = "  (target <= 1.3)" if name in ("hyperkd", "hyperkd-compiled") else ""
        print(f"ratio {name + ' / ' + base + ':':40s} {times[name] / times[base]:.2f}{note}")
    if "hyperkd" in times and "hyperkd-before" in times:
        print(f"ratio hyperkd / hyperkd-before (the step now / before issue #20):   {times['hyperkd'] / times['hyperkd-before']:.2f}")
    print("(the trainer compiles the loss on CUDA only: compile_loss='auto')")
    if a.parts:
        print_parts(steps, view, x, a.patch)
    if a.profile:
        profile_steps(steps, a.profile)


def timed(key, f):
    "f, its wall time per call appended to PARTS[key] (--parts); a callable key is called each time."
    def g(*args, **kw):
        t = time.perf_counter()
        try:
            return f(*args, **kw)
        finally:
            PARTS.setdefault(key() if callable(key) else key, []).append(time.perf_counter() - t)
    return g


def time_parts(name: str, st):
    "Wrap what the step `st` calls (--parts); returns its teacher view (HyperKD steps) or None."
    for part in ("teacher_view", "mask", "net", "loss"):
        if hasattr(st, part):
            setattr(st, part, timed((name, part), getattr(st, part)))
    if st.teacher is not None:
        st.teacher.features = timed((name, "teacher features"), st.teacher.features)
        return st.teacher_view


def print_parts(steps: dict, view, x, patch: int):
    "The medians (ms) of each variant's parts (its one node's passes last), and gradient_score alone on the teacher's view of x."
    order = ("forward", "teacher_view", "mask", "net", "teacher features", "loss", "backward", "AdamW")
    for name in steps:
        parts = {k[1]: statistics.median(v) * 1e3 for k, v in PARTS.items() if k[0] == name}
        if parts:  # the step's parts in the step's order, then the one node's passes
            keys = [p for p in order if p in parts] + [p for p in parts if p not in order]
            print(f"parts of {name:18s} " + "  ".join(f"{p} {parts[p]:.1f}" for p in keys))
    if view is not None:
        xt, ts = view(x)[:, :, 0], []
        for _ in range(50):
            t = time.perf_counter()
            gradient_score(xt, patch)
            ts.append(time.perf_counter() - t)
        print(f"gradient_score alone on the teacher's view {tuple(xt.shape)}: {statistics.median(ts) * 1e3:.2f} ms")


def profile_steps(steps: dict, n: int, top: int = 14):
    "Each variant's operators by self CPU time per step over `n` profiled steps (the profiler adds some time)."
    from torch.profiler import ProfilerActivity, profile
    for name, step in steps.items():
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(n):
                step()
        ops = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:top]
        print(f"{name}: self CPU time per step, top {top} operators")
        for e in ops:
            print(f"  {e.key[:48]:48s} {e.self_cpu_time_total / n / 1e3:7.2f} ms  ({e.count // n} calls)")


if __name__ == "__main__":
    main()
