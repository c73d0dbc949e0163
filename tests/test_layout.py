"""The shape of the code, read from its own imports: no circle, a core free of the machinery, every import down."""
from __future__ import annotations

import ast
import functools
from pathlib import Path

from tests.conftest import ROOT

TOPS = ("bigram_jax", "bench", "torch_ref", "scripts")  # everything whose imports are checked
CORE = tuple(f"bigram_jax.{m}" for m in ("lecture", "model", "loss", "counts", "data", "train", "sampling", "evaluate",
                                          "config", "errors"))
MACHINERY = ("bigram_jax.compile", "bigram_jax.run", "bigram_jax.checkpoint", "bigram_jax.cli", "bigram_jax.store",
             "bench", "torch_ref")
LOADED_WITH_THE_CORE = ("bigram_jax.compile", "bigram_jax.run", "bigram_jax.checkpoint", "bigram_jax.cli", "bench",
                        "torch_ref", "scripts")  # what importing a core module must never load, however indirectly
# Every room (a core module, a folder of bigram_jax, bench, torch_ref, scripts) has a layer. An import goes down to a
# lower layer, or stays within its own room; two rooms of one layer do not import each other. A module of a room not
# named here fails the test: a new room is placed deliberately.
LAYERS = {"bigram_jax.errors": 0,
          "bigram_jax.store": 1, "bigram_jax.config": 1,
          "bigram_jax.model": 2, "bigram_jax.counts": 2, "bigram_jax.data": 2,
          "bigram_jax.loss": 3, "bigram_jax.devices": 3,
          "bigram_jax.train": 4, "bigram_jax.sampling": 4, "bigram_jax.evaluate": 4,
          "bigram_jax.corpus": 5, "bigram_jax.compile": 5,
          "bigram_jax.lecture": 6, "bigram_jax.checkpoint": 6,  # the lecture reads its text through corpus/files.py
          "bigram_jax.run": 7,
          "bigram_jax.cli": 8, "bigram_jax": 8,  # the package's front door: its names are imported on first use
          "torch_ref": 9, "bench": 10, "scripts": 11}


def _name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


@functools.cache
def _modules() -> dict[str, Path]:
    """Every module of the project, by dotted name (a package by its own name: bigram_jax.corpus)."""
    return {_name(p): p for top in TOPS for p in sorted((ROOT / top).rglob("*.py"))}


def _resolve(name: str) -> str | None:
    """The project module `name` imports: itself, else the closest package above it (a name defined there)."""
    while name and name not in _modules():
        name = name.rpartition(".")[0]
    return name or None


@functools.cache
def _imports(module: str) -> frozenset[str]:
    """The project modules `module` imports, as written, at any depth of its body (imports inside functions count):
    `from a.b import c` is a.b.c if that is a module, else a.b; relative imports are resolved."""
    path = _modules()[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {_resolve(a.name) for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{up}.{base}" if base else up
            out |= {_resolve(f"{base}.{a.name}") if f"{base}.{a.name}" in _modules() else _resolve(base)
                    for a in node.names}
    return frozenset(out - {None, module})


def _graph() -> dict[str, set[str]]:
    """The import graph, with the package above each module: importing a.b.c first runs a/b/__init__.py, so a module
    that imports its own package whose __init__ imports it back is a circle too."""
    mods = _modules()
    return {m: set(_imports(m)) | ({m.rpartition(".")[0]} & set(mods)) for m in mods}


def _room(module: str) -> str:
    """The room of LAYERS a module is in (the closest name at or above it)."""
    name = module
    while name and name not in LAYERS:
        name = name.rpartition(".")[0]
    assert name, f"{module} is in no room of LAYERS: give its folder or module a layer"
    return name


def _within(module: str, rooms: tuple[str, ...]) -> bool:
    return any(module == r or module.startswith(r + ".") for r in rooms)


def test_no_import_circle():
    graph, state = _graph(), {}  # state: 1 = on the current path, 2 = done

    def visit(m: str, path: list[str]) -> None:
        state[m], path = 1, path + [m]
        for d in sorted(graph[m]):
            assert state.get(d) != 1, "import circle: " + " -> ".join(path[path.index(d):] + [d])
            if d not in state:
                visit(d, path)
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [])


def test_package_inits_import_nothing_of_the_library():
    """Every __init__.py of bigram_jax is a docstring (and the front door's names, imported on first use): importing
    one module never runs another through its package."""
    found = {m: sorted(d for d in _imports(m) if _within(d, ("bigram_jax",)))
             for m, p in _modules().items() if m.startswith("bigram_jax") and p.name == "__init__.py"}
    assert {m: d for m, d in found.items() if d} == {}


def test_the_core_imports_no_machinery():
    """The core (the lecture's model, loss, counts, data, train step, sampler, evaluation, config and errors) imports
    nothing of compile/, run/, checkpoint/, cli/, store/, the bench or torch_ref; nor loads any of them (store/ aside)
    through what it imports."""
    direct = {m: sorted(d for d in _imports(m) if _within(d, MACHINERY)) for m in CORE}
    assert {m: d for m, d in direct.items() if d} == {}
    for m in CORE:
        how, todo = {m: [m]}, [m]  # every module importing m loads, and the chain of imports that loads it
        while todo:
            at = todo.pop()
            for d in sorted(_imports(at) - set(how)):
                how[d] = how[at] + [d]
                todo.append(d)
        loaded = [" -> ".join(chain) for d, chain in sorted(how.items()) if _within(d, LOADED_WITH_THE_CORE)]
        assert not loaded, loaded


def test_the_library_imports_neither_the_bench_nor_the_scripts():
    found = {m: sorted(d for d in _imports(m) if _within(d, ("bench", "scripts")))
             for m in _modules() if _within(m, ("bigram_jax",))}
    assert {m: d for m, d in found.items() if d} == {}


def test_every_import_goes_down_the_layers():
    """An import stays within its room or goes to a room of a lower layer: see LAYERS."""
    up = [f"{m} ({_room(m)}, {LAYERS[_room(m)]}) imports {d} ({_room(d)}, {LAYERS[_room(d)]})"
          for m in sorted(_modules()) for d in sorted(_imports(m))
          if _room(d) != _room(m) and LAYERS[_room(d)] >= LAYERS[_room(m)]]
    assert not up, "\n".join(up)


def test_functions_are_short():
    long = []
    for name, path in _modules().items():
        if not name.startswith("bigram_jax"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 50:
                long.append(f"{name}.{node.name}: {node.end_lineno - node.lineno + 1} lines")
    assert not long, long


def test_scripts_are_thin():
    for path in sorted((ROOT / "scripts").rglob("*.py")):
        tree = ast.parse(path.read_text())
        defs = [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
        assert not defs and len(path.read_text().splitlines()) <= 15, f"{path.name}: {defs}"
