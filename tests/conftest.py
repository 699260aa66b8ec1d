import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never download models or data
# One thread per process (set before torch is imported; the notebooks and command-line runs the tests start inherit
# it). pytest.ini runs the suite on 2 pytest-xdist workers: with torch's default of one thread per core, 2 workers on
# 2 cores (each often with a training subprocess) oversubscribe the cores, and our tiny models then train ~3x slower
# (12 steps of the tests' tiny MAE: 19.1 s with 2 threads, 5.7 s with 1, side by side on a loaded 2-core machine).
# The bit-identity and DDP tests set one thread themselves: bits of a float reduction depend on the thread count.
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

# Tests that share a module-scoped fixture (a JupyterLab server, a trained run) or drive a browser run on one worker,
# one after the other: two Chromiums, servers and kernels at once on 2 cores make their generous timeouts flaky.
_ONE_WORKER = {"test_jupyterlab.py": "browser", "test_explorer.py": "browser"}


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the xdist_group marks (--dist loadgroup)
def pytest_collection_modifyitems(config, items):
    """Mark the tests of `_ONE_WORKER` with their xdist group, and start the long ones first (the browser group, then
    `slow`, each in collection order) so that no worker is left with a long test at the end while the other idles."""
    for item in items:
        group = _ONE_WORKER.get(item.path.name)
        if group:
            item.add_marker(pytest.mark.xdist_group(group))

    def rank(item):
        if item.get_closest_marker("xdist_group"):
            return 0
        return 1 if item.get_closest_marker("slow") else 2
    items[:] = sorted(items, key=rank)  # stable: collection order within each rank


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT
