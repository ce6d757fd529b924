"""Static DICOMweb: the files a viewer fetches, written once to a folder or a bucket.

:func:`export_dicomweb` writes, for every study of a catalog, the answers ``dicomflow serve``
would give, as plain files a static web host (or object storage) can serve with no server::

    DST/studies/index.json                                        the study list (QIDO-RS)
    DST/studies/{study}/series/index.json                         its series
    DST/studies/{study}/series/{series}/instances/index.json      its instances
    DST/studies/{study}/series/{series}/metadata                  DICOM JSON of every header
    DST/studies/{study}/series/{series}/instances/{sop}/metadata  one header
    DST/studies/{study}/series/{series}/instances/{sop}/frames/{n}  one frame, as stored
    DST/studies/{study}/series/{series}/instances/{sop}/instance.dcm  the Part 10 file
    DST/ohif.json                                                 OHIF's DICOM JSON data source

Frames are the stored bytes (:func:`stored_frame`, never re-encoded), one file each without a
multipart wrapper. ``ohif.json`` is the manifest OHIF's ``dicomjson`` data source opens
(``?url=.../ohif.json``): studies, series and instances with their metadata, each instance
pointing at its ``instance.dcm`` (``dicomweb:`` + ``base_url`` + the path).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import fsspec

from ..dicom import atomic_write, transfer_syntax
from ..errors import ConfigError, PixelDataError
from ..pixels import FrameRef, read_range, row_refs, unwrap_fragments
from ._webindex import INSTANCE, SERIES, STUDY, CatalogIndex, Query

__all__ = ["export_dicomweb", "header_json", "stored_frame"]


def stored_frame(ref: FrameRef) -> bytes:
    """One frame as stored: a native frame's byte range, an encapsulated frame's fragments."""
    if ref.whole_file or ref.bit_offset or ref.swap_ow:
        raise PixelDataError(
            f"frame {ref.index + 1} is not a byte range of the file (deflated, bit-packed or "
            "byte-swapped): it cannot be served without re-encoding"
        )
    data = read_range(ref.uri, ref.start, ref.stop)
    if ref.fmt.is_encapsulated:
        return unwrap_fragments(data, ref.uri, ref.index)
    if len(data) < ref.stop - ref.start:
        raise PixelDataError(f"frame {ref.index + 1}: the file ends inside it")
    return data.tobytes() if hasattr(data, "tobytes") else bytes(data)


def header_json(row: dict[str, Any], base: str) -> dict[str, Any]:
    from pydicom import dcmread

    uids = (row["StudyInstanceUID"], row["SeriesInstanceUID"], row["SOPInstanceUID"])
    url = f"{base}/studies/{uids[0]}/series/{uids[1]}/instances/{uids[2]}"
    ds = dcmread(row["uri"], stop_before_pixels=True, force=True)

    def bulk(element: Any) -> str:
        return f"{url}/bulkdata/{element.tag:08X}"

    doc: dict[str, Any] = ds.to_json_dict(bulk_data_threshold=1024, bulk_data_element_handler=bulk)
    syntax = getattr(ds, "file_meta", None) and ds.file_meta.get("TransferSyntaxUID")
    if syntax:
        doc["00020010"] = {"vr": "UI", "Value": [str(syntax)]}
    if row.get("pixel_offset") is not None:
        vr = "OB" if _encapsulated(row.get("transfer_syntax_uid") or syntax) else "OW"
        doc["7FE00010"] = {"vr": vr, "BulkDataURI": f"{url}/bulkdata/7FE00010"}
    return dict(sorted(doc.items()))


def _encapsulated(syntax: object) -> bool:
    """Whether Pixel Data under ``syntax`` is encapsulated (then its VR is OB, PS3.5 A.4),
    from the transfer-syntax table; a syntax the table does not know is taken as encapsulated
    (private syntaxes compress), no syntax at all as native."""
    if not syntax:
        return False
    try:
        return transfer_syntax(str(syntax)).is_encapsulated
    except ConfigError:
        return True


def _join(root: str, *parts: str) -> str:
    return "/".join([root.rstrip("/"), *parts])


def _dump(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _natural(doc: Mapping[str, Any]) -> dict[str, Any]:
    """DICOM JSON to OHIF's naturalized form (keyword: value; one value unwrapped)."""
    from pydicom.datadict import keyword_for_tag

    out: dict[str, Any] = {}
    for tag, element in doc.items():
        keyword = keyword_for_tag(int(tag, 16))
        values = element.get("Value")
        if not keyword or values is None:
            continue
        if element.get("vr") == "SQ":
            values = [_natural(item) for item in values]
        elif element.get("vr") == "PN":
            values = [v.get("Alphabetic", "") if isinstance(v, dict) else v for v in values]
        out[keyword] = values[0] if len(values) == 1 and element.get("vr") != "SQ" else values
    return out


def export_dicomweb(
    index: CatalogIndex,
    dst: str,
    *,
    base_url: str = "",
    storage_options: Mapping[str, Any] | None = None,
) -> dict[str, int]:
    """Write the static DICOMweb tree of ``index`` under ``dst`` (a folder or an fsspec URL).

    Returns counts: studies, series, instances, frames and files written. Instances whose
    frames are not byte ranges of their file (see :func:`stored_frame`) get no frame files;
    they are counted as ``frames_refused``.
    """
    options = dict(storage_options or {})
    counts = {"studies": 0, "series": 0, "instances": 0, "frames": 0, "frames_refused": 0,
              "files": 0}  # fmt: skip

    def put(path: str, data: bytes) -> None:
        atomic_write(_join(dst, path), data, storage_options=options, fsync=False)
        counts["files"] += 1

    everything = Query({}, include_all=True)
    studies = index.search(STUDY, everything)
    put("studies/index.json", _dump(studies))
    manifest: list[dict[str, Any]] = []
    prefix = base_url.rstrip("/") + "/" if base_url else ""
    for study_doc in studies:
        study = study_doc["0020000D"]["Value"][0]
        counts["studies"] += 1
        series_docs = index.search(SERIES, everything, study=study)
        put(f"studies/{study}/series/index.json", _dump(series_docs))
        ohif_series = []
        for series_doc in series_docs:
            series = series_doc["0020000E"]["Value"][0]
            counts["series"] += 1
            base = f"studies/{study}/series/{series}"
            put(f"{base}/instances/index.json",
                _dump(index.search(INSTANCE, everything, study=study, series=series)))  # fmt: skip
            metas = []
            ohif_instances = []
            for row in index.series_rows(study, series).iter_rows(named=True):
                sop = row["SOPInstanceUID"]
                here = f"{base}/instances/{sop}"
                counts["instances"] += 1
                meta = header_json(row, prefix.rstrip("/"))
                metas.append(meta)
                put(f"{here}/metadata", _dump([meta]))
                with fsspec.open(row["uri"], "rb") as f:
                    put(f"{here}/instance.dcm", f.read())
                if row.get("pixel_offset") is not None:
                    try:
                        refs = row_refs({**row, "sop_instance_uid": sop})
                        frames = [stored_frame(ref) for ref in refs]
                    except PixelDataError:
                        counts["frames_refused"] += 1
                        frames = []
                    for n, data in enumerate(frames, start=1):
                        put(f"{here}/frames/{n}", data)
                        counts["frames"] += 1
                ohif_instances.append(
                    {"metadata": _natural(meta), "url": f"dicomweb:{prefix}{here}/instance.dcm"}
                )
            put(f"{base}/metadata", _dump(metas))
            ohif_series.append({**_natural(series_doc), "instances": ohif_instances})
        study_entry = _natural(study_doc)
        study_entry["NumInstances"] = study_entry.get("NumberOfStudyRelatedInstances", 0)
        study_entry["Modalities"] = "\\".join(study_doc.get("00080061", {}).get("Value", []))
        manifest.append({**study_entry, "series": ohif_series})
    put("ohif.json", _dump({"studies": manifest}))
    return counts
