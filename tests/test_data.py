"""hyperkd.data on files in the real layouts, written by our own writers."""
import numpy as np
import pytest
import torch
import xarray as xr

from hyperkd.data import (PatchDataset, ProductError, band_stats, demo_scene, hyspecnet_patches, open_cube, open_enmap,
                          open_spectral_earth_patch, product_name, select_bands, spectral_earth_patches, write_cube,
                          write_enmap_product)
from hyperkd.spectral import ENMAP, enmap_preset


def _cube(bands=ENMAP, ny=16, nx=16, seed=0):
    rng = np.random.default_rng(seed)
    return xr.DataArray(rng.uniform(0.02, 0.5, (len(bands), ny, nx)).astype(np.float32), dims=("band", "y", "x"),
                        coords={"band": list(bands.band_names), "wavelength": ("band", bands.wavelengths),
                                "fwhm": ("band", bands.fwhm)})


def test_corrupt_tiff_named_in_error(tmp_path):
    prod = write_enmap_product(_cube(), tmp_path)
    tif = prod / f"{prod.name}-SPECTRAL_IMAGE.TIF"
    tif.write_bytes(b"II*\x00" + np.random.default_rng(0).bytes(2000))
    with pytest.raises(ProductError, match="SPECTRAL_IMAGE.TIF"):
        open_enmap(prod)


def test_overwrite_is_atomic_and_keeps_old_on_failure(tmp_path):
    prod = write_enmap_product(_cube(seed=1), tmp_path, name=product_name(3))
    before = open_enmap(prod).values
    bad = _cube(seed=2)
    bad[0, 0, 0] = 10.0  # outside int16 at gain 1e-4: the write fails
    with pytest.raises(ValueError, match="int16"):
        write_enmap_product(bad, tmp_path, name=product_name(3), overwrite=True)
    np.testing.assert_array_equal(open_enmap(prod).values, before)
    assert [p.name for p in tmp_path.iterdir()] == [prod.name], "no temporary folders left behind"
    write_enmap_product(_cube(seed=2), tmp_path, name=product_name(3), overwrite=True)
    assert not np.allclose(open_enmap(prod).values, before)


def test_enmap_218_from_product_expected_list(tmp_path):
    expected = np.ones(224, bool)
    expected[[0, 1, 2, 221, 222, 223]] = False  # a product whose expected-channel list leaves out six bands
    prod = write_enmap_product(_cube(), tmp_path, expected_bands=expected)
    cube = open_enmap(prod, bands="enmap-218")
    assert cube.sizes["band"] == 218 and "B1" not in cube.band.values and "B224" not in cube.band.values


def test_select_bands_by_wavelength_and_missing_preset():
    c = _cube(enmap_preset("enmap-202"))
    vnir = select_bands(c, wavelength=(400, 1000))
    assert float(vnir.wavelength.max()) <= 1000 and vnir.sizes["band"] > 80
    with pytest.raises(ValueError, match="does not cover preset 'enmap-224'"):
        select_bands(c, "enmap-224")


def test_all_nodata_patches_skipped_and_counted(tmp_path):
    c = _cube(ny=32, nx=32)
    c[:, :16, :] = np.nan  # top half nodata
    ds = PatchDataset(write_enmap_product(c, tmp_path), size=16, stride=16, max_nodata=0.5)
    assert len(ds) == 2 and list(ds.skipped.values()) == [2]
    c[:] = np.nan
    with pytest.raises(ValueError, match="every patch was skipped"):
        PatchDataset(write_enmap_product(c, tmp_path, name=product_name(9)), size=16)


def test_spectral_earth_layout(tmp_path):
    p202 = enmap_preset("enmap-202")
    for i in range(3):
        f = tmp_path / "enmap" / f"patch_{i:04d}" / f"patch_{i:04d}.tif"
        write_cube(_cube(p202, 16, 16, seed=i), f, dtype="int16", scale=1e-4)
    files = spectral_earth_patches(tmp_path)
    assert len(files) == 3
    cube = open_spectral_earth_patch(files[0])
    assert cube.sizes["band"] == 202 and cube.band.values[0] == "B1"
    np.testing.assert_allclose(cube.wavelength.values, p202.wavelengths)
    ds = PatchDataset([open_spectral_earth_patch(f) for f in files], size=16)
    assert len(ds) == 3 and ds[0].shape == (202, 16, 16)
    with pytest.raises(ProductError, match="'enmap' folder"):
        spectral_earth_patches(tmp_path / "enmap")


def test_hyspecnet_layout_with_split_csv(tmp_path):
    names = []
    for i in range(2):
        tile = product_name(100 + i)
        patch = f"{tile}-Y0000{i}_X0000{i}"
        write_enmap_product(_cube(seed=i), tmp_path / "patches" / tile, name=patch)
        names.append(f"{tile}/{patch}/{patch}-DATA.npy")
    (tmp_path / "splits" / "easy").mkdir(parents=True)
    (tmp_path / "splits" / "easy" / "train.csv").write_text("\n".join(names) + "\n")
    files = hyspecnet_patches(tmp_path, "easy", "train")
    assert len(files) == 2 and all(f.name.endswith("-SPECTRAL_IMAGE.TIF") for f in files)
    ds = PatchDataset(files, size=16, bands="enmap-202")
    assert len(ds) == 2 and ds[1].shape == (202, 16, 16)
    with pytest.raises(ProductError, match="split file missing"):
        hyspecnet_patches(tmp_path, "hard", "train")


def test_patch_dataset_band_mismatch_between_sources(tmp_path):
    a = write_enmap_product(_cube(), tmp_path, name=product_name(1))
    b = write_cube(_cube(enmap_preset("enmap-202")), tmp_path / "b.tif")
    with pytest.raises(ValueError, match="do not match"):
        PatchDataset([a, b], size=16)
    assert len(PatchDataset([a, b], size=16, bands="enmap-202")) == 2


def test_demo_scene_band_stats_and_normalisation():
    scene = demo_scene(seed=3, size=64)
    ds = PatchDataset(scene.reflectance.rename("demo"), size=32)
    stats = band_stats(ds)
    x = torch.stack([PatchDataset(scene.reflectance.rename("demo"), size=32, stats=stats)[i] for i in range(4)])
    assert torch.allclose(x.mean((0, 2, 3)), torch.zeros(202), atol=1e-3)
    assert torch.allclose(x.std((0, 2, 3)), torch.ones(202), atol=0.05)


def _airborne_cube(ny=24, nx=24, lo=400.0, hi=2450.0, step=10.0):
    """A cube from another sensor (a 10 nm imaging spectrometer) holding real earthlib spectra, with band names
    B1..Bn that collide with EnMAP's but lie at other wavelengths."""
    from hyperkd.data import load_spectral_library
    lib = load_spectral_library()
    keep = (lib.wavelength.values >= lo) & (lib.wavelength.values <= hi)
    spectra = lib.values[np.linspace(0, lib.sizes["spectrum"] - 1, ny * nx).astype(int)][:, keep]
    wl = lib.wavelength.values[keep]
    return xr.DataArray(spectra.T.reshape(-1, ny, nx).astype(np.float32), dims=("band", "y", "x"),
                        coords={"band": [f"B{i + 1}" for i in range(wl.size)], "wavelength": ("band", wl),
                                "fwhm": ("band", np.full(wl.size, step))})


def test_other_sensor_cube_error_names_the_option(tmp_path):
    f = write_cube(_airborne_cube(), tmp_path / "aviris_like.tif", dtype="float32")
    with pytest.raises(ValueError, match=r"aviris_like.tif \(180 bands, 400-2450 nm\) is not on the 'enmap-202'") as e:
        PatchDataset(f, size=8, bands="enmap-202")
    assert "resample='srf'" in str(e.value) and "...." not in str(e.value)
    with pytest.raises(ValueError, match="Cube 'x' does not cover preset 'enmap-224': missing bands"):
        select_bands(_cube(enmap_preset("enmap-202")).rename("x"), "enmap-224")  # no more '....' either
    try:
        select_bands(_cube(enmap_preset("enmap-202")).rename("x"), "enmap-224")
    except ValueError as err:
        assert "...." not in str(err)


def test_patch_dataset_resamples_other_sensors_once(tmp_path, monkeypatch):
    from hyperkd.spectral import resample
    monkeypatch.setenv("HYPERKD_CACHE", str(tmp_path / "cache"))
    cube = _airborne_cube()
    f = write_cube(cube, tmp_path / "aviris_like.tif", dtype="float32")
    ds = PatchDataset(f, size=8, stride=8, bands="enmap-202", resample="srf")
    assert ds.n_bands == 202 and list(ds.band_names) == list(enmap_preset("enmap-202").band_names)
    cached = list((tmp_path / "cache" / "resampled").glob("*.tif"))
    assert len(cached) == 1 and ds.sources[0].path == str(cached[0])  # patches come from the cached file
    ref = resample(cube, dst=enmap_preset("enmap-202"), method="srf").values
    np.testing.assert_allclose(ds.raw(0), ref[:, :8, :8], atol=1e-5)
    mtime = cached[0].stat().st_mtime_ns
    ds2 = PatchDataset(f, size=8, stride=8, bands="enmap-202", resample="srf")
    assert cached[0].stat().st_mtime_ns == mtime and len(ds2) == len(ds)  # resampled once, reused
    vnir = write_cube(_airborne_cube(hi=1000.0), tmp_path / "vnir_only.tif", dtype="float32")
    with pytest.raises(ValueError, match=r"vnir_only.tif .* cannot be resampled to 'enmap-202': \d+ of its 202 bands lie "
                                         r"\(in part\) where the cube has no bands: 1\d\d\d"):
        PatchDataset(vnir, size=8, bands="enmap-202", resample="srf")
    with pytest.raises(ValueError, match="needs bands="):
        PatchDataset(f, size=8, resample="srf")


@pytest.mark.slow
def test_training_and_explorer_take_another_sensors_cube(tmp_path, monkeypatch):
    from hyperkd.distill import TrainConfig, train
    from hyperkd.explorer import open_explorer_inputs
    monkeypatch.setenv("HYPERKD_CACHE", str(tmp_path / "cache"))
    f = write_cube(_airborne_cube(48, 48) * 10000.0, tmp_path / "dn_scaled.tif", dtype="float32")  # not reflectance units
    with pytest.raises(ValueError, match="resample"):
        TrainConfig(resample="bilinear")
    cfg = TrainConfig.for_mode("mae", data=str(f), resample="srf", img_size=16, patch_size=8, batch_size=2, steps=2,
                               name="other", runs_dir=str(tmp_path / "runs"), progress=False, log_every=1)
    run = train(cfg)
    assert (run / "student.pt").exists() and (run / "reconstruction.png").exists()
    with pytest.raises(ValueError, match="resample='srf'"):
        open_explorer_inputs(run, f, log=lambda *a: None)
    i = open_explorer_inputs(run, f, resample="srf", log=lambda *a: None)
    assert i.cube.sizes["band"] == 202


# --- issue #19 part 2: one definition of nodata; stated metadata

def test_nan_nodata_float_file_gives_the_patches_of_the_cube_in_memory(tmp_path):
    "write_cube's float32 file (NaN nodata): direct reads, GDAL reads and the dn loader give the in-memory patches."
    c = _cube(enmap_preset("enmap-202"), 64, 64)
    c[:, :3, :] = np.nan  # 3 rows of 64 px: 192 nodata pixels
    f = write_cube(c, tmp_path / "nan.tif", dtype="float32")
    x_mem, m_mem = PatchDataset(c.rename("mem"), size=64, return_mask=True)[0]
    assert (int(torch.isnan(x_mem).sum()), int((~m_mem).sum())) == (0, 192)
    ds = PatchDataset(f, size=64, return_mask=True)
    assert ds.sources[0].layout is not None
    for layout in (ds.sources[0].layout, None):  # direct block reads, then GDAL
        ds.sources[0].layout = layout
        x, m = ds[0]
        assert (int(torch.isnan(x).sum()), int((~m).sum())) == (0, 192)
        assert torch.equal(m, m_mem)
        torch.testing.assert_close(x, x_mem)
    assert int(np.isnan(ds.raw(0)).any(0).sum()) == 192
    ds.return_mask = False
    ds.output = "dn"  # the raw loader, normalised on the device
    xb, mb = ds.normalize_batch(ds[0][None], return_mask=True)
    assert (int(torch.isnan(xb).sum()), int((~mb).sum())) == (0, 192)
    torch.testing.assert_close(xb[0], x_mem)


def test_resample_cache_nodata_reaches_patches_as_nodata(tmp_path, monkeypatch):
    "The resample cache is float32 with NaN nodata: its patches are masked there, never NaN."
    monkeypatch.setenv("HYPERKD_CACHE", str(tmp_path / "cache"))
    cube = _airborne_cube()
    cube[:, :3, :] = np.nan  # 3 rows of 24 px
    f = write_cube(cube, tmp_path / "other.tif", dtype="float32")
    ds = PatchDataset(f, size=24, bands="enmap-202", resample="srf", return_mask=True)
    assert ds.sources[0].path.endswith(".tif") and "resampled" in ds.sources[0].path
    x, m = ds[0]
    assert (int(torch.isnan(x).sum()), int((~m).sum())) == (0, 72)


def test_patch_filter_looks_at_every_band(tmp_path):
    "Pixels with data in one band only are nodata: patches made of them are skipped, whichever band has data."
    c = _cube(ny=32, nx=32)
    keep = 112  # the band the old filter looked at (the middle one)
    c[:keep, :16, :] = np.nan
    c[keep + 1:, :16, :] = np.nan
    ds = PatchDataset(write_enmap_product(c, tmp_path), size=16, stride=16)
    assert len(ds) == 2 and list(ds.skipped.values()) == [2]
    assert all(np.isfinite(ds.raw(i)).all() for i in range(len(ds)))
    ds1 = PatchDataset(c.rename("mem"), size=16, stride=16, max_nodata=1.0)  # even at max_nodata=1: no empty patch
    assert len(ds1) == 2


def test_product_with_bands_nodata_everywhere_is_named(tmp_path):
    "EnMAP L2A with B130-B136 nodata everywhere: the product, the bands and a preset without them are named."
    c = _cube(ny=32, nx=32)
    c[129:136] = np.nan
    prod = write_enmap_product(c, tmp_path)
    with pytest.raises(ProductError, match=rf"{prod.name}: 7 of its 224 bands hold no valid pixel \(nodata everywhere\): "
                                           r"B130-B136\..*bands='enmap-202'"):
        PatchDataset(prod, size=16, bands="enmap-224")
    ds = PatchDataset(prod, size=16, bands="enmap-202")
    st = band_stats(ds)
    assert len(ds) == 4 and st.count.min() == 32 * 32
    with pytest.raises(ValueError, match=r"band_stats of p.tif: 7 of 224 bands have no valid pixel: B130-B136"):
        band_stats([c.values], band_names=list(ENMAP.band_names), name="p.tif")


def _bare_tif(path, data):
    "A GeoTIFF without any wavelength metadata (no tags, no descriptions)."
    import rasterio
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0],
                       dtype=data.dtype.name) as f:
        f.write(data)
    return path


def test_stated_wavelengths_reach_open_cube(tmp_path):
    "Wavelengths stated as a CSV (with units) or a preset name, for a file whose metadata has none."
    f = _bare_tif(tmp_path / "bare.tif", np.full((5, 16, 16), 0.2, np.float32))
    with pytest.raises(ProductError, match="no wavelength metadata"):
        PatchDataset(f, size=16)
    (tmp_path / "wl.csv").write_text("band,Wavelength (um)\n1,0.45\n2,0.55\n3,0.65\n4,0.85\n5,1.65\n")
    ds = PatchDataset(f, size=16, wavelengths=tmp_path / "wl.csv", units="um")
    np.testing.assert_allclose(ds.wavelengths, [450, 550, 650, 850, 1650])
    (tmp_path / "bad.csv").write_text("450\n550\nx\n")
    with pytest.raises(ProductError, match=r"bad.csv.*'x'"):
        PatchDataset(f, size=16, wavelengths=tmp_path / "bad.csv")
    se = _bare_tif(tmp_path / "se.tif", np.full((202, 16, 16), 1234, np.int16))
    ds = PatchDataset(se, size=16, wavelengths="enmap-202", bands="enmap-202")
    assert list(ds.band_names) == list(enmap_preset("enmap-202").band_names)
    np.testing.assert_allclose(ds.wavelengths, enmap_preset("enmap-202").wavelengths)
    with pytest.raises(ValueError, match="apply to files"):
        PatchDataset(_cube().rename("mem"), size=16, wavelengths="enmap-224")


def test_reader_scaling_unknown_to_the_file_tags_is_never_lost(tmp_path):
    "A cube scaled by its reader (e.g. a reflectance scale factor of 10000): patches hold the cube's values."
    c = _cube(enmap_preset("enmap-202"), 16, 16).round(4)
    f = write_cube((c * 10000).fillna(-1), tmp_path / "dn.tif", dtype="int16", nodata=-1)
    scaled = open_cube(f) / 10000
    scaled.attrs = open_cube(f).attrs
    ds = PatchDataset(scaled, size=16)
    np.testing.assert_allclose(ds.raw(0), c.values, rtol=1e-5)


def test_stated_scale_factor_is_passed_to_open_cube(tmp_path, monkeypatch):
    "TrainConfig(scale_factor=, wavelengths=, wavelength_units=) reach open_cube through build_dataset."
    import hyperkd.patches as P
    from hyperkd.distill import TrainConfig, build_dataset
    seen, real = [], P.open_cube

    def spy(path, **kw):
        seen.append(kw)
        return real(path, **kw)
    monkeypatch.setattr(P, "open_cube", spy)
    f = _bare_tif(tmp_path / "se.tif", np.full((202, 16, 16), 1234, np.int16))
    cfg = TrainConfig.for_mode("mae", data=str(f), wavelengths="enmap-202", scale_factor="10000", img_size=16)
    ds = build_dataset(cfg)
    assert seen[0] == {"wavelengths": "enmap-202", "scale_factor": 10000.0}
    assert ds.n_bands == 202


def test_stated_scale_factor_gives_reflectance(tmp_path):
    f = _bare_tif(tmp_path / "se.tif", np.full((202, 16, 16), 1234, np.int16))
    ds = PatchDataset(f, size=16, wavelengths="enmap-202", bands="enmap-202", scale_factor=10000)
    np.testing.assert_allclose(ds.raw(0), 0.1234, rtol=1e-6)
    assert ds.sources[0].path is not None  # the stated factor is taken into the direct reads' gain
