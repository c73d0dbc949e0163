"""The shape of the code: short functions and files, no import circle, no library logic under scripts/."""
from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import ROOT

PACKAGES = [ROOT / "bigram_jax", ROOT / "torch_ref"]


def _modules() -> dict[str, Path]:
    return {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p
            for pkg in PACKAGES for p in sorted(pkg.rglob("*.py"))}


def test_functions_and_files_are_short():
    long = []
    for name, path in _modules().items():
        tree = ast.parse(path.read_text())
        if len(path.read_text().splitlines()) > 250:
            long.append(f"{name}: {len(path.read_text().splitlines())} lines")
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and name.startswith("bigram_jax"):
                n = node.end_lineno - node.lineno + 1
                if n > 50:
                    long.append(f"{name}.{node.name}: {n} lines")
    assert not long, long


def _imports(path: Path, known: set[str]) -> set[str]:
    """The project modules a module imports, at any depth of its body (lazy imports count)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        out |= {n for n in names if n in known}
    return out


def test_no_import_circle():
    mods = _modules()
    graph = {m: _imports(p, set(mods)) - {m} for m, p in mods.items()}
    graph = {m: {d for d in deps if not m.startswith(d + ".") and d != m.rsplit(".", 1)[0]} for m, deps in graph.items()}
    seen: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(m: str, path: list[str]) -> None:
        seen[m] = 1
        for d in sorted(graph[m]):
            assert seen.get(d) != 1, " -> ".join(path + [m, d])
            if d not in seen:
                visit(d, path + [m])
        seen[m] = 2

    for m in sorted(graph):
        if m not in seen:
            visit(m, [])


def test_scripts_are_thin():
    for path in sorted((ROOT / "scripts").rglob("*.py")):
        tree = ast.parse(path.read_text())
        defs = [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
        assert not defs and len(path.read_text().splitlines()) <= 15, f"{path.name}: {defs}"
