"""Peak memory of the explorer's input path on 424-band int16 ENVI scenes of 200 / 400 / 800 px at a fixed window (#19).

    python benchmarks/bench_explorer_memory.py [--sizes 200 400 800] [--window 128] [--pythonpath DIR]

`open_explorer_inputs(checkpoint=run, cube=scene.bsq, resample="srf", window=(0, 0, W, W))` runs in a fresh
subprocess per scene size; the subprocess reports its peak RSS (ru_maxrss), its wall time and the size of the
resample cache it left behind. Scenes: AVIRIS-NG-like sampling (424 bands, 380-2510 nm, FWHM 5.5 nm), int16
reflectance x 10000 with `reflectance scale factor = 10000`. The run is a tiny MAE on enmap-202 trained for a
few steps (weights do not change the cost). `--pythonpath /work/main` measures another checkout (before/after).

Measured 2026-11-30 on the shared 2-core helper machine (times disturbed by other jobs; memory is not):
  before (main 6c94a9b: whole scene resampled, then cropped)   after (window cropped first, resampled in memory)
   200 px: 1.24 GiB, 22 s, cache +51 MiB                          1.03 GiB, 26 s, cache +0
   400 px: 2.52 GiB, 112 s, cache +202 MiB                        1.03 GiB, 14 s, cache +0
   800 px: 5.10 GiB, 104 s, cache +808 MiB                        1.31 GiB, 13 s, cache +0
About 1.0 GiB of the peak is the imports (torch, panel); the rest now follows the window and the 256 px read chunks.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, resource, sys, time, os
from pathlib import Path
from hyperkd.explorer import open_explorer_inputs
t = time.perf_counter()  # imports (torch, panel) not counted
i = open_explorer_inputs(checkpoint=sys.argv[1], cube=sys.argv[2], resample="srf", teacher=None,
                         window=(0, 0, int(sys.argv[3]), int(sys.argv[3])), log=lambda *a: None)
d = Path(os.environ["HYPERKD_CACHE"]) / "resampled"
cache = sum(f.stat().st_size for f in d.glob("*")) if d.is_dir() else 0
import hyperkd
print(json.dumps({"hyperkd": hyperkd.__file__, "rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, "s": time.perf_counter() - t,
                  "cube": list(i.cube.shape), "cache_mib": cache / 2**20}))
"""


def write_scene(path: Path, size: int, bands: int = 424):
    import numpy as np
    wl = np.linspace(380, 2510, bands)
    rng = np.random.default_rng(size)
    base = (1000 + 3000 * rng.random((bands, 1, 1))).astype(np.int16)
    with open(path, "wb") as f:
        for b in range(bands):  # band by band: the writer itself stays small
            (base[b] + rng.integers(-200, 200, (size, size))).astype("<i2").tofile(f)
    path.with_suffix(".hdr").write_text(
        f"ENVI\nsamples = {size}\nlines = {size}\nbands = {bands}\nheader offset = 0\nfile type = ENVI Standard\n"
        "data type = 2\ninterleave = bsq\nbyte order = 0\nwavelength units = Nanometers\nreflectance scale factor = 10000\n"
        "wavelength = {" + ", ".join(f"{w:.2f}" for w in wl) + "}\nfwhm = {" + ", ".join(["5.5"] * bands) + "}\n")


def make_run(root: Path) -> Path:
    from hyperkd.distill import TrainConfig, Trainer
    cfg = TrainConfig.for_mode("mae", name="bench", runs_dir=str(root), steps=2, img_size=32, patch_size=8, demo_scenes=1,
                               demo_size=64, batch_size=2, progress=False, ckpt_every=2, log_every=1)
    return Trainer(cfg, log=lambda *a: None).fit()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[200, 400, 800])
    ap.add_argument("--window", type=int, default=128)
    ap.add_argument("--pythonpath", help="checkout whose hyperkd is measured (default: this one)")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        run = make_run(d / "runs")
        env = dict(os.environ, PYTHONPATH=a.pythonpath or str(Path(__file__).resolve().parent.parent))
        print(f"hyperkd from {env['PYTHONPATH']}, window {a.window} px, 424-band int16 ENVI scenes")
        for s in a.sizes:
            scene = d / f"scene{s}.bsq"
            write_scene(scene, s)
            env["HYPERKD_CACHE"] = str(d / f"cache{s}")
            p = subprocess.run([sys.executable, "-c", CHILD, str(run), str(scene), str(a.window)], env=env, cwd=d,
                               capture_output=True, text=True)  # cwd: `python -c` puts it first on sys.path
            if p.returncode:
                print(f"{s:4d} px: FAILED\n{p.stderr[-2000:]}")
                continue
            r = json.loads(p.stdout.strip().splitlines()[-1])
            assert r["hyperkd"].startswith(env["PYTHONPATH"]), r["hyperkd"]
            print(f"{s:4d} px scene ({scene.stat().st_size / 2**20:6.0f} MiB on disk): peak RSS {r['rss_gib']:.2f} GiB, "
                  f"{r['s']:.1f} s, cube {tuple(r['cube'])}, resample cache left {r['cache_mib']:.0f} MiB")
            scene.unlink()


if __name__ == "__main__":
    main()
