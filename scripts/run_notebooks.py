"""Execute the notebooks in place, so they are committed with their outputs (``make notebooks``).

Usage: ``python scripts/run_notebooks.py [notebooks/NAME.ipynb ...]`` (default: every notebook
of ``notebooks/``).

Each notebook runs top to bottom in a fresh kernel whose working folder is a new temporary
folder (the notebooks write only below it, through relative paths), so nothing is left in the
checkout. Then its outputs are made fit to commit:

- every occurrence of that folder in an output becomes ``.`` (the catalog's ``uri`` column and
  the manifests hold absolute paths), and the run fails if any other path of this machine
  (the checkout, the home folder, ``/tmp/``, any ``/work/``, ``/root/``, ``/home/``...) is
  still in an output;
- no execution timings are recorded, so a rerun changes only what the code shows;
- a text output longer than ``MAX_TEXT`` characters, or a notebook whose outputs exceed
  ``MAX_NOTEBOOK`` bytes, fails the run: shorten what the cell shows instead.

The site (``make docs``) renders the notebooks from these committed outputs, without running
them; ``tests/test_notebooks.py`` runs them again and checks the committed ones are clean.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

ROOT = Path(__file__).resolve().parents[1]
MAX_TEXT = 40_000  # characters of one text output
MAX_NOTEBOOK = 400_000  # bytes of one notebook file, images included
DATA_URI = re.compile(r"data:image/[a-z]+;base64,[A-Za-z0-9+/=]+")
#: absolute paths of any machine, not only this one's folders: a shared or home folder, a
#: temporary one, a virtualenv's site-packages in a warning
ANY_MACHINE_PATH = re.compile(r"(?<![\w.])/(?:work|tmp|root|home|Users|private/var|var/folders)/")


def machine_paths() -> list[str]:
    """Paths of this machine that must not appear in a committed output."""
    paths = {str(ROOT), os.path.realpath(ROOT), str(Path.home()), "/tmp/", tempfile.gettempdir()}
    return sorted((p for p in paths if p not in ("", "/")), key=len, reverse=True)


def _scrub(value: object, folder: list[str]) -> object:
    if isinstance(value, str):
        for prefix in folder:
            value = value.replace(prefix, ".")
        return value
    if isinstance(value, list):
        return [_scrub(v, folder) for v in value]
    if isinstance(value, dict):
        return {k: _scrub(v, folder) for k, v in value.items()}
    return value


def problems(notebook: nbformat.NotebookNode) -> list[str]:
    """What makes a notebook's outputs unfit to commit (empty when fine)."""
    found = []
    for index, cell in enumerate(notebook.cells):
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                found.append(f"cell {index}: {output.get('ename')}: {output.get('evalue')}")
            text = json.dumps(
                {k: v for k, v in output.get("data", {}).items() if not k.startswith("image/")}
            ) + json.dumps(output.get("text", ""))
            for path in machine_paths():
                if path.rstrip("/") + "/" in text or path + '"' in text:
                    found.append(f"cell {index}: an output holds the path {path}")
            for match in sorted(set(ANY_MACHINE_PATH.findall(text))):
                found.append(f"cell {index}: an output holds an absolute path ({match}...)")
            for kind, body in [("text", output.get("text", ""))] + list(
                output.get("data", {}).items()
            ):
                # pictures, inline or in HTML (data URIs), are bounded by MAX_NOTEBOOK only
                size = len(DATA_URI.sub("", "".join(body)))
                if not kind.startswith("image/") and size > MAX_TEXT:
                    found.append(f"cell {index}: a {kind} output of {size:,} characters")
    return found


def execute(path: Path) -> nbformat.NotebookNode:
    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
            cell.metadata.pop("execution", None)
    with tempfile.TemporaryDirectory(prefix=f"dicomflow-{path.stem}-") as folder:
        client = NotebookClient(
            notebook,
            timeout=600,
            kernel_name="python3",
            record_timing=False,
            resources={"metadata": {"path": folder}},
        )
        client.execute()
        prefixes = sorted({folder, os.path.realpath(folder)}, key=len, reverse=True)
        for cell in notebook.cells:
            if cell.cell_type == "code":
                cell.outputs = [nbformat.from_dict(_scrub(o, prefixes)) for o in cell.outputs]
    return notebook


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path)
    args = parser.parse_args(argv)
    paths = args.notebooks or sorted((ROOT / "notebooks").glob("*.ipynb"))
    failed = False
    for path in paths:
        try:
            notebook = execute(path)
        except CellExecutionError as exc:
            failed = True
            print(f"{path}: not written: a cell failed\n{exc}", file=sys.stderr)
            continue
        text = nbformat.writes(notebook) + "\n"
        found = problems(notebook)
        if len(text.encode()) > MAX_NOTEBOOK:
            found.append(f"{len(text.encode()):,} bytes, more than {MAX_NOTEBOOK:,}")
        if found:
            failed = True
            print(f"{path}: not written:", *found, sep="\n  ", file=sys.stderr)
            continue
        path.write_text(text, encoding="utf-8")
        shown = path.resolve().relative_to(ROOT) if path.resolve().is_relative_to(ROOT) else path
        print(f"{shown}: {len(text.encode()):,} bytes")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
