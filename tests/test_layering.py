"""The package's import graph: no cycles, one-way layers, no library import from the CLI, no private names
taken across packages. Imports inside ``if TYPE_CHECKING:`` are annotations only and do not count."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

# higher may import lower or equal, never the other way (cli -> report -> search -> recipes -> methods -> models/data)
RANK = {
    "cli": 9, "testing": 9, "workflows": 8, "serve": 8, "monitor": 8, "report": 7, "search": 6, "recipes": 5,
    "prune": 4, "distill": 4, "quantize": 4, "export": 4, "methods": 4, "calibration": 4,
    "evaluate": 3, "profile": 3, "models": 2, "data": 2, "runs": 1,
    "errors": 0, "_io": 0, "_progress": 0, "_quiet": 0, "_verbs": 0, "_device": 0, "_jobs": 0,
}


def _modules() -> dict[str, Path]:
    out = {}
    for p in (SRC / "slimlm").rglob("*.py"):
        parts = p.relative_to(SRC).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = p
    return out


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for sub in node.body:
                lines.update(range(sub.lineno, (sub.end_lineno or sub.lineno) + 1))
    return lines


def _imports(mods: dict[str, Path]) -> dict[str, list[tuple[str, list[str]]]]:
    """module -> [(imported module, names)], every import in the file (lazy ones too)."""
    out: dict[str, list[tuple[str, list[str]]]] = {}
    for m, p in mods.items():
        tree = ast.parse(p.read_text(encoding="utf-8"))
        skip = _type_checking_lines(tree)
        pkg = m if p.name == "__init__.py" else m.rsplit(".", 1)[0]
        found = []
        for node in ast.walk(tree):
            if getattr(node, "lineno", None) in skip:
                continue
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = pkg.split(".")
                    base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
                if base.startswith("slimlm"):
                    found.append((base, [a.name for a in node.names]))
            elif isinstance(node, ast.Import):
                found += [(a.name, []) for a in node.names if a.name.startswith("slimlm")]
        out[m] = found
    return out


def _edges(mods, imports) -> dict[str, set[str]]:
    edges = {m: set() for m in mods}
    for m, found in imports.items():
        for base, names in found:
            # `from pkg import submodule` depends on the submodule, not on what pkg/__init__ imports
            subs = [f"{base}.{n}" for n in names if f"{base}.{n}" in mods]
            for target in subs if subs and len(subs) == len(names) else [base, *subs]:
                if target in mods and target != m:
                    edges[m].add(target)
    return edges


def _top(m: str) -> str:
    return m.split(".")[1] if m.count(".") else ""


def test_no_import_cycles():
    mods = _modules()
    edges = _edges(mods, _imports(mods))
    index, low, stack, on, cycles, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in edges:
        if v not in index:
            visit(v)
    assert cycles == []


def test_layers_point_one_way_and_the_library_never_imports_the_cli():
    mods = _modules()
    bad = []
    for m, targets in _edges(mods, _imports(mods)).items():
        src = _top(m)
        for t in targets:
            dst = _top(t)
            if src == dst or not src:
                continue
            assert src in RANK and dst in RANK, f"give {src or dst} a layer in RANK"
            if RANK[dst] > RANK[src] or (dst == "cli" and src != "cli"):
                bad.append(f"{m} -> {t}")
    assert bad == []


def test_no_private_names_across_packages():
    mods = _modules()
    bad = []
    for m, found in _imports(mods).items():
        for base, names in found:
            if _top(base) == _top(m) or _top(base).startswith("_"):
                continue  # within a package, or the shared private helpers (_io, _progress, _quiet, _verbs)
            private = [n for n in names if n.startswith("_")]
            private += [part for part in base.split(".")[1:] if part.startswith("_") and part != "__init__"]
            if private:
                bad.append(f"{m} <- {base}: {private}")
    assert bad == []
