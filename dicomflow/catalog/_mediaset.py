"""``read_mediaset``: a DICOMDIR (a PS3.10 File-set) as a catalog, one row per referenced file.

The DICOMDIR's directory records (PS3.3 Annex F) form a tree: PATIENT > STUDY > SERIES > leaf
records (IMAGE, SR DOCUMENT, RT DOSE, ...) that reference files by File ID. Every record that
references a file becomes a row: the referenced file is scanned with :func:`dicomflow.scan`, so
the row has the catalog's columns and types, and the keys of the record and of its ancestors are
added as ``dir_*`` columns (:data:`DIR_KEYS`), with ``dir_record_type`` and
``dir_referenced_file`` (the File ID, ``/``-separated). A referenced file that is not there is a
row with ``error`` set; nothing is dropped.

The tree is followed by its offsets where they lead somewhere; records the root does not reach
(broken or missing offsets) are still read, their parents taken from the lower-level offsets
that point at them, or, when a DICOMDIR has no usable offsets at all, from the record order.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa
from pydicom import dcmread
from pydicom.datadict import dictionary_VM, dictionary_VR, tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from ..dicom import (
    ColumnSpec,
    catalog_schema,
    is_url,
    parse_da,
    parse_ds,
    parse_is,
    parse_tm,
    resolve_columns,
)
from ..errors import InvalidDicomError, SourceError, SourceNotFoundError

__all__ = ["DIR_KEYS", "read_mediaset"]

#: Directory record keys added as ``dir_<keyword>`` columns, each from the nearest record
#: (the leaf, then its SERIES, STUDY and PATIENT) that holds it.
DIR_KEYS: tuple[str, ...] = (
    "PatientID",
    "PatientName",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "StudyDescription",
    "StudyID",
    "AccessionNumber",
    "SeriesInstanceUID",
    "Modality",
    "SeriesNumber",
    "InstanceNumber",
    "ReferencedSOPClassUIDInFile",
    "ReferencedSOPInstanceUIDInFile",
    "ReferencedTransferSyntaxUIDInFile",
)
_SEQUENCE = 0x00041220
_FIRST = "OffsetOfTheFirstDirectoryRecordOfTheRootDirectoryEntity"
_LAST = "OffsetOfTheLastDirectoryRecordOfTheRootDirectoryEntity"
_NEXT, _LOWER = "OffsetOfTheNextDirectoryRecord", "OffsetOfReferencedLowerLevelDirectoryEntity"
# how deep a record type sits, for DICOMDIRs without usable offsets (others: 3, leaves)
_LEVELS = {"PATIENT": 0, "STUDY": 1, "SERIES": 2, "HL7 STRUC DOC": 1}
_ROOT_LEVEL = {"PALETTE", "HANGING PROTOCOL", "IMPLANT", "IMPLANT ASSY", "IMPLANT GROUP"}
_CONTAINERS = frozenset({"PATIENT", "STUDY", "SERIES", "TOPIC", "VISIT", "PRIVATE"})
_PARSERS = {"DA": parse_da, "TM": parse_tm, "IS": parse_is, "DS": parse_ds}


def _dir_fields() -> list[pa.Field]:
    fields = [
        pa.field("dir_record_type", pa.string()),
        pa.field("dir_referenced_file", pa.string()),
    ]
    for keyword in DIR_KEYS:
        tag = int(tag_for_keyword(keyword) or 0)
        vr, vm = dictionary_VR(tag), dictionary_VM(tag)
        spec = ColumnSpec(f"dir_{keyword}", tag, vr, vm != "1")
        fields.append(pa.field(spec.name, spec.arrow_type))
    return fields


def _locate(path_or_url: str, options: Mapping[str, Any]) -> tuple[Any, str, str, str]:
    """The filesystem, the DICOMDIR's path in it, its folder, and the URL suffix of a chain."""
    import fsspec

    text = os.fspath(path_or_url)
    chain = "::" + text.partition("::")[2] if "::" in text else ""
    try:
        fs, path = fsspec.core.url_to_fs(text, **dict(options))
        if fs.isdir(path):
            path = path.rstrip("/") + "/DICOMDIR"
        if not fs.exists(path):
            raise SourceNotFoundError(f"no DICOMDIR at {text!r}")
    except SourceError:
        raise
    except (OSError, ValueError, ImportError) as exc:
        raise SourceError(f"cannot reach {text!r}: {exc}") from exc
    return fs, path, path.rsplit("/", 1)[0] if "/" in path else "", chain


def _parse(data: bytes, name: str) -> Dataset:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = dcmread(io.BytesIO(data), force=True)
            raw = ds.get_item(_SEQUENCE)
            records = ds.get("DirectoryRecordSequence") if raw is not None else None
    except Exception as exc:  # noqa: BLE001 - any parser failure is the same answer
        raise InvalidDicomError(f"{name}: not a readable DICOMDIR ({exc})") from exc
    if raw is None or records is None:
        raise InvalidDicomError(
            f"{name} is not a DICOMDIR: it has no Directory Record Sequence (0004,1220)"
        )
    if isinstance(raw, RawDataElement) and raw.length != 0xFFFFFFFF:
        if raw.value is not None and len(raw.value) < raw.length:
            raise InvalidDicomError(
                f"{name}: DICOMDIR truncated: its Directory Record Sequence declares "
                f"{raw.length} bytes, the file holds {len(raw.value)}"
            )
    return ds


def _chain(start: int, at: dict[int, int], records: Sequence[Dataset]) -> list[int]:
    """Indexes of the records linked by Next offsets from the one at offset ``start``."""
    out: list[int] = []
    seen: set[int] = set()
    index = at.get(start) if start else None
    while index is not None and index not in seen:
        seen.add(index)
        out.append(index)
        following = int(records[index].get(_NEXT, 0) or 0)
        index = at.get(following) if following else None
    return out


def _structure(ds: Dataset, size: int, name: str) -> tuple[list[int], dict[int, int]]:
    """Records in tree order, and each record's parent, from offsets or from record order."""
    records = list(ds.DirectoryRecordSequence)
    at: dict[int, int] = {}
    for i, record in enumerate(records):
        tell = getattr(record, "seq_item_tell", None)
        if tell is not None:
            at[int(tell)] = i
    for owner, keyword in [(ds, _FIRST), (ds, _LAST)] + [
        (r, k) for r in records for k in (_NEXT, _LOWER)
    ]:
        value = int(owner.get(keyword, 0) or 0)
        if value >= size:
            raise InvalidDicomError(
                f"{name}: DICOMDIR truncated or corrupt: {keyword} points to byte {value}, "
                f"the file has {size}"
            )
    parent: dict[int, int] = {}
    children: dict[int, list[int]] = {}
    for i, record in enumerate(records):
        kids = [k for k in _chain(int(record.get(_LOWER, 0) or 0), at, records) if k != i]
        children[i] = kids
        for kid in kids:
            parent.setdefault(kid, i)
    roots = _chain(int(ds.get(_FIRST, 0) or 0), at, records)
    if not roots and not parent:
        return _by_record_order(records)
    order: list[int] = []
    visited: set[int] = set()

    def visit(index: int) -> None:
        stack = [index]
        while stack:
            i = stack.pop()
            if i in visited:
                continue
            visited.add(i)
            order.append(i)
            stack.extend(reversed(children.get(i, [])))

    for i in roots:
        visit(i)
    for i in range(len(records)):  # records the root chain does not reach
        if i not in parent:
            visit(i)
    for i in range(len(records)):  # cycles
        visit(i)
    return order, parent


def _by_record_order(records: Sequence[Dataset]) -> tuple[list[int], dict[int, int]]:
    """Parents when a DICOMDIR has no offsets: the last record of a higher level before it."""
    parent: dict[int, int] = {}
    open_levels: list[tuple[int, int]] = []  # (level, index), increasing levels
    for i, record in enumerate(records):
        kind = str(record.get("DirectoryRecordType", "")).strip()
        level = 0 if kind in _ROOT_LEVEL else _LEVELS.get(kind, 3)
        while open_levels and open_levels[-1][0] >= level:
            open_levels.pop()
        if open_levels and kind not in _ROOT_LEVEL:
            parent[i] = open_levels[-1][1]
        open_levels.append((level, i))
    return list(range(len(records))), parent


def _value(elem: Any) -> Any:
    if elem is None or elem.value is None or elem.value == "":
        return None
    parse = _PARSERS.get(elem.VR)
    text = str(elem.value).strip()
    return parse(text) if parse else text


def _file_id(record: Dataset) -> tuple[list[str] | None, str | None]:
    """The Referenced File ID's components, or an error when it could escape the File-set."""
    if "ReferencedFileID" not in record:
        return None, None
    value = record.ReferencedFileID
    parts = [str(p).strip() for p in (value if isinstance(value, MultiValue) else [value])]
    bad = [p for p in parts if p in ("", ".", "..") or any(c in p for c in "/\\:")]
    if not parts or bad:
        return None, f"invalid Referenced File ID {value!r}"
    return parts, None


def read_mediaset(
    path_or_url: str | os.PathLike[str],
    *,
    storage_options: Mapping[str, Any] | None = None,
    columns: str | Sequence[str] | None = "default",
    workers: int | None = None,
) -> pa.Table:
    """Read a DICOMDIR as a catalog: one row per referenced file, with directory keys.

    Parameters
    ----------
    path_or_url
        The DICOMDIR, or the folder holding it: a local path or an fsspec URL.
    storage_options
        Passed to fsspec for URLs.
    columns
        Attribute columns of the referenced files, as for :func:`dicomflow.scan`.
    workers
        As for :func:`dicomflow.scan`.

    Returns
    -------
    pyarrow.Table
        The catalog's columns, then ``dir_record_type``, ``dir_referenced_file`` and
        ``dir_<keyword>`` for :data:`DIR_KEYS`. A missing referenced file is a row with
        ``error`` = ``"referenced file missing: <uri>"``.

    Raises
    ------
    SourceNotFoundError
        There is no DICOMDIR there.
    InvalidDicomError
        The file is not a DICOMDIR, or it is truncated.

    Examples
    --------
    >>> cat = dfl.read_mediaset("/media/cdrom/DICOMDIR")  # doctest: +SKIP
    >>> cat.select(["dir_PatientID", "dir_record_type", "sop_instance_uid"])  # doctest: +SKIP
    """
    from ._catalog import scan

    options = dict(storage_options or {})
    fs, path, folder, chain = _locate(os.fspath(path_or_url), options)
    name = os.fspath(path_or_url)
    try:
        data = fs.cat_file(path)
    except OSError as exc:
        raise SourceError(f"cannot read {name!r}: {exc}") from exc
    ds = _parse(data, name)
    order, parent = _structure(ds, len(data), name)
    records = list(ds.DirectoryRecordSequence)

    present = {p.rstrip("/"): p for p in fs.find(folder, detail=False)} if folder else {}
    by_case = {p.lower(): p for p in present}

    def uri_of(fs_path: str) -> str:
        if is_url(name):
            return fs.unstrip_protocol(fs_path) + chain
        return fs_path

    parents = set(parent.values())
    rows: list[tuple[int, str | None, str | None, str | None]] = []  # record, uri, file id, error
    for i in order:
        record = records[i]
        parts, error = _file_id(record)
        kind = str(record.get("DirectoryRecordType", "")).strip()
        if parts is None and error is None:
            if kind in _CONTAINERS or i in parents:
                continue
            rows.append((i, None, None, "directory record references no file"))
            continue
        if parts is None:
            rows.append((i, None, None, error))
            continue
        wanted = "/".join([folder, *parts]) if folder else "/".join(parts)
        found = present.get(wanted) or by_case.get(wanted.lower())
        file_id = "/".join(parts)
        if found is None:
            rows.append((i, uri_of(wanted), file_id, f"referenced file missing: {uri_of(wanted)}"))
        else:
            rows.append((i, uri_of(found), file_id, None))

    uris = sorted({uri for _, uri, _, err in rows if uri is not None and err is None})
    specs = resolve_columns(columns)
    if uris:
        scanned = scan(uris, columns=columns, storage_options=options, workers=workers).to_arrow()
    else:
        scanned = catalog_schema(specs or ()).empty_table()
    position = {u: n for n, u in enumerate(scanned.column("uri").to_pylist())}
    take = [position.get(uri) if err is None else None for _, uri, _, err in rows]
    if scanned.num_rows:
        table = scanned.take(pa.array(take, type=pa.int64()))
    else:
        table = pa.table(
            [pa.nulls(len(rows), f.type) for f in scanned.schema], schema=scanned.schema
        )
    errors = [
        err if err is not None else table.column("error")[n].as_py()
        for n, (_, _, _, err) in enumerate(rows)
    ]
    table = table.set_column(
        table.schema.get_field_index("uri"), "uri", pa.array([r[1] for r in rows], pa.string())
    )
    table = table.set_column(
        table.schema.get_field_index("error"), "error", pa.array(errors, pa.string())
    )
    for field, values in zip(_dir_fields(), _dir_values(rows, records, parent), strict=True):
        table = table.append_column(field, pa.array(values, type=field.type))
    meta = {
        b"dicomflow:dicomdir": uri_of(path).encode(),
        b"dicomflow:fileset_id": str(ds.get("FileSetID", "") or "").encode(),
    }
    return table.replace_schema_metadata({**(table.schema.metadata or {}), **meta})


def _dir_values(
    rows: Sequence[tuple[int, str | None, str | None, str | None]],
    records: Sequence[Dataset],
    parent: Mapping[int, int],
) -> list[list[Any]]:
    """Column values of the ``dir_*`` columns, one list per column."""
    kinds, files = [], []
    keys: list[list[Any]] = [[] for _ in DIR_KEYS]
    tags = [int(tag_for_keyword(k) or 0) for k in DIR_KEYS]
    for index, _, file_id, _ in rows:
        kinds.append(str(records[index].get("DirectoryRecordType", "")).strip() or None)
        files.append(file_id)
        lineage: list[Dataset] = []
        seen: set[int] = set()
        i: int | None = index
        while i is not None and i not in seen:
            seen.add(i)
            lineage.append(records[i])
            i = parent.get(i)
        for column, tag in zip(keys, tags, strict=True):
            elem = next(
                (r[tag] for r in lineage if tag in r and r[tag].value not in (None, "")), None
            )
            column.append(_value(elem))
    return [kinds, files, *keys]
