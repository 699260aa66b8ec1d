"""The package's modules import each other without cycles (issue #22): every import of a hyperkd module, at the top of
a module or inside a function, points down the data flow. Before #22, `cli → explorer → launch → cli` was a cycle
(`SlurmTask` called `cli.main`)."""
import ast
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
