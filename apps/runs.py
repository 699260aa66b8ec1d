"""HyperKD training-run dashboard: `panel serve apps/runs.py --args --runs-dir runs`.

All flags: `hyperkd runs --help`. The page is `hyperkd.runs.RunsDashboard`."""
import sys

from hyperkd.runs import runs_app

runs_app(sys.argv[1:]).servable(title="HyperKD runs")
