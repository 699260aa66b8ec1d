"""Metric edge cases a user meets with real inputs (single pixels, tiny images); encoders on whole scenes; the
downstream protocols and baselines; paired statistics and the no-teacher control."""
import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from hyperkd.evaluate import (PROTOCOLS, compare_variants, encoder_features, paired_bootstrap, random_init_like,
                              reconstruction_metrics, run_protocol, variant_config)
from hyperkd.losses import ssim_loss, ssim_map
from hyperkd.models import HyperspectralMAE


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


# --- encoders on whole scenes, protocols, paired statistics ----------------------------------------------------------


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return HyperspectralMAE.from_preset("tiny", in_chans=10, img_size=16, patch_size=4).eval()


def test_whole_scene_features_stitch_tiles(tiny):
    x = torch.randn(1, 10, 32, 48)
    f = encoder_features(tiny, x, overlap=0.0)  # tiles side by side: each token is its own tile's
    assert f.shape == (1, 96, 8, 12)
    for y0, x0 in ((0, 0), (16, 32), (0, 16)):
        own = encoder_features(tiny, x[:, :, y0:y0 + 16, x0:x0 + 16])
        torch.testing.assert_close(f[:, :, y0 // 4:y0 // 4 + 4, x0 // 4:x0 // 4 + 4], own, rtol=1e-5, atol=1e-5)
    scene = torch.randn(1, 10, 145, 145)  # not a multiple of the patch, not of the tile
    g = encoder_features(tiny, scene)
    assert g.shape == (1, 96, 37, 37) and torch.isfinite(g).all()
    small = encoder_features(tiny, torch.randn(2, 10, 9, 9))  # smaller than a tile: padded, then cut
    assert small.shape == (2, 96, 3, 3)


def test_heads_predict_whole_scenes_and_finetune_trains_a_copy(tiny):
    g = torch.Generator().manual_seed(0)
    lab = torch.randint(1, 4, (24, 16, 16), generator=g)
    x = torch.randn(24, 10, 16, 16, generator=g) * 0.3 + F.one_hot(lab, 10).permute(0, 3, 1, 2).float()
    big_lab = torch.randint(1, 4, (2, 40, 44), generator=g)
    big = torch.randn(2, 10, 40, 44, generator=g) * 0.3 + F.one_hot(big_lab, 10).permute(0, 3, 1, 2).float()
    before = {k: v.clone() for k, v in tiny.state_dict().items()}
    for protocol in PROTOCOLS:
        r = run_protocol(protocol, tiny, x, lab, big, big_lab, "segmentation", 4, epochs=3, return_model=True)
        assert 0 <= r["miou"] <= 1 and r["epochs"] >= 1
        if protocol == "finetune":
            tuned = r["model"].model.state_dict()
            assert any(not torch.equal(before[k], tuned[k]) for k in before if k.startswith("encoder."))
    for k, v in tiny.state_dict().items():
        assert torch.equal(before[k], v), k  # the caller's encoder is never trained
    raw = run_protocol("frozen", None, x, lab, big, big_lab, "segmentation", 4, epochs=30)
    assert raw["miou"] > 0.9  # the label is in the spectra: the per-pixel head on raw spectra finds it
    soc = run_protocol("linear", tiny, x, lab.float(), big, big_lab.float(), "regression", epochs=3)
    assert {"rmse", "r2", "rpiq"} <= set(soc)
    with pytest.raises(ValueError, match="img_size 16x16"):
        run_protocol("finetune", tiny, big, big_lab, big, big_lab, "segmentation", 4)


def test_random_init_is_the_runs_initialisation(tiny):
    torch.manual_seed(3)
    ref = HyperspectralMAE(**tiny.config)
    again = random_init_like(tiny, seed=3)
    for k, v in ref.state_dict().items():
        assert torch.equal(v, again.state_dict()[k]), k


def test_bootstrap_interval_covers_a_known_paired_difference():
    rng = np.random.default_rng(0)
    covered = 0
    for rep in range(200):
        a = rng.normal(0, 1, 8)
        b = a + 0.2 + rng.normal(0, 0.1, 8)
        iv = paired_bootstrap(a, b, n_boot=2000, seed=rep)
        covered += iv["lo"] <= 0.2 <= iv["hi"]
    assert 0.85 <= covered / 200 <= 0.99  # a 95 % percentile interval from 8 pairs: near, a little under, 95 %


def test_control_variant_and_comparison_frame():
    ctl, full = variant_config("hyperkd-no-teacher"), variant_config("hyperkd")
    assert ctl.loss["distill"] == 0 and full.loss["distill"] > 0
    assert (ctl.mode, ctl.mask, ctl.alignment, ctl.teacher) == (full.mode, full.mask, full.alignment, full.teacher)
    df = pd.DataFrame({"variant": ["mae"] * 3 + ["hyperkd"] * 3, "seed": [0, 1, 2] * 2,
                       "soc_rmse@frozen": [1.0, 1.2, 1.1, 0.9, 1.1, 1.0]})
    c = compare_variants(df, "hyperkd", ["mae", "absent"])
    assert c.reference.tolist() == ["mae"] and c.verdict[0] == "better"  # lower RMSE is better
    assert np.isclose(c.difference[0], -0.1)
