"""PatchDataset throughput on SpectralEarth-style patches (128x128x202 int16 COG files) against reading the
same pixel bytes raw with numpy, measured side by side in one run.

    python benchmarks/bench_patches.py [--patches 64] [--repeats 3]

Prints patches/s for both and the ratio (target: PatchDataset >= 0.8 x raw). Both read from the page cache
(files are read once before timing), so the ratio measures decoding + normalisation overhead, not the disk.
"""
import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import xarray as xr

from hyperkd.data import PatchDataset, band_stats, open_spectral_earth_patch, spectral_earth_patches, write_cube
from hyperkd.spectral import enmap_preset


def make_patches(root: Path, n: int, seed: int = 0):
    p = enmap_preset("enmap-202")
    rng = np.random.default_rng(seed)
    raws = []
    for i in range(n):
        refl = rng.uniform(0.0, 0.6, (202, 128, 128)).astype(np.float32)
        cube = xr.DataArray(refl, dims=("band", "y", "x"), coords={"band": list(p.band_names), "wavelength": ("band", p.wavelengths)})
        f = root / "enmap" / f"p{i:05d}" / f"p{i:05d}.tif"
        write_cube(cube, f, driver="COG", dtype="int16", scale=1e-4)
        raw = root / "raw" / f"p{i:05d}.npy"
        raw.parent.mkdir(parents=True, exist_ok=True)
        np.save(raw, np.round(refl / 1e-4).astype(np.int16))
        raws.append(raw)
    return raws


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--patches", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        raws = make_patches(root, a.patches)
        ds = PatchDataset([open_spectral_earth_patch(f) for f in spectral_earth_patches(root)], size=128)
        ds.stats = band_stats(ds.raw(i) for i in range(8))
        for f in raws:  # warm the page cache for both
            np.load(f)
        for i in range(len(ds)):
            ds[i]

        def t_dataset():
            t = time.perf_counter()
            for i in range(len(ds)):
                ds[i]
            return len(ds) / (time.perf_counter() - t)

        def t_raw():
            t = time.perf_counter()
            for f in raws:
                np.load(f)
            return len(raws) / (time.perf_counter() - t)

        scale = (1e-4 / ds.stats.std).astype(np.float32)[:, None, None]
        shift = (-ds.stats.mean / ds.stats.std).astype(np.float32)[:, None, None]

        def t_raw_norm():  # the floor for any loader that must return normalised float32
            t = time.perf_counter()
            for f in raws:
                x = np.load(f).astype(np.float32)
                x *= scale
                x += shift
            return len(raws) / (time.perf_counter() - t)

        rows = [(t_dataset(), t_raw(), t_raw_norm()) for _ in range(a.repeats)]
    ds_rate, raw_rate, norm_rate = (max(r[j] for r in rows) for j in range(3))
    print(f"{a.patches} patches of 128x128x202 int16, best of {a.repeats} passes")
    print(f"PatchDataset (int16 COG -> normalised float32 tensor): {ds_rate:8.1f} patches/s")
    print(f"numpy raw (np.load of the same int16 pixels):          {raw_rate:8.1f} patches/s")
    print(f"numpy raw + the same normalisation to float32:         {norm_rate:8.1f} patches/s")
    print(f"ratio PatchDataset / raw:            {ds_rate / raw_rate:.2f}  (target >= 0.8)")
    print(f"ratio PatchDataset / raw+normalise:  {ds_rate / norm_rate:.2f}")


if __name__ == "__main__":
    main()
