"""HyperKD reconstruction explorer: `panel serve apps/explorer.py --args --checkpoint RUN_OR_CKPT --cube PATH`.

All flags: `hyperkd explore --help`. The page is `hyperkd.explorer.ReconstructionExplorer`."""
import sys

from hyperkd.explorer import explorer_app

explorer_app(sys.argv[1:]).servable(title="HyperKD explorer")
