"""docs/bigram_jax.ipynb: executed top to bottom on the CPU in a python3 kernel, and the committed copy checked.

The notebook runs with its working directory in a temp folder, so everything it writes (runs/notebook, the PNGs)
lands there. To store fresh outputs back into the notebook (absolute paths scrubbed), for committing:

    BIGRAM_JAX_WRITE_NOTEBOOK=1 python -m pytest tests/test_notebook.py
"""
from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.conftest import ROOT

NOTEBOOK = ROOT / "docs" / "bigram_jax.ipynb"
MAX_BYTES = 1_500_000
WRITE = os.environ.get("BIGRAM_JAX_WRITE_NOTEBOOK") == "1"
# an absolute path in an output: a slash that starts a word, then at least one folder ('.../x.txt' is scrubbed)
ABSOLUTE = re.compile(r"(?<![\w.])/[\w.~-]+/")


def execute(workdir: Path, corpus: Path) -> nbformat.NotebookNode:
    """Run the notebook in a fresh python3 kernel with `workdir` as its working directory; raises on any cell error."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    env = {**os.environ,
           "BIGRAM_JAX_DATA": str(corpus),  # the corpus the tests read, as conftest resolved it
           "JAX_PLATFORMS": "cpu",
           "JAX_DEBUG_KEY_REUSE": "true",  # as the tests: a reused PRNG key is an error
           "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
           "XDG_CACHE_HOME": str(workdir / ".cache"),  # nothing written outside the temp folder
           "IPYTHONDIR": str(workdir / ".ipython"),
           "MPLCONFIGDIR": str(workdir / ".matplotlib")}
    client = NotebookClient(nb, timeout=600, kernel_name="python3", record_timing=False,
                            resources={"metadata": {"path": str(workdir)}})
    client.execute(env=env)
    return nb


def coalesce_streams(nb: nbformat.NotebookNode) -> None:
    """Join consecutive stdout (or stderr) outputs of a cell into one, as a live notebook shows them."""
    for cell in nb.cells:
        merged = []
        for out in cell.get("outputs", []):
            prev = merged[-1] if merged else None
            if prev is not None and out.output_type == "stream" and prev.output_type == "stream" \
                    and prev.name == out.name:
                prev.text += out.text
            else:
                merged.append(out)
        if "outputs" in cell:
            cell.outputs = merged


def _texts(nb: nbformat.NotebookNode):
    """Every text output of the code cells, as (output, key, text): stream text and text/* display data."""
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if "text" in out:
                yield out, "text", out["text"]
            for mime, value in out.get("data", {}).items():
                if mime.startswith("text/") or mime == "application/json":
                    yield out["data"], mime, value if isinstance(value, str) else json.dumps(value)


def scrub(nb: nbformat.NotebookNode, prefixes: list[Path]) -> None:
    """Replace each machine folder in the outputs by '...' (the library prints 'data: /abs/path/file.txt')."""
    names = sorted({str(p) for q in prefixes for p in (q, q.resolve())}, key=len, reverse=True)
    for holder, key, text in list(_texts(nb)):
        for name in names:
            text = text.replace(name + os.sep, ".../").replace(name, "...")
        holder[key] = text


def _problems(nb: nbformat.NotebookNode) -> list[str]:
    """What would make the notebook unfit to commit: errors, unexecuted cells, absolute paths, size."""
    out = []
    code = [c for c in nb.cells if c.cell_type == "code"]
    counts = [c.get("execution_count") for c in code]
    if counts != list(range(1, len(code) + 1)):
        out.append(f"code cells not executed top to bottom in one kernel: execution counts {counts}")
    out += [f"error output: {o.get('ename')}: {o.get('evalue')}" for c in code for o in c.outputs
            if o.output_type == "error"]
    out += [f"absolute path in an output: {m.group(0)!r} in {text[max(m.start() - 60, 0):m.end() + 20]!r}"
            for _, _, text in _texts(nb) for m in [ABSOLUTE.search(text)] if m]
    pngs = sum("image/png" in o.get("data", {}) for c in code for o in c.outputs)
    if pngs != 2:
        out.append(f"expected the loss curve and the transition table as 2 PNG outputs, found {pngs}")
    size = len(nbformat.writes(nb).encode())
    if size > MAX_BYTES:
        out.append(f"notebook is {size:,} bytes, over {MAX_BYTES:,}")
    return out


def _output_text(nb: nbformat.NotebookNode) -> str:
    return "\n".join(text for _, _, text in _texts(nb))


@pytest.mark.e2e
@pytest.mark.torch  # the notebook sets the lecture's torch model beside the JAX one
def test_notebook_runs_top_to_bottom(tmp_path, shakespeare_path, monkeypatch):
    """Every cell runs without raising, on the CPU, writing only under a temp folder; the outputs are clean."""
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / ".jupyter"))  # the kernel's connection file
    workdir = tmp_path / "work"
    workdir.mkdir()
    nb = execute(workdir, shakespeare_path)
    coalesce_streams(nb)
    scrub(nb, [shakespeare_path.parent, workdir, ROOT.parent, Path.home(), Path(tempfile.gettempdir())])
    assert _problems(nb) == []
    text = _output_text(nb)
    summary = json.loads((workdir / "runs" / "notebook" / "summary.json").read_text())
    assert summary["step"] == 3000 and summary["backend"] == "cpu"
    assert summary["val_loss"] - summary["floor_val_loss"] < 0.02  # the lecture's run ends near the floor
    assert "step 3000: train loss" in text and "data: .../tinyshakespeare.txt" in text
    assert "same sample as the run: True" in text  # the checkpoint holds exactly the trained table
    assert "max |difference|: 0.0" in text  # torch's logits from the converted table: bit-identical
    assert sorted(p.name for p in (workdir / "runs" / "notebook").glob("*.png")) == ["loss.png", "transitions.png"]
    if WRITE:
        nbformat.write(nb, NOTEBOOK)


def test_committed_notebook_carries_clean_outputs():
    """The committed notebook holds the outputs of one top-to-bottom run, no machine's paths, and is small."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    assert _problems(nb) == []
    cells = nb.cells
    assert cells[0].cell_type == "markdown"
    # a short explanation before every code cell
    assert all(cells[i - 1].cell_type == "markdown" for i, c in enumerate(cells) if c.cell_type == "code")
    assert "step 3000: train loss" in _output_text(nb)
