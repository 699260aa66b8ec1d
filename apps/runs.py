"""HyperKD training-run dashboard: `panel serve apps/runs.py --args --runs-dir runs`.

All flags: `hyperkd runs --help`. The page is `hyperkd.explorer.RunsDashboard`."""
import sys

from hyperkd.explorer import runs_app

runs_app(sys.argv[1:]).servable(title="HyperKD runs")
