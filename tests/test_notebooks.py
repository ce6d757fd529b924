"""The notebooks of notebooks/: committed with clean outputs, and they still run.

``make notebooks`` (scripts/run_notebooks.py) executes them in a temporary folder and writes
them back with their outputs; the site renders those outputs. Here each committed notebook is
checked as committed (outputs present, pictures inline, no machine path, small), then run again
top to bottom: no cell may fail, and every cell that had an output (a picture, a table) when
committed must still give one of the same kind. Pixels are not compared.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def _runner():
    spec = importlib.util.spec_from_file_location(
        "run_notebooks", ROOT / "scripts/run_notebooks.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _kinds(cell) -> set[str]:
    """What a code cell shows: output types and the MIME types of rich outputs."""
    kinds = set()
    for output in cell.get("outputs", []):
        if output.get("output_type") == "stream":
            kinds.add(f"stream:{output.get('name')}")
        kinds.update(k for k in output.get("data", {}) if k in ("image/png", "text/html"))
    return kinds - {"stream:stderr"}


def test_there_are_notebooks() -> None:
    assert {p.stem for p in NOTEBOOKS} >= {"pipeline", "volumes", "deidentify", "pacs_to_lake"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_committed_outputs_are_clean(path: Path) -> None:
    notebook = nbformat.read(path, as_version=4)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert sum(bool(c.get("outputs")) for c in code) >= len(code) - 1, "run `make notebooks`"
    assert _runner().problems(notebook) == []  # no error, no machine path, no huge text
    assert path.stat().st_size <= _runner().MAX_NOTEBOOK
    if path.stem in ("volumes", "deidentify", "pacs_to_lake"):  # each draws a montage inline
        assert any("image/png" in _kinds(c) for c in code)


def test_runner_scrubs_its_folder_and_refuses_other_paths(tmp_path: Path) -> None:
    runner = _runner()
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [
        nbformat.v4.new_code_cell("import os\nprint(os.getcwd() + '/out.parquet')"),
        nbformat.v4.new_code_cell("os.path.abspath('x.dcm')"),
    ]
    path = tmp_path / "probe.ipynb"
    nbformat.write(notebook, path)
    ran = runner.execute(path)
    shown = [ran.cells[0].outputs[0]["text"], ran.cells[1].outputs[0]["data"]["text/plain"]]
    assert shown == ["./out.parquet\n", "'./x.dcm'"]
    assert runner.problems(ran) == []
    ran.cells[1].outputs[0]["data"]["text/plain"] = "'/home/someone/data/x.dcm'"
    assert runner.problems(ran)  # a path the runner did not make relative is refused


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes(path: Path, tmp_path: Path) -> None:
    committed = nbformat.read(path, as_version=4)
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources={
        "metadata": {"path": str(tmp_path)}
    }).execute()  # fmt: skip
    errors = [
        f"{out.get('ename')}: {out.get('evalue')}"
        for cell in notebook.cells
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
        if out.get("output_type") == "error"
    ]
    assert not errors
    for index, (before, after) in enumerate(zip(committed.cells, notebook.cells)):
        if before.cell_type == "code":
            missing = _kinds(before) - _kinds(after)
            assert not missing, f"cell {index} no longer shows {missing}"
