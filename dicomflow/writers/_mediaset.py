"""DICOM media sets: Part 10 files under PS3.10 File IDs, and the DICOMDIR that indexes them.

A File-set (PS3.10 section 8) is a folder whose DICOM files are named only by File ID
components (at most 8 characters from ``A-Z 0-9 _``, at most 8 levels), plus one ``DICOMDIR``
file at the root: a Basic Directory IOD (PS3.3 Annex F) with a PATIENT / STUDY / SERIES record
tree whose leaves (IMAGE, SR DOCUMENT, RT DOSE, ... as PS3.3 F.5 defines them) reference the
files by File ID, with their SOP Class, SOP Instance and Transfer Syntax UIDs.

The :class:`MediaSet` sink writes each instance at a File ID made from hashes of its Patient ID,
Study, Series and SOP Instance UIDs (``PTxxxxxx/STxxxxxx/SExxxxxx/xxxxxxxx``), so every worker
names files the same way without talking to the others; a different instance landing on a name
already used fails (:class:`~dicomflow.dicom.files.CollisionError`) and nothing is
overwritten. ``close`` then lists the folder and builds the DICOMDIR from the files it holds,
so files written by earlier runs are included and a rerun gives the same bytes.

Type 1 record keys that an instance does not carry are taken from a related attribute
(e.g. Study Date from Series, Acquisition or Content Date) or, failing that, get a fixed
placeholder (Study Date ``19000101``, Study Time ``000000``, Study ID from a hash of the Study
Instance UID, numbers ``0``, Modality ``OT``, labels ``UNNAMED``), as DCMTK's
``dcmmkdir --invent`` does; the files themselves are not changed.
"""

from __future__ import annotations

import copy
import hashlib
import os
import re
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydicom import Dataset, dcmread

from ..dicom import (
    TMP_SUFFIX,
    CollisionError,
    atomic_write,
    encode_part10,
    is_url,
    join,
    remove_stale_temporaries,
)
from ..errors import ConfigError
from ..pipeline import Instance, Output, RunContext
from ._records import (
    _ROOT_TYPES,
    DICOMDIR_SOP_CLASS,
    MediaSetError,
    _hash36,
    _Node,
    _patient_key,
    _text,
    encode_dicomdir,
    leaf_record,
    record_type_for,
)

__all__ = [
    "DICOMDIR_SOP_CLASS",
    "MediaSet",
    "MediaSetError",
    "build_dicomdir",
    "file_id_for",
    "record_type_for",
    "write_mediaset",
]

#: one File ID component (PS3.10 8.2, PS3.11 D.3.2 / E.2.2)
FILE_ID_COMPONENT = re.compile(r"^[A-Z0-9_]{1,8}$")
MAX_FILE_ID_LEVELS = 8
_FILESET_ID = re.compile(r"^[A-Z0-9_ ]{0,16}$")


def file_id_for(ds: Dataset) -> tuple[str, ...]:
    """The File ID of an instance in a media set: components matching ``^[A-Z0-9_]{1,8}$``.

    Folders are ``PT``/``ST``/``SE`` and 6 base-36 characters of a SHA-256 of the Patient ID,
    Study and Series Instance UID (two values sharing a folder is harmless); the file name is
    8 characters of a SHA-256 of the SOP Instance UID (36**8 names per series). Instances
    whose records sit at the root of the directory (Color Palettes) go in ``PALETTE/``.

    Examples
    --------
    >>> from pydicom import Dataset
    >>> ds = Dataset(); ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"; ds.PatientID = "P1"
    >>> ds.StudyInstanceUID = "1.2"; ds.SeriesInstanceUID = "1.2.3"; ds.SOPInstanceUID = "1.2.3.4"
    >>> [len(c) for c in file_id_for(ds)]
    [8, 8, 8, 8]
    """
    record_type = record_type_for(ds)
    if record_type in _ROOT_TYPES:
        if not _text(ds, "SOPInstanceUID"):
            raise MediaSetError("an instance in a media set needs SOPInstanceUID")
        return (record_type.replace(" ", "_")[:8], _hash36(_text(ds, "SOPInstanceUID"), 8))
    keys = ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
    missing = [k for k in keys if not _text(ds, k)]
    if missing:
        raise MediaSetError(f"an instance in a media set needs {', '.join(missing)}")
    return (
        "PT" + _hash36(_patient_key(ds), 6),
        "ST" + _hash36(_text(ds, "StudyInstanceUID"), 6),
        "SE" + _hash36(_text(ds, "SeriesInstanceUID"), 6),
        _hash36(_text(ds, "SOPInstanceUID"), 8),
    )


@dataclass(frozen=True)
class MediaSet:
    """Sink: a PS3.10 File-set under ``root``: Part 10 files at File IDs, and a DICOMDIR.

    Parameters
    ----------
    root
        A local folder or an fsspec URL; created if missing. Files already there (from earlier
        runs, or other writers using conformant File IDs) are kept and indexed too.
    fileset_id
        The File-set ID (0004,1130): up to 16 characters from ``A-Z 0-9 _`` and space.
    storage_options
        Passed to fsspec for URLs.

    Examples
    --------
    >>> sink = MediaSet("share/")  # doctest: +SKIP
    >>> run = dfl.pipeline(dfl.scan("study/")).write(sink).execute()  # doctest: +SKIP
    """

    root: str
    fileset_id: str = "DICOMFLOW"
    storage_options: Mapping[str, Any] = field(default_factory=dict)
    name: str = "mediaset"

    def __post_init__(self) -> None:
        if not _FILESET_ID.match(self.fileset_id):
            raise ConfigError(
                f"File-set ID {self.fileset_id!r}: at most 16 characters from A-Z, 0-9, "
                "'_' and space"
            )

    def config(self) -> dict[str, Any]:
        return {"type": "mediaset", "root": str(self.root), "fileset_id": self.fileset_id}

    @property
    def manifest_folder(self) -> str:
        """Beside the File-set, not in it: a File-set holds only File IDs and the DICOMDIR."""
        return str(self.root).rstrip("/") + ".manifests"

    def open(self, context: RunContext) -> None:
        """Remove temporary files an interrupted earlier run left behind."""
        remove_stale_temporaries(str(self.root), self.storage_options)

    def path_for(self, ds: Dataset) -> str:
        """Where an instance is written: ``root`` joined with its File ID."""
        return join(str(self.root), *file_id_for(ds))

    def write(self, instance: Instance) -> list[Output]:
        """Write one instance at its File ID; fails (nothing written) when the instance could
        not get a complete directory record, so that ``close`` never meets such a file."""
        ds = instance.dataset
        file_id = file_id_for(ds)
        leaf_record(ds, record_type_for(ds), file_id, "")
        data = encode_part10(ds)
        path = join(str(self.root), *file_id)
        atomic_write(path, data, storage_options=self.storage_options)
        return [Output.of_bytes(self.name, path, data)]

    def close(self, context: RunContext, manifest: Any) -> None:
        """Build the DICOMDIR from the files under ``root`` (the manifest is not needed)."""
        build_dicomdir(self.root, fileset_id=self.fileset_id, storage_options=self.storage_options)


@dataclass(frozen=True)
class _Entry:
    """A file of the File-set: its File ID, header (no pixel data) and transfer syntax."""

    file_id: tuple[str, ...]
    ds: Dataset
    transfer_syntax: str


def _fs(root: str, storage_options: Mapping[str, Any]) -> tuple[Any, str]:
    import fsspec

    fs, base = fsspec.core.url_to_fs(str(root), **dict(storage_options))
    return fs, base.rstrip("/")


def _file_ids(fs: Any, base: str) -> list[tuple[str, ...]]:
    """File IDs of the files under ``base`` named only by conformant components."""
    if not fs.exists(base):
        return []
    found = []
    for path in fs.find(base, detail=False):
        parts = tuple(path[len(base) :].strip("/").split("/"))
        if parts == ("DICOMDIR",) or len(parts) > MAX_FILE_ID_LEVELS:
            continue
        if all(FILE_ID_COMPONENT.match(p) for p in parts):
            found.append(parts)
    return sorted(found)


def _read_entry(fs: Any, base: str, file_id: tuple[str, ...]) -> _Entry | None:
    path = "/".join([base, *file_id])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with fs.open(path, "rb") as f:
                ds = dcmread(f, defer_size=256)  # values are skipped, not read
    except Exception as exc:  # noqa: BLE001 - reported below, the rest is still indexed
        warnings.warn(
            f"{path} is not a DICOM Part 10 file ({exc}); left out of the DICOMDIR", stacklevel=3
        )
        return None
    ts = str(ds.file_meta.get("TransferSyntaxUID", "") or "")
    if str(ds.get("SOPClassUID", "")) == DICOMDIR_SOP_CLASS:
        return None
    return _Entry(file_id, ds, ts)


def _tree(entries: Iterable[_Entry]) -> tuple[list[_Node], list[str]]:
    """The record tree (PATIENT > STUDY > SERIES > leaf, plus root-level records, sorted) and
    the SOP Instance UIDs in it. Only records are kept, not the headers they came from."""
    top = _Node(Dataset())
    seen: dict[str, tuple[str, ...]] = {}
    for entry in entries:
        ds = entry.ds
        uid = _text(ds, "SOPInstanceUID")
        if uid in seen:
            first, second = ("/".join(f) for f in (seen[uid], entry.file_id))
            raise CollisionError(f"SOP Instance {uid} is in the File-set twice: {first}, {second}")
        seen[uid] = entry.file_id
        try:
            record_type = record_type_for(ds)
            leaf = leaf_record(ds, record_type, entry.file_id, entry.transfer_syntax)
        except MediaSetError as exc:
            warnings.warn(
                f"{'/'.join(entry.file_id)}: {exc}; left out of the DICOMDIR", stacklevel=3
            )
            continue
        if record_type in _ROOT_TYPES:
            top.children.append(_Node(leaf))
            continue
        patient = top.child(_patient_key(ds), "PATIENT", ds)
        study = patient.child(_text(ds, "StudyInstanceUID"), "STUDY", ds)
        series = study.child(_text(ds, "SeriesInstanceUID"), "SERIES", ds)
        series.children.append(_Node(leaf))
    top.sort()
    return top.children, sorted(seen)


def _fileset_uid(fs: Any, base: str, fileset_id: str, uids: list[str]) -> str:
    """The File-set UID: kept from an existing DICOMDIR, else derived from the contents."""
    path = f"{base}/DICOMDIR"
    if fs.exists(path):
        try:
            with fs.open(path, "rb") as f, warnings.catch_warnings():
                warnings.simplefilter("ignore")
                old = dcmread(f, stop_before_pixels=True, specific_tags=["FileSetID"])
            uid = str(old.file_meta.get("MediaStorageSOPInstanceUID", "") or "")
            if uid:
                return uid
        except Exception:  # noqa: BLE001 - an unreadable DICOMDIR is replaced
            pass
    text = "\n".join([fileset_id, *uids])
    return "2.25." + str(int.from_bytes(hashlib.sha256(text.encode()).digest()[:16], "big"))


def build_dicomdir(
    root: str,
    *,
    fileset_id: str = "DICOMFLOW",
    storage_options: Mapping[str, Any] | None = None,
) -> Output:
    """Write ``root/DICOMDIR`` indexing every Part 10 file in the File-set under ``root``.

    Files whose path components are all File ID components are read (headers only); a file
    that is not DICOM, or cannot be put in a directory record, is left out with a warning. The
    result depends only on the files, so rebuilding an unchanged File-set gives the same bytes.

    Raises
    ------
    CollisionError
        Two files of the File-set hold the same SOP Instance UID.
    """
    options = dict(storage_options or {})
    fs, base = _fs(root, options)
    entries = (e for e in (_read_entry(fs, base, f) for f in _file_ids(fs, base)) if e)
    roots, uids = _tree(entries)
    data = encode_dicomdir(roots, fileset_id, _fileset_uid(fs, base, fileset_id, uids))
    _replace(str(root), fs, base, data, options)
    return Output.of_bytes("mediaset", join(str(root), "DICOMDIR"), data)


def _replace(root: str, fs: Any, base: str, data: bytes, options: Mapping[str, Any]) -> None:
    """Put ``data`` at ``root/DICOMDIR`` atomically, replacing an earlier DICOMDIR.

    The bytes are first written (and synced) under a temporary name by :func:`atomic_write`,
    then renamed over the old DICOMDIR, so a reader sees the old or the new one, never a part.
    """
    path = f"{base}/DICOMDIR"
    if fs.exists(path) and fs.cat_file(path) == data:
        return
    name = f".DICOMDIR.{hashlib.sha256(data).hexdigest()[:12]}{TMP_SUFFIX}"
    atomic_write(join(str(root), name), data, storage_options=options)
    if is_url(str(root)):
        fs.mv(f"{base}/{name}", path)
    else:
        os.replace(os.path.join(base, name), path)


def write_mediaset(
    items: Iterable[Instance | Dataset | str | os.PathLike[str]],
    root: str,
    *,
    fileset_id: str = "DICOMFLOW",
    storage_options: Mapping[str, Any] | None = None,
) -> list[Output]:
    """Write instances (``Instance``, pydicom ``Dataset``, or paths/URLs of Part 10 files) as a
    media set under ``root`` and build its DICOMDIR; returns what was written, DICOMDIR last.

    Examples
    --------
    >>> import glob
    >>> outputs = write_mediaset(sorted(glob.glob("study/*.dcm")), "cd/")  # doctest: +SKIP
    >>> outputs[-1].path  # doctest: +SKIP
    'cd/DICOMDIR'
    """
    from .._version import __version__

    options = dict(storage_options or {})
    sink = MediaSet(str(root), fileset_id, options)
    context = RunContext("write_mediaset", "", __version__)
    sink.open(context)
    outputs: list[Output] = []
    for item in items:
        if isinstance(item, Instance):
            instance = item
        elif isinstance(item, Dataset):
            instance = Instance.from_dataset(copy.copy(item))
        else:
            instance = Instance(os.fspath(item), storage_options=options)
        outputs += sink.write(instance)
    outputs.append(build_dicomdir(str(root), fileset_id=fileset_id, storage_options=options))
    return outputs
