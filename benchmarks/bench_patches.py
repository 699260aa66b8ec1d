"""PatchDataset throughput on SpectralEarth-style patches (128x128x202 int16 COG files) against reading the
same pixel bytes raw with numpy, measured side by side in one run.

    python benchmarks/bench_patches.py [--patches 64] [--repeats 3]

Prints patches/s and ratios to raw (target: PatchDataset >= 0.8 x raw). All read from the page cache: both
sets of files are flushed, evicted and read back once before timing (so the page cache holds them the same way
whatever wrote them), and the ratios measure decoding + normalisation overhead, not the disk.

  PatchDataset output="dn"     : the file's int16 pixels (direct block reads), normalised later on the device
                                 by normalize_batch (how the trainer reads file data) -- compared with np.load
  PatchDataset output="float"  : normalised float32 items (direct block reads + affine on the CPU)
  PatchDataset via GDAL        : the same with direct reads switched off (rasterio/GDAL decoding)
  normalize_batch              : the device-side step of "dn", here on the CPU, per patch of a batch of 8
"""
import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
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
    # Put both sets of files in the page cache the same way, as files read from disk would be: how a file was
    # *written* shapes its page cache (GDAL's many small writes read back ~1.5x slower than np.save's large ones),
    # which would measure the writers, not the readers. So: flush, evict, read each file once.
    files = raws + sorted((root / "enmap").rglob("*.tif"))
    for f in files:
        fd = os.open(f, os.O_RDONLY)
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)
    for f in files:
        with open(f, "rb") as fh:
            while fh.read(1 << 20):
                pass
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
        dn = PatchDataset([open_spectral_earth_patch(f) for f in spectral_earth_patches(root)], size=128, stats=ds.stats, output="dn")
        gdal = PatchDataset([open_spectral_earth_patch(f) for f in spectral_earth_patches(root)], size=128, stats=ds.stats)
        for src in gdal.sources:
            src.layout = None
        assert all(s.layout is not None for s in ds.sources), "expected direct block reads on uncompressed COGs"
        for f in raws:  # warm the page cache for both
            np.load(f)
        for i in range(len(ds)):
            ds[i]

        def rate(fn, n):
            t = time.perf_counter()
            fn()
            return n / (time.perf_counter() - t)

        def loop(d):  # items are dropped as they come, like np.load's arrays in raw_loop
            def run():
                for i in range(len(d)):
                    d[i]
            return run

        def raw_loop():
            for f in raws:
                np.load(f)

        scale = (1e-4 / ds.stats.std).astype(np.float32)[:, None, None]
        shift = (-ds.stats.mean / ds.stats.std).astype(np.float32)[:, None, None]

        def raw_norm():  # the floor for any loader that must return normalised float32 on the CPU
            for f in raws:
                x = np.load(f).astype(np.float32)
                x *= scale
                x += shift

        batch = torch.stack([dn[i] for i in range(8)])

        def norm_batches():
            for _ in range(len(raws) // 8):
                dn.normalize_batch(batch)

        x_dn = dn.normalize_batch(torch.stack([dn[i] for i in range(4)]))
        assert torch.equal(x_dn, torch.stack([ds[i] for i in range(4)])), "dn + normalize_batch must equal float items"
        rows = [(rate(loop(dn), len(dn)), rate(raw_loop, len(raws)), rate(loop(ds), len(ds)), rate(loop(gdal), len(gdal)),
                 rate(raw_norm, len(raws)), rate(norm_batches, (len(raws) // 8) * 8)) for _ in range(a.repeats)]
    dn_rate, raw_rate, ds_rate, gdal_rate, norm_rate, nb_rate = (max(r[j] for r in rows) for j in range(6))
    print(f"{a.patches} patches of 128x128x202 int16 COG, best of {a.repeats} passes, torch threads {torch.get_num_threads()}")
    print(f"PatchDataset output='dn' (direct block reads, int16):      {dn_rate:8.1f} patches/s")
    print(f"numpy raw (np.load of the same int16 pixels):              {raw_rate:8.1f} patches/s")
    print(f"PatchDataset output='float' (direct reads + CPU affine):   {ds_rate:8.1f} patches/s")
    print(f"PatchDataset output='float' via GDAL (direct reads off):   {gdal_rate:8.1f} patches/s")
    print(f"numpy raw + the same normalisation to float32 (CPU):       {norm_rate:8.1f} patches/s")
    print(f"normalize_batch on the CPU (the device step of 'dn'):      {nb_rate:8.1f} patches/s")
    print(f"ratio PatchDataset 'dn' / raw:        {dn_rate / raw_rate:.2f}  (target >= 0.8)")
    print(f"ratio PatchDataset 'float' / raw:     {ds_rate / raw_rate:.2f}")
    print(f"ratio 'float' / raw + normalise:      {ds_rate / norm_rate:.2f}")
    print(f"ratio GDAL 'float' / raw:             {gdal_rate / raw_rate:.2f}")


if __name__ == "__main__":
    main()
