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

# Test files whose tests run on one worker, one after the other: they share module-scoped fixtures (a JupyterLab server,
# a trained run) and drive browsers, servers and kernels; two of those at once on 2 cores make their timeouts flaky.
_ONE_WORKER = {"test_jupyterlab.py": "browser", "test_explorer.py": "browser"}


def _group(nodeid: str) -> str:
    "The unit of work a test goes to a worker in: its `_ONE_WORKER` group, else the test alone."
    return _ONE_WORKER.get(nodeid.split("::")[0].rsplit("/", 1)[-1], nodeid)


try:
    from xdist.scheduler import LoadScopeScheduling
except ImportError:  # without pytest-xdist (pytest -p no:xdist) the suite runs in one process
    LoadScopeScheduling = None
else:
    class _GroupScheduling(LoadScopeScheduling):
        """xdist's scope scheduling with `_group` as the scope: every other test is its own unit, handed to whichever
        worker is free. (xdist's own `--dist loadgroup` does not group under pytest 9, which no longer reads the
        `_nodeid` that xdist 3.8 rewrites with the group's name.) Units with more tests go first (the browser group),
        then the others in collection order."""
        def _split_scope(self, nodeid: str) -> str:
            return _group(nodeid)

    def pytest_xdist_make_scheduler(config, log):
        return _GroupScheduling(config, log)


def pytest_collection_modifyitems(config, items):
    """Start the long tests first (`slow`, in collection order, after the browser group) so that no worker is left
    with a long test at the end while the other idles."""
    items.sort(key=lambda item: 0 if item.get_closest_marker("slow") else 1)  # stable


@pytest.fixture(autouse=True)
def _float32_matmul_precision():
    """Every test starts and ends at torch's default float32 matmul precision ('highest'). Importing terratorch sets
    'medium' for the whole process (its clay_v15 module), and on CPUs with bf16 units that rounds every later matmul
    of the worker (seen: the SSIM and resampling equality tests failing after the terratorch test)."""
    import torch
    torch.set_float32_matmul_precision("highest")
    yield
    torch.set_float32_matmul_precision("highest")


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture
def spectral_earth_folder(tmp_path) -> Path:
    """A SpectralEarth-layout folder (`<root>/enmap/<patch>/<patch>.tif`, int16 COGs, scale 1e-4) of four 32-px patches
    cut from demo scene 7 (64 px); returns the root, for `data="spectral-earth:<root>"`."""
    from hyperkd.data import demo_scene, write_cube
    scene = demo_scene(seed=7, size=64).reflectance
    root = tmp_path / "se"
    for i, (y, x) in enumerate([(0, 0), (0, 32), (32, 0), (32, 32)]):
        write_cube(scene.isel(y=slice(y, y + 32), x=slice(x, x + 32)), root / "enmap" / f"p{i}" / f"p{i}.tif",
                   driver="COG", dtype="int16", scale=1e-4)
    return root
