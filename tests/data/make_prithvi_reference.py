"""Write `prithvi_reference.pt`: a golden fixture from Prithvi's *reference* implementation.

The reference is IBM/NASA's `prithvi_mae.py` as terratorch ships it (terratorch is not a hyperkd dependency:
install it, or just its wheel, in a throw-away environment). Run once, commit the output:

    pip download --no-deps terratorch==1.2.13 -d /tmp/tt && cd /tmp/tt && unzip -o terratorch-*.whl \
        'terratorch/models/backbones/prithvi_mae.py' && pip install --target /tmp/tt/lib einops
    PYTHONPATH=/tmp/tt/lib python tests/data/make_prithvi_reference.py /tmp/tt/terratorch/models/backbones/prithvi_mae.py

It builds the `prithvi-test` architecture (32 px, patch 8, 2 frames, 32-wide, depth 2; decoder 32/1/2) in the
reference code with fixed random weights (LayerNorm gains and biases included, so their eps matters), runs it
in float64 with nothing masked, and saves: the state dict in the V1 (unprefixed) key layout as float32, the
input, and the reference reconstruction (float64). `tests/test_models.py` loads it through `load_prithvi`.
"""
import importlib.util
import sys
from pathlib import Path

import torch

def main(reference_file: str, out: Path = Path(__file__).with_name("prithvi_reference.pt")):
    spec = importlib.util.spec_from_file_location("prithvi_mae_reference", reference_file)
    ref = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ref)
    arch = dict(img_size=32, patch_size=(1, 8, 8), num_frames=2, in_chans=6, embed_dim=32, depth=2, num_heads=2,
                decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=2, mlp_ratio=4.0)
    torch.manual_seed(20261125)
    model = ref.PrithviMAE(**arch, mask_ratio=0.0)
    model.mask_ratio = 0.0  # the reference's forward would fall back to its default ratio for a falsy 0.0
    with torch.no_grad():  # every learnable tensor random (float32 values), positional codes as the reference made them
        for name, p in model.named_parameters():
            p.copy_(torch.randn_like(p) * (0.3 if p.ndim > 1 else 0.5) + (1.0 if name.endswith("norm1.weight") or
                    name.endswith("norm2.weight") or name.endswith("norm.weight") else 0.0))
    sd32 = {k: v.detach().clone().float() for k, v in model.state_dict().items()}
    v1 = {k.split(".", 1)[1]: v for k, v in sd32.items()}  # V1 layout: no encoder./decoder. prefix
    model = model.double().eval()
    x = torch.randn(1, 6, 2, 32, 32)
    with torch.no_grad():
        # the reference's forward refuses mask_ratio 0 (undefined loss): its encoder and decoder, as forward calls them
        latent, mask, ids_restore = model.encoder(x.double(), None, None, 0.0)
        assert mask.sum() == 0
        pred = model.decoder(latent, ids_restore, None, None, input_size=x.shape)
    torch.save({"state_dict_v1": v1, "input": x, "pred": pred, "arch": arch,
                "reference": f"{Path(reference_file).name} (terratorch 1.2.13)"}, out)
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB); pred {tuple(pred.shape)}")

if __name__ == "__main__":
    main(sys.argv[1])
