"""Render README.md from nbs/index.ipynb (markdown cells as they are, code cells as python blocks).

nbdev 2's own `nbdev_readme` needs Quarto, which cannot be installed on these machines; this keeps the
same rule (index.ipynb is the source of README.md) with no extra tool. `tests/test_repo.py` checks that
README.md is up to date.  Usage: python tools/make_readme.py [--check]
"""
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def render(nb_path: Path = ROOT / "nbs" / "index.ipynb") -> str:
    nb = json.loads(nb_path.read_text(encoding="utf-8"))
    parts = ["<!-- Generated from nbs/index.ipynb by tools/make_readme.py: edit the notebook, not this file. -->"]
    for cell in nb["cells"]:
        src = "".join(cell["source"]).strip()
        if not src or src.startswith("#| hide"):
            continue
        if cell["cell_type"] == "markdown":
            parts.append(src)
        elif cell["cell_type"] == "code":
            lines = [l for l in src.splitlines() if not l.startswith("#|")]
            parts.append("```python\n" + "\n".join(lines) + "\n```")
    return "\n\n".join(parts) + "\n"


if __name__ == "__main__":
    text = render()
    readme = ROOT / "README.md"
    if "--check" in sys.argv:
        sys.exit(0 if readme.read_text(encoding="utf-8") == text else "README.md is out of date: run python tools/make_readme.py")
    readme.write_text(text, encoding="utf-8")
