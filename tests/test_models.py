"""Checkpoint loading in the published layouts, hub behaviour offline, and model invariants."""
import pytest
import torch

from hyperkd.models import (PRITHVI_PRESETS, CheckpointError, HyperspectralMAE, PrithviMAE, load_prithvi,
                            prithvi_state_dict, random_mask, sincos_3d)


def _v2_checkpoint(preset: str) -> dict:
    """Random tensors under the exact published Prithvi-EO-2.0 key names and shapes (4 frames, with the
    fixed positional buffers as the published files carry them)."""
    model = PrithviMAE(PRITHVI_PRESETS[preset])
    return {k: torch.randn_like(v) if not k.endswith("pos_embed") else v.clone() for k, v in model.state_dict().items()}


def test_v2_tiny_tl_layout_round_trip(tmp_path):
    sd = _v2_checkpoint("prithvi-eo-2.0-tiny-tl")
    assert sd["encoder.pos_embed"].shape == (1, 1 + 4 * 14 * 14, 192)
    for k in ("encoder.temporal_embed_enc.scale", "encoder.location_embed_enc.scale",
              "decoder.temporal_embed_dec.scale", "decoder.location_embed_dec.scale", "decoder.mask_token"):
        assert k in sd, k
    f = tmp_path / "Prithvi_EO_V2_tiny_TL.pt"
    torch.save(sd, f)
    m = load_prithvi(f, preset="prithvi-eo-2.0-tiny-tl", num_frames=1)
    out = m.state_dict()
    assert out["encoder.pos_embed"].shape == (1, 197, 192)
    for k, v in sd.items():
        if not k.endswith("pos_embed"):
            assert torch.equal(out[k], v), k
    # time/location codes are used when given
    x = torch.randn(1, 6, 1, 224, 224)
    mask = random_mask(1, 196, 0.75, torch.Generator().manual_seed(0))
    a = m.features(x, mask)[-1]
    b = m.features(x, mask, temporal_coords=torch.tensor([[[2024.0, 150.0]]]), location_coords=torch.tensor([[40.0, -105.0]]))[-1]
    assert not torch.allclose(a, b)


def test_wrapped_and_prefixed_checkpoints_are_unwrapped():
    sd = _v2_checkpoint("prithvi-test")
    wrapped = {"model": {f"model.{k}": v for k, v in sd.items()}, "epoch": 3}
    assert sorted(prithvi_state_dict(wrapped)) == sorted(k for k in sd if not k.endswith("pos_embed"))


def test_incompatible_checkpoint_error_names_file(tmp_path):
    sd = _v2_checkpoint("prithvi-test")
    f = tmp_path / "student_by_mistake.pt"
    torch.save(sd, f)
    with pytest.raises(CheckpointError, match="student_by_mistake.pt does not fit.*shape mismatch"):
        load_prithvi(f, preset="prithvi-small")
    (tmp_path / "corrupt.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt.pt: cannot read"):
        load_prithvi(tmp_path / "corrupt.pt", preset="prithvi-test")


def test_hub_download_offline_gives_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="Prithvi_EO_V2_tiny_TL.pt.*HF_HUB_OFFLINE"):
        load_prithvi("prithvi-eo-2.0-tiny-tl", cache_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="neither a Prithvi preset"):
        load_prithvi(tmp_path / "missing.pt")


def test_pretrained_false_builds_any_grid():
    m = load_prithvi("prithvi-eo-2.0-tiny-tl", pretrained=False, num_frames=1, img_size=128)
    assert m.encoder.pos_embed.shape == (1, 1 + 64, 192)
    torch.testing.assert_close(m.encoder.pos_embed, sincos_3d(192, (1, 8, 8)))


def test_teacher_normalize_uses_preset_stats():
    m = PrithviMAE(PRITHVI_PRESETS["prithvi-eo-1.0-100m"], depth=1, decoder_depth=1)
    refl = torch.full((1, 6, 2, 2), 0.0775229)  # ~ the blue mean / 10000
    z = m.normalize(refl)
    assert z.shape == (1, 6, 1, 2, 2) and abs(float(z[0, 0].mean())) < 1e-3


def test_student_gradients_reach_projector_and_embedding():
    s = HyperspectralMAE.from_preset("tiny", in_chans=30, img_size=32, patch_size=8, tokenizer="grouped", groups=3,
                                     teacher_dim=16)
    out = s(torch.randn(2, 30, 32, 32))
    (out.pred.square().mean() + out.projected[-1].square().mean()).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in s.parameters() if p.requires_grad)


REFERENCE = __import__("pathlib").Path(__file__).with_name("data") / "prithvi_reference.pt"


@pytest.mark.parametrize("layout", ["v1", "v2"])
def test_prithvi_matches_the_reference_implementation(tmp_path, layout):
    """Golden fixture from Prithvi's reference code (tests/data/make_prithvi_reference.py): same weights, nothing
    masked, float64 → the same reconstruction to 1e-10. Fails with timm's LayerNorm eps 1e-6 (differs by ~1e-4)."""
    fx = torch.load(REFERENCE, weights_only=True)
    sd = fx["state_dict_v1"]
    if layout == "v2":
        sd = {("decoder." if k.split(".")[0] in ("mask_token", "decoder_embed", "decoder_pos_embed", "decoder_blocks",
                                                 "decoder_norm", "decoder_pred") else "encoder.") + k: v for k, v in sd.items()}
        assert "encoder.blocks.0.attn.qkv.weight" in sd and "decoder.decoder_pred.weight" in sd
    f = tmp_path / f"reference_{layout}.pt"
    torch.save(sd, f)
    model = load_prithvi(f, preset="prithvi-test", num_frames=fx["arch"]["num_frames"]).double().eval()
    assert all(m.eps == 1e-5 for m in model.modules() if isinstance(m, torch.nn.LayerNorm))
    with torch.no_grad():
        _, pred, mask = model(fx["input"].double(), mask_ratio=0.0)
    assert not mask.any()
    assert pred.shape == fx["pred"].shape
    assert (pred - fx["pred"]).abs().max().item() <= 1e-10
