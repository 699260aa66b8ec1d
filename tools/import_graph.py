"""The import graph of the hyperkd package, drawn from the source (`python tools/import_graph.py`).

Every `import`/`from ... import` of a hyperkd module counts, at the top of a module or inside a function; imports inside
a module-level `__getattr__` (PEP 562: names kept importable from where they used to live, loaded on first use) are
listed apart as compatibility edges. Prints each module's level in `ORDER` (the data flow, ground floor first), the
edges that go up that order, and the import cycles."""
from __future__ import annotations

import ast
import sys
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "hyperkd"
# The data flow, ground floor first: a module may import only modules before it.
ORDER = ("files", "spectral", "enmap", "products", "cubes", "patches", "samples", "data", "masking", "models", "kernels", "sampling", "fused", "losses",
         "config", "skill", "teacher", "step", "signals", "distill", "launch", "metrics", "evaluate", "tasks", "ablation", "designs", "export",
         "terratorch_backbone", "runs", "explorer", "cli")


def _target(node, module: str) -> list[str]:
    "The hyperkd modules an import node names (relative or absolute)."
    if isinstance(node, ast.Import):
        return [a.name.split(".")[1] for a in node.names if a.name.startswith("hyperkd.")]
    if node.level == 1:  # from .x import ... / from . import x
        return [node.module.split(".")[0]] if node.module else [a.name for a in node.names]
    if node.module == "hyperkd":
        return [a.name for a in node.names]
    if node.module and node.module.startswith("hyperkd."):
        return [node.module.split(".")[1]]
    return []


def import_graph(pkg: Path = PKG) -> tuple[dict, dict]:
    "({module: {imported modules}}, {module: {modules imported by its `__getattr__` only}}), private modules left out."
    mods = {p.stem for p in pkg.glob("*.py") if not p.stem.startswith("_")}
    graph, compat = {}, {}
    for m in sorted(mods):
        tree = ast.parse((pkg / f"{m}.py").read_text())
        shim = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "__getattr__"]
        in_shim = {id(x) for f in shim for x in ast.walk(f)}
        graph[m], compat[m] = set(), set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for t in _target(node, m):
                    if t in mods and t != m:
                        (compat if id(node) in in_shim else graph)[m].add(t)
        for f in shim:  # importlib.import_module("hyperkd.x") in the shim
            for c in ast.walk(f):
                if isinstance(c, ast.Constant) and isinstance(c.value, str) and c.value.startswith("hyperkd."):
                    compat[m].add(c.value.split(".")[1])
    return graph, compat


def cycles(graph: dict) -> list[list[str]]:
    "The strongly connected components with more than one module (Tarjan)."
    index, low, stack, on, out, n = {}, {}, [], set(), [], [0]
    def visit(v):
        index[v] = low[v] = n[0]; n[0] += 1; stack.append(v); on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w); low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop(); on.discard(w); comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def upward(graph: dict, order=ORDER) -> list[tuple[str, str]]:
    "Edges (a, b) where a imports b but b is not below a in `order`; modules missing from `order` count as upward."
    pos = {m: i for i, m in enumerate(order)}
    return sorted((a, b) for a, deps in graph.items() for b in deps
                  if a not in pos or b not in pos or pos[b] >= pos[a])


if __name__ == "__main__":
    g, compat = import_graph()
    pos = {m: i for i, m in enumerate(ORDER)}
    for m in sorted(g, key=lambda m: pos.get(m, 99)):
        extra = f"   (compat, on first use: {', '.join(sorted(compat[m]))})" if compat[m] else ""
        print(f"{pos.get(m, '?'):>2} {m:20s} <- {', '.join(sorted(g[m], key=lambda d: pos.get(d, 99)))}{extra}")
    up, cyc = upward(g), cycles(g)
    print("imports up the data flow:", up or "none")
    print("cycles:", cyc or "none")
    sys.exit(1 if up or cyc else 0)
