"""Issue #21 parts 3-5 (`hyperkd.tasks`): the token-spectra baseline, label subsets shared by every variant, tile-level
labels and metrics, and the study report's new sections."""
import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from hyperkd.ablation import tasks_report
from hyperkd.evaluate import PROTOCOL_HEADS, DownstreamData, downstream_metrics, run_protocol
from hyperkd.models import HyperspectralMAE
from hyperkd.tasks import (TokenSpectra, fraction_metrics, label_subset, linear_probe, multilabel_metrics, subset_labels,
                           tile_features, tile_labels, tile_metrics, token_spectra)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return HyperspectralMAE.from_preset("tiny", in_chans=6, img_size=16, patch_size=4).eval()


def _per_token(B=3, C=6, gh=4, gw=4, p=4, seed=0):
    "An image constant on each p x p token, and its token grid."
    grid = torch.rand(B, C, gh, gw, generator=torch.Generator().manual_seed(seed))
    return grid.repeat_interleave(p, 2).repeat_interleave(p, 3), grid


def test_token_spectra_of_a_constant_per_token_image_is_the_image_on_the_token_grid():
    img, grid = _per_token(gh=3, gw=5, p=8)
    ts = token_spectra(img, 8)
    assert ts.shape == (3, 12, 3, 5)
    torch.testing.assert_close(ts[:, :6], grid)
    assert float(ts[:, 6:].abs().max()) < 1e-6  # no spread within a token (float rounding only)
    # on another grid the tokens mix values: the same image is no longer constant per token
    assert float(token_spectra(img, 16)[:, 6:].max()) > 0


def test_token_spectra_leave_nodata_out():
    img, grid = _per_token()
    img[0, 2, 0:3, 0:3] = float("nan")  # 9 of the 16 pixels of one token, one band: nodata
    ts = token_spectra(img, 4)
    torch.testing.assert_close(ts[:, :6], grid)
    assert float(ts[:, 6:].abs().max()) < 1e-6
    img[1, :, 4:8, 4:8] = float("nan")  # a whole token: NaN (never a made-up 0 in the function itself)
    ts = token_spectra(img, 4)
    assert ts[1, :, 1, 1].isnan().all() and torch.isfinite(ts[1, :, 0, 0]).all()
    assert (TokenSpectra(4).features(img)[1, :, 1, 1] == 0).all()  # the baseline's heads get the band mean (0)
    with pytest.raises(ValueError, match="patch"):
        token_spectra(img, 2.5)


def test_token_spectra_heads_are_the_encoders_heads(tiny):
    x = torch.randn(4, 6, 16, 16)
    ts = TokenSpectra.like(tiny)
    for protocol in ("linear", "frozen"):
        mine = ts.protocol_setup(protocol, x, x[:2], "segmentation", 3, (16, 16), lr=1e-3, hidden=8)
        enc = PROTOCOL_HEADS[protocol](tiny, x, x[:2], "segmentation", 3, (16, 16), lr=1e-3, hidden=8, n_levels=4)
        assert type(mine.module) is type(enc.module)
        assert mine.batch(torch.tensor([0, 1])).shape == enc.batch(torch.tensor([0, 1])).shape == (2, 3, 16, 16)
        if protocol == "frozen":
            assert mine.module.scales == enc.module.scales and mine.module.upsample == enc.module.upsample
    with pytest.raises(ValueError, match="protocol='probe'"):
        ts.protocol_setup("probe", x, x, "segmentation", 3, (16, 16), lr=1e-3)


def test_token_spectra_through_run_protocol_and_finetune_is_frozen(tiny):
    g = torch.Generator().manual_seed(1)
    lab = torch.randint(1, 4, (20, 4, 4), generator=g).repeat_interleave(4, 1).repeat_interleave(4, 2)
    x = torch.randn(20, 6, 16, 16, generator=g) * 0.3 + 2 * F.one_hot(lab, 6).permute(0, 3, 1, 2).float()
    ts = TokenSpectra.like(tiny)
    r = run_protocol("linear", ts, x[:14], lab[:14], x[14:], lab[14:], "segmentation", 4, epochs=15, lr=3e-2)
    assert r["miou"] > 0.7, r  # the label is in the token means
    data = DownstreamData(x, x, lab[:, 0, 0], lab, lab.float(), torch.arange(20) >= 14, np.arange(6.0), list("abcdef"),
                          torch.zeros(6, 1, 1), torch.ones(6, 1, 1), lab - 1)
    dm = downstream_metrics(ts, data, ("frozen", "finetune"), epochs=1)
    assert all(dm[f"{k}@finetune"] == dm[f"{k}@frozen"] for k in ("crop_miou", "landcover_accuracy"))


def test_label_subsets_are_shared_nested_and_never_empty():
    for n in (0, 1, 7, 130, 2000):
        prev = set()
        for f in (0.01, 0.1, 0.5, 1.0):
            s = label_subset(n, f, seed=5)
            assert torch.equal(s, label_subset(n, f, seed=5))  # every variant asking gets the same labels
            assert len(s) == min(n, max(1, math.ceil(f * n - 1e-9))) and len(set(s.tolist())) == len(s)
            assert prev <= set(s.tolist())  # nested
            prev = set(s.tolist())
    assert not torch.equal(label_subset(100, 0.1, 0), label_subset(100, 0.1, 1))
    with pytest.raises(ValueError, match="fraction"):
        label_subset(10, 1.5)


def test_subset_labels_withhold_pixels_the_same_way_for_every_variant():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 5, (6, 8, 8), generator=g)
    a = subset_labels(y, "segmentation", 0.1, seed=2)[1]
    b = subset_labels(y.clone(), "segmentation", 0.1, seed=2)[1]
    assert torch.equal(a, b) and int((a != 0).sum()) == math.ceil(0.1 * int((y != 0).sum()))
    assert ((a == y) | (a == 0)).all()
    full = subset_labels(y, "segmentation", 1.0, seed=2)[1]
    assert torch.equal(full, y)


def test_tile_labels_on_a_hand_made_map():
    lc = torch.tensor([[[5, 5], [5, 0]], [[1, 2], [2, 1]], [[6, 6], [6, 6]]])
    nan = float("nan")
    soc = torch.tensor([[[1.0, 3.0], [nan, nan]], [[nan, nan], [nan, nan]], [[2.0, 2.0], [2.0, 2.0]]])
    tl = tile_labels(lc, soc)
    assert tl["majority"].tolist() == [5, 1, 6]  # a tie (1 and 2): the lowest id
    assert tl["present"].tolist() == [[1, 0, 0, 0, 0, 1, 0], [0, 1, 1, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0, 1]]
    assert tl["soc_mean"][0] == 2.0 and tl["soc_mean"][1].isnan() and tl["soc_mean"][2] == 2.0
    with pytest.raises(ValueError, match="one shape"):
        tile_labels(lc, soc[:, :1])


def test_multilabel_metrics_by_hand():
    y = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 0]])
    s = np.array([[0.9, 0.2, 0.6], [0.4, 0.7, 0.1], [0.3, 0.8, 0.2], [0.1, 0.6, 0.05]])
    m = multilabel_metrics(y, s)
    ap = [(1 + 2 / 3) / 2, 1.0, 1.0]  # class 0 ranked pos, neg, pos; classes 1 and 2 ranked perfectly
    assert m["map"] == pytest.approx(np.mean(ap))
    # at 0.5: class 0 tp1 fn1; class 1 tp2 fp1; class 2 tp1
    assert m["micro_f1"] == pytest.approx(2 * 4 / (2 * 4 + 1 + 1))
    assert m["macro_f1"] == pytest.approx(np.mean([2 / 3, 4 / 5, 1.0]))


def test_linear_probe_is_the_same_fit_for_every_feature_set_and_has_no_seed():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(40) % 4
    X = torch.randn(40, 5, generator=g) + 2 * F.one_hot(y, 5)
    torch.manual_seed(1); a = linear_probe(X[:30], y[:30], X[30:], "classification", 4)
    torch.manual_seed(2); b = linear_probe(X[:30], y[:30], X[30:], "classification", 4)
    assert torch.equal(a, b) and (a == y[30:]).float().mean() > 0.8
    one = linear_probe(X[:1], torch.tensor([2.5]), X[30:], "regression")  # a single label: its value, not NaN
    torch.testing.assert_close(one, torch.full((10,), 2.5, dtype=torch.float64))


def _data(n_side=4, P=8, C=5, seed=0):
    "A tiny DownstreamData: tiles whose spectra carry their land cover (pixel maps) and SOC."
    g = torch.Generator().manual_seed(seed)
    n = 2 * n_side * n_side
    lc = torch.randint(0, 7, (n, P // 4, P // 4), generator=g).repeat_interleave(4, 1).repeat_interleave(4, 2)
    x = torch.randn(n, C, P, P, generator=g) * 0.1
    x[:, :C] += F.one_hot(lc, 7)[..., :C].permute(0, 3, 1, 2).float()
    soc = torch.where(lc == 4, 1.0 + x[:, 0], torch.tensor(float("nan")))
    crop = torch.randint(0, 5, (n, P, P), generator=g)
    test = torch.arange(n) >= n // 2
    maj = lc.reshape(n, -1).mode(1).values
    return DownstreamData(x, x, maj, crop, soc, test, np.arange(float(C)), list(range(C)), torch.zeros(C, 1, 1),
                          torch.ones(C, 1, 1), lc)


def test_tile_metrics_and_fraction_columns():
    d = _data()
    tm = tile_metrics(tile_features(d.x, "mean"), d, fractions=(0.1, 1.0), seed=0)
    assert {"landcover_accuracy@tile", "landcover_accuracy@tile@10%", "lcpresent_map@tile", "soc_r2@tile@10%"} <= set(tm)
    assert tm["lcpresent_map@tile"] > 0.9  # presence is in the mean spectrum here
    fm = fraction_metrics(None, d, ("linear",), fractions=(0.1, 1.0), seed=0, epochs=1)
    assert set(fm) == {f"{t}_{m}@linear@10%" for t, ms in (("landcover", ("accuracy", "macro_f1")),
                                                          ("crop", ("overall_accuracy", "miou")),
                                                          ("soc", ("rmse", "r2", "rpiq"))) for m in ms}
    with pytest.raises(ValueError, match="land_cover_map"):
        tile_metrics(tile_features(d.x, "mean"), DownstreamData(*[getattr(d, k) for k in list(d.__dataclass_fields__)[:-1]]))


def test_tasks_report_has_the_resolution_and_label_fraction_tables():
    rows = []
    for v, base in (("mae", 0.3), ("hyperkd", 0.35), ("raw-spectra", 0.6), ("random-init", 0.2), ("token-spectra", 0.5),
                    ("spectra-mean-std", None)):
        for s in range(3):
            r = {"variant": v, "seed": s, "lcpresent_map@tile": 0.5 + 0.01 * s, "lcpresent_map@tile@1%": 0.3 + 0.01 * s}
            if base is not None:
                r.update({"crop_miou@linear": base + 0.01 * s, "crop_miou@linear@1%": base / 2 + 0.01 * s})
            rows.append(r)
    rep = tasks_report(pd.DataFrame(rows), protocols=("linear",))
    for head in ("## Resolution-matched comparison", "### `hyperkd` against the spectra at its resolution",
                 "## Label efficiency", "### `linear` by label fraction", "### `tile` by label fraction",
                 "### `mae` with few labels, against the baselines"):
        assert head in rep, head
    assert "| spectra-mean-std | – |" in rep  # no pixel features: no pixel metric
    assert "| crop_miou@linear@1% | token-spectra | 0.260 | 0.160 | -0.100" in rep
