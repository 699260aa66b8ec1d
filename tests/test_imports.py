"""The package's structure (issue #22): data flows one way through the modules, with no import cycle, and public names
stay importable from where users import them."""
import ast
import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODULES = {p.stem: p for p in (ROOT / "hyperkd").glob("*.py") if not p.stem.startswith("_")}


def imports_of(path: Path) -> set:
    "The hyperkd modules that `path` imports anywhere (relative or absolute, top level or inside functions)."
    deps = set()
    for n in ast.walk(ast.parse(path.read_text())):
        if isinstance(n, ast.ImportFrom):
            if n.level == 1:
                deps |= {n.module.split(".")[0]} if n.module else {a.name for a in n.names}
            elif n.module and n.module.split(".")[0] == "hyperkd":
                parts = n.module.split(".")
                deps |= {parts[1]} if len(parts) > 1 else {a.name for a in n.names}
        elif isinstance(n, ast.Import):
            deps |= {a.name.split(".")[1] for a in n.names if a.name.startswith("hyperkd.")}
    return (deps & set(MODULES)) - {path.stem}


def find_cycle(graph: dict) -> list | None:
    "One cycle of `graph` ({node: set of nodes}) as a list of nodes, or None (depth-first search)."
    state, stack = {}, []

    def visit(v):
        state[v] = "open"
        stack.append(v)
        for w in sorted(graph.get(v, ())):
            if state.get(w) == "open":
                return stack[stack.index(w):] + [w]
            if w not in state and (c := visit(w)):
                return c
        state[v] = "done"
        stack.pop()
        return None
    for v in sorted(graph):
        if v not in state and (c := visit(v)):
            return c
    return None


def test_find_cycle_finds_one():
    assert find_cycle({"cli": {"explorer"}, "explorer": {"launch"}, "launch": {"cli"}}) == ["cli", "explorer", "launch", "cli"]
    assert find_cycle({"cli": {"launch"}, "launch": {"distill"}, "distill": set()}) is None


def test_no_import_cycle():
    graph = {m: imports_of(p) for m, p in MODULES.items()}
    assert find_cycle(graph) is None, " → ".join(find_cycle(graph))


def test_training_rooms_import_downwards():
    "The rooms split out of distill.py (issue #22) import only what comes before them in the data flow."
    order = ["config", "teacher", "step", "signals", "distill", "launch"]
    for i, m in enumerate(order):
        later = set(order[i + 1:]) | {"cli", "explorer", "export", "evaluate"}
        assert not imports_of(MODULES[m]) & later, (m, imports_of(MODULES[m]) & later)
    assert imports_of(MODULES["signals"]) == set()


_spec = importlib.util.spec_from_file_location("import_graph", ROOT / "tools" / "import_graph.py")
ig = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ig)

# the ground floor, the data rooms, masks and models, and the three evaluation rooms
CHECKED = ("files", "spectral", "enmap", "products", "cubes", "patches", "samples", "data", "masking", "models", "losses",
           "metrics", "evaluate", "ablation")


def test_checked_modules_import_only_downwards():
    graph, compat = ig.import_graph()
    up = ig.upward(graph)  # every module, not only the checked ones
    assert not up, f"imports up the data flow (tools/import_graph.py ORDER): {up}"
    assert not [c for c in ig.cycles(graph) if set(c) & set(CHECKED)]
    assert "data" not in graph["models"] and "models" not in graph["masking"]
    assert "evaluate" not in graph["explorer"] and "metrics" in graph["explorer"]  # the explorer needs metrics only
    assert compat["evaluate"] == {"ablation"}  # old names, loaded on first use only


def test_import_graph_sees_function_level_and_relative_imports(tmp_path):
    pkg = tmp_path / "hyperkd"; pkg.mkdir()
    (pkg / "a.py").write_text("def f():\n    from hyperkd.b import x\n")
    (pkg / "b.py").write_text("from .a import f\nimport hyperkd.c\n")
    (pkg / "c.py").write_text("def __getattr__(n):\n    import importlib\n    return importlib.import_module('hyperkd.a')\n")
    graph, compat = ig.import_graph(pkg)
    assert graph == {"a": {"b"}, "b": {"a", "c"}, "c": set()} and compat["c"] == {"a"}
    assert ig.cycles(graph) == [["a", "b"]]
    assert ig.upward(graph, ("c", "a", "b")) == [("a", "b")]


def test_modules_and_classes_are_small():
    "Issue #22: no module over 600 lines, no class over 200 (every module but nbdev's generated index)."
    for m in sorted(MODULES):
        text = (ROOT / "hyperkd" / f"{m}.py").read_text()
        assert len(text.splitlines()) <= 600, (m, len(text.splitlines()))
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ClassDef):
                assert node.end_lineno - node.lineno + 1 <= 200, (m, node.name)


def test_public_names_keep_working():
    from hyperkd.data import atomic_file
    from hyperkd.enmap import atomic_file as a2
    from hyperkd.files import atomic_file as a3
    from hyperkd.models import random_mask
    from hyperkd.masking import random_mask as r2
    from hyperkd.evaluate import (reconstruction_metrics, run_protocol, ablate, windowed_sam, compare_variants,
                                  paired_bootstrap, variant_config, PROTOCOLS, STUDY_VARIANTS)
    import hyperkd.ablation as A, hyperkd.metrics as M
    assert atomic_file is a2 is a3 and random_mask is r2
    assert reconstruction_metrics is M.reconstruction_metrics and windowed_sam is M.windowed_sam
    assert ablate is A.ablate and compare_variants is A.compare_variants and STUDY_VARIANTS is A.STUDY_VARIANTS
    assert PROTOCOLS == ("linear", "frozen", "finetune")


def test_metrics_import_no_training_code():
    import subprocess
    code = ("import sys, hyperkd.metrics; bad = [m for m in ('hyperkd.distill', 'hyperkd.evaluate', 'hyperkd.ablation', "
            "'hyperkd.models') if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_export_cells_are_small():
    "Issue #22: one concept per exported cell, none over 80 lines, in every notebook."
    import json
    big = []
    for nb in sorted((ROOT / "nbs").glob("*.ipynb")):
        for c in json.loads(nb.read_text())["cells"]:
            src = c["source"] if isinstance(c["source"], str) else "".join(c["source"])
            if c["cell_type"] == "code" and src.lstrip().startswith("#| export") and len(src.splitlines()) > 80:
                big.append((nb.name, c["id"], len(src.splitlines())))
    assert not big, big
