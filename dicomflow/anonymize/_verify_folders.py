"""Verify a whole de-identified folder against the originals it came from.

Each output is paired with its original, then `verify` searches the output's bytes, text values
and path (relative to the output folder: what is shared) for every identifying value of the
original. Pairing, in order of preference:

1. the manifest of the run (``<output>.manifests``, ``<output>/.dicomflow/manifests``, or the
   folder given): every ``done`` row names its source and its outputs;
2. with the project secret: each original's SOP Instance UID mapped the way the engine maps it;
3. equal SOP Instance UIDs (outputs made with Retain UIDs);
4. otherwise by position, both sides sorted by path, when they hold as many files.

An output that cannot be paired cannot be verified, and a manifest found inside the output
folder holds the original paths and SOP Instance UIDs: both are reported as problems.

The manifest also records each Deidentify stage's configuration: the attributes its recipe keeps
are kept on purpose, reported as kept (not leaks) without being named again in ``kept``.

The pairs are verified in batches on a pool of worker processes (``workers``, one per core by
default; small folders in this process), with progress reported as `ProgressEvent` s.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom

from ..errors import ConfigError
from ..runtime import (
    ProgressEvent,
    as_consumer,
    fewer_collections,
    fork_is_safe,
    make_executor,
)
from ._keys import Keyring
from ._verify import LEAK, verify

__all__ = ["FolderFinding", "FolderReport", "verify_folders"]

_SKIP_NAMES = {"DICOMDIR"}
#: Pairs verified per task sent to a worker.
BATCH = 16
#: With ``workers=None``, fewer pairs than this are verified in this process: starting a pool
#: would cost more than it saves.
POOL_THRESHOLD = 200


@dataclass(frozen=True)
class FolderFinding:
    """An identifying value of ``original`` found in ``output`` (paths relative to their roots);
    ``kind`` is ``leak`` or ``kept``, as in `Finding`."""

    original: str
    output: str
    attribute: str
    value: str
    where: str
    kind: str = LEAK


@dataclass(frozen=True)
class FolderReport:
    """What `verify_folders` found.

    Attributes
    ----------
    pairs : int
        Outputs verified against their original.
    paired_by : str
        ``manifest``, ``keyed UID``, ``UID`` or ``order`` (``none``: nothing to pair).
    findings : tuple of FolderFinding
        Identifying values found in outputs (leaks).
    problems : tuple of str
        What could not be verified, or leaks outside the DICOM files (a manifest in the share).
    kept : tuple of FolderFinding
        Values found in outputs because an attribute is kept (by the profile, or on purpose):
        listed, not failing.
    """

    pairs: int
    paired_by: str
    findings: tuple[FolderFinding, ...]
    problems: tuple[str, ...]
    kept: tuple[FolderFinding, ...] = ()

    @property
    def ok(self) -> bool:
        """No finding and no problem."""
        return not self.findings and not self.problems

    def to_arrow(self) -> Any:
        """The findings, leaks then kept values, as a ``pyarrow.Table`` (column ``kind``)."""
        import pyarrow as pa

        names = ("original", "output", "attribute", "value", "where", "kind")
        rows = (*self.findings, *self.kept)
        return pa.table({n: [getattr(f, n) for f in rows] for n in names},
                        schema=pa.schema([(n, pa.string()) for n in names]))  # fmt: skip

    def summary(self) -> str:
        verdict = "no identifying value found" if self.ok else "LEAKS OR UNVERIFIED OUTPUTS"
        return (
            f"{self.pairs:,} outputs verified (paired by {self.paired_by}): "
            f"{len(self.findings):,} findings, {len(self.kept):,} kept, "
            f"{len(self.problems):,} problems: {verdict}"
        )


def _is_dicom(path: str) -> bool:
    if path.lower().endswith(".dcm"):
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return head[128:132] == b"DICM"


def _files(root: Path) -> list[str]:
    """The DICOM files under ``root`` (absolute), as paths that start with it, sorted."""
    found = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            path = os.path.join(folder, name)
            if name.startswith(".") or name in _SKIP_NAMES or not _is_dicom(path):
                continue
            found.append(path)
    return found


def _uid(path: str) -> str | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, force=True,
                                 specific_tags=["SOPInstanceUID"])  # fmt: skip
            return str(ds.SOPInstanceUID).strip() if "SOPInstanceUID" in ds else None
        except Exception:  # noqa: BLE001 - an unreadable file pairs with nothing
            return None


def _manifest_folders(deidentified: Path, manifest: str | os.PathLike[str] | None) -> list[Path]:
    if manifest is not None:
        return [Path(manifest)]
    return [
        p
        for p in (Path(f"{deidentified}.manifests"), deidentified / ".dicomflow" / "manifests")
        if p.is_dir()
    ]


def _from_manifest(folders: list[Path], deidentified: Path) -> dict[str, str]:
    """Output path -> source path, of the outputs under ``deidentified`` of every done row."""
    from ..pipeline import read_manifests

    pairs: dict[str, str] = {}
    inside = os.path.join(deidentified, "")
    for folder in folders:
        rows = read_manifests(str(folder)).select(["status", "source_uri", "outputs"])
        for row in rows.to_pylist():
            if row["status"] != "done":
                continue
            for output in row["outputs"] or ():
                out = os.path.abspath(output["path"])
                if out.startswith(inside) and os.path.basename(out) not in _SKIP_NAMES:
                    pairs[out] = row["source_uri"]
    return pairs


def _recipe_keeps(folders: list[Path]) -> frozenset[str]:
    """The targets the recipes of the runs' Deidentify stages keep, from the manifests' metadata."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    from ._recipe import Recipe

    keeps: set[str] = set()
    seen: set[bytes] = set()
    for folder in folders:
        paths = sorted(folder.glob("run-*.parquet")) + sorted(folder.glob("run-*/part-*.parquet"))
        for path in paths:
            try:
                metadata = pq.read_schema(path).metadata or {}
            except (OSError, pa.ArrowInvalid):
                continue  # a part cut short by a crash: its rows are not read either
            config = metadata.get(b"dicomflow.pipeline")
            if config is None or config in seen:
                continue
            seen.add(config)
            for stage in json.loads(config).get("stages", ()):
                if stage.get("type") == "deidentify" and stage.get("recipe"):
                    keeps.update(_kept_by(Recipe.from_config(stage["recipe"])))
    return frozenset(keeps)


def _kept_by(recipe: Any) -> set[str]:
    """The attributes a recipe keeps, as the collector names them (a keyword, else
    ``(GGGG,EEEE)``): per attribute the rule of the highest layer wins, however its target
    was spelt (``PatientName``, ``(0010,0010)`` and ``00100010`` are one attribute)."""
    from ._recipe import label

    winner: dict[tuple[Any, ...], Any] = {}
    for rule in recipe.rules:
        key = rule.parsed.key
        if key not in winner or rule.layer >= winner[key].layer:
            winner[key] = rule
    return {
        label(rule.parsed.value) if rule.parsed.kind == "public" else rule.target
        for rule in winner.values()
        if rule.action == "keep"
    }


def _pair(
    original: Path, deidentified: Path, outputs: list[str], secret: bytes | None
) -> tuple[dict[str, str], str]:
    originals = _files(original)
    by_uid: dict[str, str] = {}
    for path in originals:
        uid = _uid(path)
        if uid:
            by_uid.setdefault(uid, path)
    out_uids = {out: _uid(out) for out in outputs}
    if secret is not None:
        keys = Keyring(secret)
        mapped = {keys.uid(uid): path for uid, path in by_uid.items()}
        return {o: mapped[u] for o, u in out_uids.items() if u in mapped}, "keyed UID"
    same = {o: by_uid[u] for o, u in out_uids.items() if u in by_uid}
    if same:
        return same, "UID"
    if len(originals) == len(outputs):
        return dict(zip(outputs, originals, strict=True)), "order"
    return {}, "order"


@dataclass(frozen=True)
class _Pair:
    source: str
    output: str
    shown: str  # the output's path relative to the output folder: what is shared
    name: str  # the original's path relative to the original folder


def _verify_batch(
    task: tuple[list[_Pair], frozenset[str]],
) -> list[tuple[list[FolderFinding], str | None]]:
    """Verify a batch of pairs (in a worker): each pair's findings, or why it was not verified."""
    pairs, kept = task
    done: list[tuple[list[FolderFinding], str | None]] = []
    with warnings.catch_warnings(), fewer_collections():
        warnings.simplefilter("ignore")
        for pair in pairs:
            try:
                found = verify(pair.source, pair.output, output_path=pair.shown, kept=kept)
            except Exception as exc:  # noqa: BLE001 - unverifiable is reported, not raised
                problem = f"{pair.shown}: cannot be verified: {type(exc).__name__}: {exc}"
                done.append(([], problem))
                continue
            done.append(([FolderFinding(pair.name, pair.shown, f.attribute, f.value, f.where,
                                        f.kind) for f in found], None))  # fmt: skip
    return done


def _batches(
    pairs: list[_Pair], kept: frozenset[str]
) -> Iterator[tuple[list[_Pair], frozenset[str]]]:
    for start in range(0, len(pairs), BATCH):
        yield pairs[start : start + BATCH], kept


def verify_folders(
    original: str | os.PathLike[str],
    deidentified: str | os.PathLike[str],
    *,
    manifest: str | os.PathLike[str] | None = None,
    secret: bytes | None = None,
    kept: Collection[str] = (),
    workers: int | None = None,
    progress: Any = None,
) -> FolderReport:
    """Verify every de-identified output under ``deidentified`` against its original.

    Parameters
    ----------
    original, deidentified : path
        The input folder and the output folder of a de-identification run.
    manifest : path, optional
        The run's manifest folder, when it is not beside or inside ``deidentified``.
    secret : bytes, optional
        The project secret: pairs outputs with originals by their keyed UIDs when there is no
        manifest.
    kept : collection of str, optional
        Attributes kept on purpose (keywords or ``(gggg,eeee)``), as for `verify`; those a
        recipe recorded in the manifest keeps are added to them.
    workers : int, optional
        Worker processes; ``1`` verifies in this process; default one per core (in this process
        for fewer than `POOL_THRESHOLD` pairs).
    progress : bool or callable, optional
        ``True`` for a progress bar on a terminal, or a callable given a `ProgressEvent`
        (task ``verifying``, unit ``files``) after each batch and at the end.

    Returns
    -------
    FolderReport
        ``report.ok`` is True when nothing identifying was found and every output was paired.
    """
    if workers is not None and workers < 1:
        raise ConfigError(f"workers must be >= 1, got {workers}")
    original = Path(os.path.abspath(original))
    deidentified = Path(os.path.abspath(deidentified))
    for what, folder in (("original", original), ("de-identified", deidentified)):
        if not folder.is_dir():  # a gate that passes on a typo would pass anything
            problem = f"the {what} folder {folder} does not exist, so nothing was verified"
            return FolderReport(0, "none", (), (problem,))
    outputs = _files(deidentified)
    if not outputs:
        problem = f"no DICOM file in {deidentified}, so nothing was verified"
        return FolderReport(0, "none", (), (problem,))
    folders = _manifest_folders(deidentified, manifest)
    problems: list[str] = []
    inside = [f for f in folders if deidentified in Path(os.path.abspath(f)).parents]
    for folder in inside:
        problems.append(
            f"a manifest inside the output ({folder.relative_to(deidentified)}) holds the "
            "original file paths and SOP Instance UIDs: move it out before sharing"
        )
    pairs = _from_manifest(folders, deidentified) if folders else {}
    if pairs:  # the run's recipe says which attributes it kept on purpose
        kept = frozenset(kept) | _recipe_keeps(folders)
    paired_by = "manifest"
    if not pairs:
        pairs, paired_by = _pair(original, deidentified, outputs, secret)
    jobs: list[_Pair] = []
    below, within = os.path.join(deidentified, ""), os.path.join(original, "")
    for out in outputs:
        source = pairs.get(out)
        shown = out[len(below) :]  # `_files` gives paths under the folder
        if source is None:
            problems.append(f"{shown}: not paired with an original, so not verified")
            continue
        if not os.path.isfile(source):
            problems.append(f"{shown}: its original {source} is missing, so not verified")
            continue
        absolute = os.path.abspath(source)
        name = absolute[len(within) :] if absolute.startswith(within) else source
        jobs.append(_Pair(source, out, shown, name))
    leaks, kept_found, verified = _run(jobs, frozenset(kept), workers, progress, problems)
    if not jobs:
        problems.append(f"none of the {len(outputs)} outputs could be paired with an original")
    return FolderReport(verified, paired_by, tuple(leaks), tuple(problems), tuple(kept_found))


def _run(
    jobs: list[_Pair],
    kept: frozenset[str],
    workers: int | None,
    progress: Any,
    problems: list[str],
) -> tuple[list[FolderFinding], list[FolderFinding], int]:
    """Verify the pairs, on a pool when it is worth starting one; (leaks, kept, verified)."""
    consumer = as_consumer(progress)
    leaks: list[FolderFinding] = []
    kept_found: list[FolderFinding] = []
    verified = failed = 0
    start = time.perf_counter()
    in_process = workers == 1 or (workers is None and len(jobs) < POOL_THRESHOLD)
    executor = make_executor(
        1 if in_process else workers, start_method="fork" if fork_is_safe() else "forkserver"
    )

    def emit(finished: bool = False) -> None:
        if consumer is not None:
            consumer(ProgressEvent(
                "verifying", unit="files", done=verified + failed, total=len(jobs),
                failed=failed, elapsed=time.perf_counter() - start,
                detail={"leaks": len(leaks), "kept": len(kept_found)}, finished=finished,
            ))  # fmt: skip

    try:
        for results in executor.map(_verify_batch, _batches(jobs, kept)):
            for found, problem in results:
                if problem is not None:
                    problems.append(problem)
                    failed += 1
                    continue
                verified += 1
                for f in found:
                    (leaks if f.kind == LEAK else kept_found).append(f)
            emit()
        emit(finished=True)
    finally:
        executor.close()
    return leaks, kept_found, verified
