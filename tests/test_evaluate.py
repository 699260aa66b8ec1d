"""Metric edge cases a user meets with real inputs: single pixels (spectral libraries) and tiny images."""
import math

import pytest
import torch

from hyperkd.evaluate import reconstruction_metrics
from hyperkd.losses import ssim_loss, ssim_map


@pytest.mark.parametrize("size", [1, 3, 6])
def test_metrics_on_images_smaller_than_the_ssim_window(size):
    g = torch.Generator().manual_seed(size)
    t = torch.rand(2, 4, size, size, generator=g, dtype=torch.float64)
    p = t + 0.01 * torch.randn(t.shape, generator=g, dtype=torch.float64)
    r = reconstruction_metrics(p, t, data_range=1.0)
    rmse = float(((p - t) ** 2).mean().sqrt())
    assert r["all"]["psnr"] == pytest.approx(-20 * math.log10(rmse)) and r["all"]["rmse"] == pytest.approx(rmse)
    assert r["all"]["n_pixels"] == 2 * size * size and math.isfinite(r["all"]["sam_deg"])
    same = reconstruction_metrics(t, t, data_range=1.0)
    if size == 1:
        assert r["ssim_window"] is None and math.isnan(r["all"]["ssim"]) and "1 x 1" in r["ssim_note"]
    else:
        assert r["ssim_window"] == {3: 3, 6: 5}[size] and str(size) in r["ssim_note"]
        assert same["all"]["ssim"] == pytest.approx(1.0, abs=1e-9)
        assert 0.0 < r["all"]["ssim"] < 1.0
        assert r["per_band"].ssim.notna().all()


def test_metrics_on_spectra_shaped_one_by_one():
    a = torch.tensor([[[[0.1]], [[0.2]]]]); b = torch.tensor([[[[0.1]], [[0.25]]]])  # (1, 2, 1, 1): one spectrum
    r = reconstruction_metrics(a, b)
    assert math.isnan(r["all"]["ssim"]) and r["all"]["sam_deg"] > 0


def test_full_size_images_keep_the_7x7_window():
    t = torch.rand(1, 3, 16, 16, dtype=torch.float64)
    r = reconstruction_metrics(t * 0.9, t)
    assert r["ssim_window"] == 7 and r["ssim_note"] == "7 x 7 Gaussian window"


@pytest.mark.parametrize("size", [1, 3, 6])
def test_ssim_functions_name_the_sizes(size):
    t = torch.rand(1, 2, size, size)
    for fn in (lambda: ssim_map(t, t), lambda: ssim_loss(t, t)):
        with pytest.raises(ValueError, match=f"{size} x {size} px are smaller than the 7 x 7"):
            fn()
    if size >= 3:  # a window that fits works
        assert float(ssim_map(t, t, window=3).mean()) == pytest.approx(1.0, abs=1e-5)
