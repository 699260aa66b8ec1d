"""Behaviour of hyperkd.spectral beyond what the notebook demonstrates."""
import numpy as np
import pytest
import torch
import xarray as xr

from hyperkd.spectral import ENMAP, Sensor, alignment_matrix, enmap_preset, get_sensor, resample


@pytest.mark.parametrize("dst", ["hls", "msi", "oli"])
@pytest.mark.parametrize("src", ["enmap", "enmap-202", "enmap-218"])
def test_srf_alignment_rows_sum_to_one(src, dst):
    dst_s = get_sensor(dst)
    if dst != "hls":  # the water-vapour / cirrus bands of MSI and OLI are only partly covered by some presets
        dst_s = dst_s.subset(get_sensor(dst).covered_by(get_sensor(src)))
    m = alignment_matrix(src, dst_s, "srf")
    assert m.shape == (len(dst_s), len(get_sensor(src)))
    assert torch.allclose(m.sum(1), torch.ones(len(dst_s)), atol=1e-5)
    assert (m >= 0).all()


def test_from_metadata_non_monotonic_and_units():
    wl_um = np.array([0.95, 0.45, 0.56, 0.66, 0.93])  # overlap like EnMAP's two detectors
    s = Sensor.from_metadata(wl_um, units="um", name="toy")
    assert np.allclose(s.wavelengths, wl_um * 1000)
    assert (s.fwhm > 0).all() and s.fwhm[0] == pytest.approx(20.0)  # spacing to nearest centre (930 nm)
    with pytest.raises(ValueError, match="micrometres"):
        Sensor.from_metadata(wl_um, name="toy")  # units forgotten
    with pytest.raises(ValueError, match="band names"):
        Sensor("x", ("a",), np.array([500.0, 600.0]), np.array([10.0, 10.0]))
    with pytest.raises(ValueError, match="FWHM"):
        Sensor("x", ("a", "b"), np.array([500.0, 600.0]), np.array([10.0, -1.0]))


def test_empty_overlap_is_an_error_naming_the_band():
    vis = ENMAP.between(400, 700, name="EnMAP VIS")
    for method in ("range", "srf", "nearest"):
        with pytest.raises(ValueError, match="NIR_NARROW"):
            alignment_matrix(vis, "hls", method)


def test_resample_keeps_dtype_device_and_nodata():
    x = torch.rand(224, 4, 4, dtype=torch.float64)
    x[30, 0, 0] = float("nan")  # B31 is inside GREEN (B24-B35), not inside BLUE
    y = resample(x, ENMAP, "hls", "range")
    assert y.dtype == torch.float64 and y.shape == (6, 4, 4)
    assert torch.isnan(y[1, 0, 0]) and not torch.isnan(y[0, 0, 0])
    yi = resample((x.nan_to_num() * 10000).to(torch.int16), ENMAP, "hls", "range")
    assert yi.dtype == torch.float32


def test_resample_dask_backed_cube_stays_lazy():
    da = pytest.importorskip("dask.array")
    p = enmap_preset("enmap-202")
    data = da.random.random((202, 64, 64), chunks=(202, 32, 32)).astype("float32")
    cube = xr.DataArray(data, dims=("band", "y", "x"),
                        coords={"band": list(p.band_names), "wavelength": ("band", p.wavelengths), "fwhm": ("band", p.fwhm)})
    out = resample(cube, dst="hls", method="srf")
    assert out.chunks is not None, "result should still be a lazy dask array"
    ref = resample(np.asarray(cube.values), p, "hls", "srf")
    np.testing.assert_allclose(out.values, ref, rtol=1e-5)
