"""The layer rule of docs/architecture.md, checked: imports only go down, never into another
package's private modules, and plug-ins are found through entry points."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

import dicomflow

PACKAGE = Path(dicomflow.__file__).parent
ROOT = PACKAGE.parent
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint_imports(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(config), "--no-cache"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_layers_hold() -> None:
    """import-linter reads every import statement, function-level ones included."""
    result = _lint_imports(ROOT / "pyproject.toml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_the_layer_check_sees_an_upward_import(tmp_path: Path) -> None:
    """The same contract with two layers swapped must fail: the checker is not blind."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    layers = config["contracts"][0]["layers"]
    i, j = layers.index("pixels"), layers.index("catalog")
    layers[i], layers[j] = layers[j], layers[i]  # pixels reads catalogs: now an upward import
    swapped = tmp_path / "swapped.toml"
    contract = "\n".join(f'    "{name}",' for name in layers)
    swapped.write_text(
        textwrap.dedent("""\
        [tool.importlinter]
        root_package = "dicomflow"
        [[tool.importlinter.contracts]]
        name = "swapped"
        type = "layers"
        containers = ["dicomflow"]
        layers = [
        """)
        + contract
        + "\n]\n"
    )
    result = _lint_imports(swapped)
    assert result.returncode != 0
    assert "dicomflow.pixels" in result.stdout and "dicomflow.catalog" in result.stdout


def _imports(path: Path) -> list[tuple[int, str, list[str]]]:
    """``(line, absolute module, imported names)`` for every import in a file."""
    rel = path.relative_to(ROOT).with_suffix("").parts
    package = list(rel if path.name == "__init__.py" else rel[:-1])
    if path.name == "__init__.py":
        package = package[:-1] if package[-1] == "__init__" else package
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            found.append((node.lineno, module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name, []) for a in node.names]
    return found


def _private_reaches(path: Path, own: tuple[str, ...]) -> list[str]:
    """Imports from ``path`` into a private module or name of a package other than ``own``."""
    bad = []
    for line, module, names in _imports(path):
        parts = module.split(".")
        if parts[0] != "dicomflow" or tuple(parts[:2]) == own:
            continue
        private = [p for p in parts[1:] if p.startswith("_") and p != "_version"]
        private += [n for n in names if n.startswith("_") and n != "__version__"]
        if private:
            bad.append(f"{path.relative_to(ROOT)}:{line}: {module} ({', '.join(private)})")
    return bad


def test_no_package_reaches_into_another_packages_private_modules() -> None:
    """Packages talk through each other's ``__init__`` (its ``__all__``), never past it."""
    bad = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(ROOT).parts
        own = tuple(p.removesuffix(".py") for p in rel[:2])
        bad += _private_reaches(path, own)
    assert not bad, "\n".join(bad)


def test_the_private_import_check_finds_one(tmp_path: Path) -> None:
    sneaky = PACKAGE / "writers" / "_sneaky_probe.py"
    sneaky.write_text("from ..codecs._jpeg import DECODERS\n")
    try:
        found = _private_reaches(sneaky, ("dicomflow", "writers"))
    finally:
        sneaky.unlink()
    assert found and "dicomflow.codecs._jpeg" in found[0]


def test_py_typed_is_shipped() -> None:
    assert (PACKAGE / "py.typed").is_file()
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "py.typed" in package_data["package-data"]["dicomflow"]


_PLUGIN = """\
from dicomflow import Skip

class Reject:
    name = "reject-all"

    def __init__(self, why="plug-in says no"):
        self.why = why

    def __call__(self, instance):
        raise Skip(self.why)
"""


def _plugin_env(tmp_path: Path, entry_points: str) -> dict[str, str]:
    """A site folder with a module and an installed distribution's entry points."""
    (tmp_path / "acme_plugin.py").write_text(_PLUGIN)
    info = tmp_path / "acme_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(entry_points)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(ROOT), env.get("PYTHONPATH", "")])
    return env


def test_a_third_party_stage_is_found_through_its_entry_point(tmp_path: Path) -> None:
    env = _plugin_env(tmp_path, "[dicomflow.stages]\nreject = acme_plugin:Reject\n")
    script = textwrap.dedent("""\
        import dicomflow as dfl
        from dicomflow.pipeline import build_stage, known
        assert known("stage")["reject"] == "acme_plugin:Reject"
        stage = build_stage({"type": "reject", "why": "not in the cohort"})
        try:
            stage(None)
        except dfl.Skip as exc:
            print("skipped:", exc)
        """)
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "skipped: not in the cohort"


def test_a_plugin_cannot_take_a_built_in_name(tmp_path: Path) -> None:
    env = _plugin_env(tmp_path, "[dicomflow.sinks]\nfolder = acme_plugin:Reject\n")
    script = "from dicomflow.pipeline import known\nknown('sink')\n"
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0
    assert "acme-plugin registers sink 'folder', a built-in name" in result.stderr


@pytest.mark.parametrize("kind", ["reader", "stage", "sink"])
def test_every_built_in_name_resolves(kind: str) -> None:
    import importlib

    from dicomflow.pipeline import known

    for name, target in known(kind).items():
        module, _, attr = target.partition(":")
        assert callable(getattr(importlib.import_module(module), attr)), name


#: Tests that reach a private module, and why no public seam serves them.
TEST_PRIVATE_SEAMS = {
    "tests/test_scan_incremental.py": "fault injection: a kill during the dataset append",
    "tests/test_scan_bad_input.py": "fault injection: a scan converter that raises",
    "tests/pixels/test_frames.py": "monkeypatches the frame locator and the backend list; "
    "the frame array's keys (frames_array, white-box)",
    "tests/pixels/test_writers.py": "the NIfTI writer's choice of its direct path, white-box",
    "tests/derived/test_seg.py": "read_seg's direct 1-bit unpacking against pydicom, white-box",
    "tests/anonymize/test_verify_folders.py": "which recipe rules win, read from a manifest",
    "tests/anonymize/test_verify_fast.py": "the exhaustive search the shortcuts are compared with",
    "tests/anonymize/test_verify_memo.py": "the verifier's parts, keys and places against the "
    "plain walk, and the compiled helpers against their pure-Python equivalents",
    "tests/anonymize/test_ocr_parts.py": "the OCR detector's ink, flat levels and noisy "
    "lines, white-box",
    "tests/network/test_serve.py": "QIDO matching and DICOM JSON values per column type",
    "tests/network/test_lake.py": "holds the lake's writer threads off (their batch interval) "
    "to see the receiving thread hash",
    "tests/codecs/test_registry.py": "monkeypatches which JPEG plugin pydicom would use",
    "tests/pipeline/test_pipeline.py": "counts the process pools a run starts (monkeypatch); "
    "how rows are cut into tasks (_chunks)",
    "tests/pipeline/test_transcode.py": "white-box: the native fast path, the offset-table limit",
    "tests/dicom/test_cheader.py": "the compiled scanner core against the pure-Python functions",
    "tests/anonymize/test_tables.py": "the per-IOD rows, searched or grouped, against the file",
    "tests/dicom/test_files.py": "atomic_write's temporary names: a name in use, a forked child",
}


def test_tests_use_public_seams() -> None:
    """A test that needs a private module shows a missing seam: only the listed ones may."""
    tests = ROOT / "tests"
    reaching = set()
    for path in sorted(tests.rglob("*.py")):
        if path.name == "test_architecture.py":
            continue
        if _private_reaches(path, ("tests",)):
            reaching.add(path.relative_to(ROOT).as_posix())
    assert reaching <= set(TEST_PRIVATE_SEAMS), sorted(reaching - set(TEST_PRIVATE_SEAMS))
