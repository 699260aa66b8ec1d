"""Issue #19 parts 1 and 3: real files as people hold them (ENVI header variants, EMIT/PRISMA/DESIS containers,
EnMAP ZIP deliveries and renamed products), read right or refused clearly. Every file is written by our own code
in the real layout and read back through the public reader."""
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from hyperkd.cubes import open_cube, to_preset, write_cube
from hyperkd.enmap import ProductError, product_name, write_enmap_product
from hyperkd.products import write_emit_l2a, write_prisma_l2d
from hyperkd.spectral import ENMAP, enmap_preset


def _envi(tmp_path, data, extra, name="c", wl=None, dtype="<f4", dtype_code=4):
    n = data.shape[0]
    np.asarray(data, dtype).tofile(tmp_path / f"{name}.bsq")
    wl = np.linspace(420, 2450, n) if wl is None else wl
    (tmp_path / f"{name}.hdr").write_text(
        f"ENVI\nsamples = {data.shape[2]}\nlines = {data.shape[1]}\nbands = {n}\nheader offset = 0\n"
        f"file type = ENVI Standard\ndata type = {dtype_code}\ninterleave = bsq\nbyte order = 0\n"
        "wavelength = {" + ", ".join(f"{w:.6f}" for w in wl) + "}\n" + extra)
    return tmp_path / f"{name}.bsq"


@pytest.mark.parametrize("units", ["Nanometer", "Nanometers", "nanometers", "nm", "NM"])
def test_envi_nanometer_spellings(tmp_path, units):
    c = open_cube(_envi(tmp_path, np.full((4, 4, 4), 0.3), f"wavelength units = {units}\n"), log=lambda *a: None)
    np.testing.assert_allclose(c.wavelength.values, np.linspace(420, 2450, 4), atol=1e-3)


@pytest.mark.parametrize("units", ["Micrometers", "Micrometer", "um", "µm", "Microns"])
def test_envi_micrometer_spellings(tmp_path, units):
    wl = np.linspace(0.42, 2.45, 4)
    c = open_cube(_envi(tmp_path, np.full((4, 4, 4), 0.3), f"wavelength units = {units}\n", wl=wl))
    np.testing.assert_allclose(c.wavelength.values, wl * 1000, rtol=1e-6)


def test_envi_unknown_unit_names_file(tmp_path):
    f = _envi(tmp_path, np.full((4, 4, 4), 0.3), "wavelength units = Parsecs\n")
    with pytest.raises(ProductError, match=r"c\.hdr.*Unknown wavelength units 'Parsecs'"):
        open_cube(f)
    # and the user can state the right units
    np.testing.assert_allclose(open_cube(f, units="nm").wavelength.values, np.linspace(420, 2450, 4), atol=1e-3)


def test_envi_fwhm_read_from_header(tmp_path):
    c = open_cube(_envi(tmp_path, np.full((4, 4, 4), 0.3), "wavelength units = Nanometers\nfwhm = {7, 8, 9, 10}\n"))
    np.testing.assert_allclose(c.fwhm.values, [7, 8, 9, 10])  # GDAL's per-band tags carry no fwhm


def test_envi_bbl_bad_bands_never_used(tmp_path):
    # 211 bands 400-2500 nm every 10 nm, FWHM 25 nm; three zero bands near 1000 nm flagged bad
    wl = np.arange(400.0, 2501.0, 10.0)
    data = np.full((wl.size, 4, 4), 0.3)
    bad = np.argsort(np.abs(wl - 1000))[:3]
    data[bad] = 0.0
    bbl = np.ones(wl.size, int); bbl[bad] = 0
    f = _envi(tmp_path, data, "wavelength units = Nanometers\nfwhm = {" + ", ".join(["25"] * wl.size) + "}\n"
              "bbl = {" + ", ".join(map(str, bbl)) + "}\n", wl=wl)
    logs = []
    c = open_cube(f, log=logs.append)
    assert c.sizes["band"] == wl.size - 3 and not np.isin(c.wavelength.values, wl[bad]).any()
    assert any("bbl" in m and "3 band" in m for m in logs)
    out = to_preset(c, "enmap-202", "srf", cache=False)
    b = {n: i for i, n in enumerate(out.band.values)}
    for name in ("B91", "B101", "B102", "B103"):  # old code: B102 0.06, neighbours 0.08-0.11 low
        np.testing.assert_allclose(out.values[b[name]], 0.3, atol=1e-4)


def test_envi_reflectance_scale_factor_and_ignore_value(tmp_path):
    data = np.tile(np.array([500, 1500, 2500, 4500], np.int16)[:, None, None], (1, 4, 4))
    data[:, 0, 0] = -9999
    f = _envi(tmp_path, data, "wavelength units = nm\nreflectance scale factor = 10000\ndata ignore value = -9999\n",
              dtype="<i2", dtype_code=2)
    c = open_cube(f)
    np.testing.assert_allclose(c.values[:, 1, 1], [0.05, 0.15, 0.25, 0.45], rtol=1e-6)
    assert np.isnan(c.values[:, 0, 0]).all() and int(np.isnan(c.values).sum()) == 4
    np.testing.assert_allclose(open_cube(f, scale_factor=1000).values[:, 1, 1], [0.5, 1.5, 2.5, 4.5], rtol=1e-6)
    with pytest.raises(ProductError, match="scale_factor"):
        open_cube(f, scale_factor=0)


def test_imagery_domain_wavelengths(tmp_path):
    import rasterio
    from affine import Affine
    f = tmp_path / "imagery.tif"
    with rasterio.open(f, "w", driver="GTiff", width=3, height=3, count=2, dtype="float32", crs="EPSG:32611",
                       transform=Affine(30, 0, 0, 0, -30, 0)) as d:
        d.write(np.full((2, 3, 3), 0.2, "f4"))
        for i, (w, fw) in enumerate([(0.5, 0.01), (0.6, 0.012)]):
            d.update_tags(i + 1, ns="IMAGERY", CENTRAL_WAVELENGTH_UM=str(w), FWHM_UM=str(fw))
    c = open_cube(f)
    np.testing.assert_allclose(c.wavelength.values, [500, 600]); np.testing.assert_allclose(c.fwhm.values, [10, 12])


def test_wavelengths_override_csv_preset_and_errors(tmp_path):
    import rasterio
    f = tmp_path / "plain.tif"
    with rasterio.open(f, "w", driver="GTiff", width=4, height=4, count=3, dtype="float32") as d:
        d.write(np.ones((3, 4, 4), np.float32))
    (tmp_path / "b.csv").write_text("wavelength,fwhm\n0.48,0.01\n0.56,0.01\n0.66,0.01\n")
    c = open_cube(f, wavelengths=tmp_path / "b.csv", units="Micrometers")
    np.testing.assert_allclose(c.wavelength.values, [480, 560, 660]); np.testing.assert_allclose(c.fwhm.values, [10] * 3)
    with pytest.raises(ProductError, match=r"plain\.tif.*wavelengths= gives 202"):
        open_cube(f, wavelengths="enmap-202")
    with pytest.raises(ProductError, match=r"plain\.tif.*wavelengths="):
        open_cube(f, wavelengths="no-such-preset")
    prod = write_enmap_product(_small_enmap(), tmp_path / "p")
    tif = next(prod.glob("*-SPECTRAL_IMAGE.TIF"))
    g = open_cube(tif, wavelengths="enmap", scale_factor=10000)  # the image alone, as a preset
    assert list(g.band.values[:2]) == ["B1", "B2"] and g.sizes["band"] == 224


def _small_enmap():
    rng = np.random.default_rng(0)
    cube = xr.DataArray(rng.uniform(0.01, 0.6, (224, 6, 5)).astype(np.float32), dims=("band", "y", "x"),
                        coords={"band": list(ENMAP.band_names), "wavelength": ("band", ENMAP.wavelengths),
                                "fwhm": ("band", ENMAP.fwhm)})
    cube[:, 0, 0] = np.nan
    return cube


def test_enmap_zip_read_in_place(tmp_path):
    prod = write_enmap_product(_small_enmap(), tmp_path / "unzipped")
    z = tmp_path / f"{prod.name}.ZIP"
    with zipfile.ZipFile(z, "w") as zf:
        for p in prod.iterdir():
            zf.write(p, f"{prod.name}/{p.name}")
    c = open_cube(z)
    ref = open_cube(prod)
    assert c.sizes["band"] == 224 and c.attrs["sensor"] == "EnMAP"
    np.testing.assert_array_equal(np.isnan(c.values), np.isnan(ref.values))
    np.testing.assert_allclose(np.nan_to_num(c.values), np.nan_to_num(ref.values))
    empty = tmp_path / "other.zip"
    with zipfile.ZipFile(empty, "w") as zf:
        zf.writestr("readme.txt", "nothing")
    with pytest.raises(ProductError, match=r"other\.zip.*ZIP archive"):
        open_cube(empty)


def test_enmap_renamed_and_copied(tmp_path):
    prod = write_enmap_product(_small_enmap(), tmp_path / "p")
    ref = open_cube(prod).values
    low = tmp_path / "lower"; low.mkdir()
    for p in prod.iterdir():  # copies that lower-case the suffixes
        shutil.copy(p, low / (p.stem + p.suffix.lower()))
    np.testing.assert_allclose(np.nan_to_num(open_cube(next(low.glob("*-SPECTRAL_IMAGE.tif"))).values), np.nan_to_num(ref))
    ren = tmp_path / "renamed"; ren.mkdir()
    shutil.copy(next(prod.glob("*-SPECTRAL_IMAGE.TIF")), ren / "scene.tif")
    shutil.copy(next(prod.glob("*-METADATA.XML")), ren / "scene.xml")
    c = open_cube(ren / "scene.tif")
    assert c.attrs["sensor"] == "EnMAP"
    np.testing.assert_allclose(np.nan_to_num(c.values), np.nan_to_num(ref))


def test_emit_l2a(tmp_path):
    rng = np.random.default_rng(1)
    wl = np.linspace(381, 2493, 285); fw = np.full(285, 8.5)
    good = ((wl < 1320) | (wl > 1440)) & ((wl < 1770) | (wl > 1960))
    r = rng.uniform(0.02, 0.5, (285, 5, 4)).astype(np.float32); r[:, 1, 2] = np.nan
    gx = np.array([[0, 1, 2], [3, 4, 4]]); gy = np.array([[0, 1, 1], [2, 5, 4]])
    f = write_emit_l2a(tmp_path / "EMIT_L2A_RFL_001_20230806T183000_2321812_005.nc", r, wl, fw, good, glt=(gx, gy))
    logs = []
    c = open_cube(f, log=logs.append)
    assert c.dims == ("band", "y", "x") and c.shape == (int(good.sum()), 5, 4)
    np.testing.assert_allclose(c.wavelength.values, wl[good], rtol=1e-6)
    assert np.isnan(c.values[:, 1, 2]).all() and int(np.isnan(c.values).sum()) == good.sum()
    np.testing.assert_allclose(c.values[:, 3, 1], r[good, 3, 1])
    assert any("good_wavelengths" in m for m in logs)
    o = open_cube(f, ortho=True, log=lambda *a: None)
    assert o.shape == (int(good.sum()), 2, 3) and np.isnan(o.values[:, 0, 0]).all()
    np.testing.assert_allclose(o.values[:, 1, 1], r[good, 4, 3])  # GLT 1-based: (x=4, y=5) -> [4, 3]
    assert o.rio.crs.to_epsg() == 4326


def test_prisma_l2d(tmp_path):
    rng = np.random.default_rng(2)
    cw_v = np.r_[np.linspace(1000, 400, 63), 0, 0, 0]; cw_s = np.r_[np.linspace(2500, 920, 171), 0, 0]
    dn_v = rng.integers(1, 65535, (3, 66, 4)).astype(np.uint16); dn_s = rng.integers(1, 65535, (3, 173, 4)).astype(np.uint16)
    f = write_prisma_l2d(tmp_path / "PRS_L2D_STD_20200101_0001.he5", dn_v, dn_s, cw_v, cw_s, np.full(66, 12.0),
                         np.full(173, 11.0), scale_vnir=(0.0, 0.7), scale_swir=(0.0, 0.5))
    c = open_cube(f)
    assert c.sizes["band"] == 63 + 171
    assert np.all(np.diff(c.wavelength.values[:63]) > 0) and np.all(np.diff(c.wavelength.values[63:]) > 0)
    np.testing.assert_allclose(c.values[0, 1, 2], dn_v[1, 62, 2] / 65535 * 0.7, rtol=1e-5)  # 400 nm: last VNIR band
    np.testing.assert_allclose(c.fwhm.values[:63], 12.0)
    assert to_preset(c, "enmap-202", "srf", cache=False).sizes["band"] == 202


def test_desis_refused_and_other_containers(tmp_path):
    import h5py
    cube = _small_enmap().isel(band=slice(0, 30))
    f = write_cube(cube, tmp_path / "DESIS-HSI-L2A-DT0483531728_001-20200923T152248-V0210-SPECTRAL_IMAGE.tif")
    with pytest.raises(ProductError, match="DESIS.*wavelengths="):
        open_cube(f)
    assert open_cube(f, wavelengths=cube.wavelength.values).sizes["band"] == 30
    with h5py.File(tmp_path / "random.nc", "w") as h:
        h["x"] = np.zeros(3)
    with pytest.raises(ProductError, match=r"random\.nc.*EMIT L2A reflectance.*PRISMA L2D"):
        open_cube(tmp_path / "random.nc")


def test_envi_gains_offsets_and_big_endian(tmp_path):
    data = np.tile(np.array([100, 200, 300, 400], np.int16)[:, None, None], (1, 3, 3))
    f = _envi(tmp_path, data, "wavelength units = nm\ndata gain values = {0.001, 0.001, 0.001, 0.001}\n"
              "data offset values = {0.01, 0.01, 0.01, 0.01}\n", dtype=">i2", dtype_code=2)
    f.with_suffix(".hdr").write_text(f.with_suffix(".hdr").read_text().replace("byte order = 0", "byte order = 1"))
    np.testing.assert_allclose(open_cube(f).values[:, 1, 1], [0.11, 0.21, 0.31, 0.41], rtol=1e-5)


def test_bbl_still_applies_with_wavelengths_given(tmp_path):
    f = _envi(tmp_path, np.full((4, 3, 3), 0.3), "bbl = {1, 0, 1, 1}\n")
    c = open_cube(f, wavelengths=[500, 600, 700, 800], log=lambda *a: None)
    np.testing.assert_allclose(c.wavelength.values, [500, 700, 800])


def test_envi_header_opens_its_own_data_file_only(tmp_path):
    "name.hdr pairs with `name` or `name.<ext>`; a sibling that merely shares the stem is never read."
    hdr = _envi(tmp_path, np.full((3, 4, 4), 0.25, np.float32), "wavelength units = nm\n").with_suffix(".hdr")
    (tmp_path / "c_old.img").write_bytes(b"not this one")  # shares the stem 'c', sorts before 'c.bsq'
    (tmp_path / "cache").mkdir()
    np.testing.assert_allclose(open_cube(hdr, log=lambda *a: None).values, 0.25)
    (tmp_path / "c.bsq").rename(tmp_path / "cache" / "c.bsq")
    with pytest.raises(ProductError, match="c.hdr: ENVI header without its data file"):
        open_cube(hdr)


def test_envi_read_when_the_environment_hides_sidecar_files(tmp_path, monkeypatch):
    "GDAL_DISABLE_READDIR_ON_OPEN=EMPTY_DIR (terratorch's CLI writes it into os.environ) hid ENVI headers from GDAL."
    from rasterio.env import get_gdal_config, set_gdal_config
    data = np.arange(4 * 5 * 6, dtype="f4").reshape(4, 5, 6) / 200
    f = _envi(tmp_path, data, "wavelength units = Nanometers\n")
    monkeypatch.setenv("GDAL_DISABLE_READDIR_ON_OPEN", "EMPTY_DIR")
    try:
        with pytest.warns(UserWarning, match=r"c\.bsq: GDAL_DISABLE_READDIR_ON_OPEN hid the ENVI header"):
            c = open_cube(f)
        np.testing.assert_array_equal(c.values, data)  # the lazy reads after the open see the header too
        assert get_gdal_config("GDAL_DISABLE_READDIR_ON_OPEN") in ("FALSE", False)
    finally:
        set_gdal_config("GDAL_DISABLE_READDIR_ON_OPEN", None)  # leave the process as it was for later tests
