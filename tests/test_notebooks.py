"""Every notebook in nbs/ is one test case, executed the way `nbdev_test` does (cells flagged with
settings.ini's `tst_flags` are skipped), each in its own Python process."""
import configparser
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted(p for p in (ROOT / "nbs").glob("*.ipynb") if not p.name.startswith("_"))
_cfg = configparser.ConfigParser(delimiters=["="])
_cfg.read(ROOT / "settings.ini")
SKIP_FLAGS = _cfg["DEFAULT"].get("tst_flags", "").split()

RUNNER = """
import sys
from pathlib import Path
from nbdev.test import test_nb
ok, secs = test_nb(Path(sys.argv[1]), skip_flags=sys.argv[2].split(), showerr=True)
print(f"{sys.argv[1]}: {'ok' if ok else 'FAILED'} in {secs:.1f}s")
sys.exit(0 if ok else 1)
"""


def test_notebooks_found():
    assert len(NOTEBOOKS) >= 2, NOTEBOOKS


@pytest.mark.slow
@pytest.mark.parametrize("nb", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook(nb: Path):
    proc = subprocess.run([sys.executable, "-c", RUNNER, str(nb), " ".join(SKIP_FLAGS)], cwd=nb.parent,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{nb.name} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}"
