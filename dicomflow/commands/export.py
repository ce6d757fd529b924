"""``dicomflow export SRC DST --format nifti|zarr|png|dicom|dicomweb``.

Volumes (NIfTI, Zarr, PNG): one output per volume, with a geometry report. DICOM: every
instance as a Part 10 file (or a DICOMDIR media set with ``--dicomdir``) through a pipeline,
with its manifest. DICOMweb: a static DICOMweb tree (``dicomflow.network.export_dicomweb``)
that a viewer opens from a folder or a bucket with no server.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .run import EXIT_FAILED, EXIT_OK, list_failures

__all__ = ["register"]

_SUFFIX = {"nifti": ".nii.gz", "zarr": ".zarr", "png": ".png"}


def register(subparsers: Any) -> None:
    """Add the ``export`` subcommand."""
    parser = subparsers.add_parser(
        "export",
        help="write a DICOM source as NIfTI/Zarr/PNG volumes or as DICOM (folder or DICOMDIR)",
        description=(
            "Group the images of SRC into volumes (series split into stacks, sorted along the "
            "slice normal, 4-D for repeats) and write one output per volume into DST, with a "
            "geometry report per volume (DST/export-report.parquet) and per series, with the "
            "decision taken (DST/export-series.parquet). SRC is a folder, glob or URL (scanned "
            "with dicomflow.scan) or a catalog saved as .parquet."
        ),
    )
    parser.add_argument("src", metavar="SRC", help="folder, glob, fsspec URL, or catalog .parquet")
    parser.add_argument("dst", metavar="DST", help="output folder (dicomweb: or fsspec URL)")
    parser.add_argument(
        "--format", choices=[*sorted(_SUFFIX), "dicom", "dicomweb"], default="nifti"
    )
    parser.add_argument(
        "--base-url",
        default="",
        help="dicomweb: the URL DST will be served from (written into OHIF's manifest ohif.json)",
    )
    parser.add_argument(
        "--dicomdir", action="store_true", help="DICOM: write a PS3.10 media set with a DICOMDIR"
    )
    parser.add_argument(
        "--template",
        default=None,
        help="DICOM folder: path template of {Keyword} fields (default "
        "{PatientID}/{StudyInstanceUID}/{SeriesInstanceUID}/{SOPInstanceUID}.dcm)",
    )
    parser.add_argument(
        "--name",
        default=None,
        metavar="TEMPLATE",
        help="NIfTI/Zarr/PNG: output name template of {Keyword} fields, e.g. "
        '"{PatientID}_{SeriesNumber}_{ProtocolName}" (values made safe for file names; a '
        "repeated name gets a, b... as dcm2niix does; default NNN_sSSS_description)",
    )
    parser.add_argument("--dry-run", action="store_true", help="DICOM: show the plan only")
    parser.add_argument(
        "--uncompressed", action="store_true", help="NIfTI: write .nii instead of .nii.gz"
    )
    parser.add_argument(
        "--resample",
        action="store_true",
        help="resample tilted or irregularly spaced stacks onto a regular grid",
    )
    parser.add_argument(
        "--reorient",
        choices=["auto", "yes", "no"],
        default="auto",
        help="NIfTI: store closest to RAS (auto: 3-D MR acquisitions, as dcm2niix)",
    )
    parser.add_argument("--window", help="PNG window: a preset (brain, lung, bone...) or C,W")
    parser.add_argument(
        "--storage-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="fsspec storage option for reading SRC (repeatable)",
    )
    parser.add_argument("--workers", type=int, default=None, help="decoding threads")
    parser.set_defaults(func=run)


def _storage_options(pairs: list[str]) -> dict[str, Any]:
    from ..errors import ConfigError

    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ConfigError(f"--storage-option {pair!r}: expected KEY=VALUE")
        lowered = value.lower()
        options[key] = {"true": True, "false": False}.get(lowered, value)
    return options


def _catalog(src: str, storage_options: dict[str, Any]):
    from ..errors import ConfigError

    if src.endswith(".parquet"):
        import pyarrow.parquet as pq

        return pq.read_table(src)
    try:
        from ..catalog import scan
    except ImportError as exc:
        raise ConfigError(
            "scanning SRC needs dicomflow.scan; pass a catalog .parquet instead"
        ) from exc
    from ..dicom import DEFAULT_COLUMNS

    # Images in Acquisition: the slices the series declares, for the report per series
    columns = [*DEFAULT_COLUMNS, "ImagesInAcquisition"]
    return scan(src, columns=columns, storage_options=storage_options or None)


def _name(index: int, volume) -> str:
    info = volume.info
    number = info.get("SeriesNumber")
    number = "" if number is None else f"_s{int(float(number)):03d}"
    desc = str(info.get("SeriesDescription") or info.get("Modality") or "volume")
    desc = re.sub(r"[^A-Za-z0-9]+", "-", desc).strip("-")[:48] or "volume"
    return f"{index:03d}{number}_{desc}"


def _names(vols: Any, template: str | None) -> list[str]:
    """Every volume's output name: ``--name``'s template, or the default numbered one."""
    if template is None:
        return [_name(i, v) for i, v in enumerate(vols)]
    from ..pixels import name_from_template, template_fields, unique_names

    return unique_names([name_from_template(template, template_fields(v)) for v in vols])


def _window(text: str | None):
    if text is None:
        return None
    if "," in text:
        center, width = text.split(",", 1)
        return float(center), float(width)
    return text


def run(args: argparse.Namespace) -> int:
    """Export every volume of ``args.src``; 0 when every image was written, 1 otherwise."""
    import pyarrow as pa

    from ..dicom import NOT_DICOM
    from ..pixels import LOCALIZER_DROPPED, NO_PIXEL_DATA, volumes

    started = time.perf_counter()
    storage_options = _storage_options(args.storage_option)
    if args.format == "dicomweb":
        return _export_dicomweb(args, storage_options)
    catalog = _catalog(args.src, storage_options)
    if args.format == "dicom":
        return _export_dicom(catalog, args, storage_options)
    if not isinstance(catalog, pa.Table):  # scanned once, for the volumes and the label maps
        catalog = catalog.to_arrow()
    vols = volumes(catalog, storage_options=storage_options or None, resample=args.resample)
    dst = Path(args.dst)
    dst.mkdir(parents=True, exist_ok=True)
    total = len(vols)
    print(f"{total} volume(s) from {args.src}", file=sys.stderr)
    outputs: list[str | None] = []
    statuses: list[str] = []
    errors: list[str | None] = []
    suffix = ".nii" if args.format == "nifti" and args.uncompressed else _SUFFIX[args.format]
    compute = {"num_workers": args.workers} if args.workers else {}
    names = _names(vols, args.name)
    for i, volume in enumerate(vols):
        target = dst / (names[i] + suffix)
        try:
            if args.format == "nifti":
                reorient = {"auto": "auto", "yes": True, "no": False}[args.reorient]
                volume.to_nifti(target, reorient=reorient, **compute)
            elif args.format == "zarr":
                volume.to_zarr(target)
            else:
                volume.to_png(target, window=_window(args.window))
        except Exception as exc:  # one failed volume is a row in the report, not the end
            outputs.append(None)
            statuses.append("failed")
            errors.append(f"{type(exc).__name__}: {exc}")
            print(f"[{i + 1}/{total}] FAILED {target.name}: {exc}", file=sys.stderr)
            continue
        outputs.append(str(target))
        statuses.append("written")
        errors.append(None)
        shape = "x".join(str(n) for n in volume.shape)
        print(f"[{i + 1}/{total}] {target.name} {shape}", file=sys.stderr)
        for warning in volume.warnings:
            print(f"    warning: {warning}", file=sys.stderr)
    if args.format in ("nifti", "zarr"):
        failed_labels = _label_maps(catalog, vols, dst, suffix, outputs, storage_options)
    else:
        failed_labels = 0
    report = vols.report
    report = report.append_column("output", pa.array(outputs, pa.string()))
    report = report.append_column("status", pa.array(statuses, pa.string()))
    report = report.append_column("export_error", pa.array(errors, pa.string()))
    _write_table(report, dst / "export-report.parquet")
    _write_table(vols.series_report, dst / "export-series.parquet")
    failed = statuses.count("failed")
    warned = sum(1 for v in vols if v.warnings)
    elapsed = time.perf_counter() - started
    # a row without pixel data (an SR, a presentation state) or a file that is no DICOM at all
    # is not an image to export; any other skipped row is an image that could not be read or
    # placed: a failure
    unread = [
        why if why.startswith(uri) else f"{uri}: {why}"
        for uri, why in vols.skipped
        if why not in (NO_PIXEL_DATA, LOCALIZER_DROPPED) and NOT_DICOM not in why
    ]
    print(
        f"{total - failed} written, {failed} failed, {warned} with geometry warnings, "
        f"{len(unread)} image row(s) not readable, "
        f"{len(vols.skipped) - len(unread)} catalog row(s) without an image, localizers dropped "
        "or not DICOM; "
        f"{elapsed:.1f} s; "
        f"report: {dst / 'export-report.parquet'}",
        file=sys.stderr,
    )
    decided = Counter(d.split(":")[0] for d in vols.series_report.column("decision").to_pylist())
    shown = ", ".join(f"{n} {d}" for d, n in sorted(decided.items()))
    print(f"series: {shown}; {dst / 'export-series.parquet'}", file=sys.stderr)
    if vols.skipped:
        uris, reasons = zip(*vols.skipped)
        _write_table(pa.table({"uri": uris, "reason": reasons}), dst / "export-skipped.parquet")
    list_failures(unread, str(dst / "export-skipped.parquet"))
    return EXIT_FAILED if failed or unread or failed_labels else EXIT_OK


def _label_maps(
    catalog: Any,
    vols: Any,
    dst: Path,
    suffix: str,
    outputs: list[str | None],
    storage_options: dict[str, Any],
) -> int:
    """Label maps of every SEG and RTSTRUCT beside the volume of the series they reference.

    Each is ``<volume name>_<seg|rtstruct>-<n><suffix>`` on that volume's NIfTI grid, with a
    ``.tsv`` lookup table (number, name) beside it, reoriented where the series' NIfTI was;
    with Zarr, the OME-Zarr label image ``labels/<seg|rtstruct>-<n>`` inside the series'
    group, its lookup table in the NGFF ``image-label`` metadata. Returns how many could not
    be written.
    """
    import fsspec
    import nibabel as nib
    import numpy as np
    import pydicom

    from ..derived import read_rtstruct, read_seg

    table = catalog
    if "Modality" not in table.column_names:
        return 0
    rows = [
        (uri, modality)
        for uri, modality in zip(
            table.column("uri").to_pylist(), table.column("Modality").to_pylist()
        )
        if modality in ("SEG", "RTSTRUCT")
    ]
    by_series: dict[Any, tuple[int, Any]] = {}
    for i, volume in enumerate(vols):
        if not volume.is_4d and outputs[i] is not None:
            by_series.setdefault(volume.info.get("SeriesInstanceUID"), (i, volume))
    failed, count = 0, 0
    for uri, modality in rows:
        try:
            with fsspec.open(uri, "rb", **storage_options) as f:  # SRC may be a URL
                ds = pydicom.dcmread(f, force=True)
            targets = _referenced_series(ds)
            placed = [by_series[uid] for uid in targets if uid in by_series]
            if not placed:
                print(f"    {uri}: the series it references is not in SRC", file=sys.stderr)
                continue
            for i, volume in placed:
                got = read_seg(ds, volume) if modality == "SEG" else read_rtstruct(ds, volume)
                count += 1
                if suffix == ".zarr":
                    where = got.to_zarr(outputs[i], f"{modality.lower()}-{count}")
                    print(f"    labels: {where} ({modality} {uri})", file=sys.stderr)
                    continue
                volume_name = Path(str(outputs[i])).name[: -len(suffix)]  # as --name made it
                stem = f"{volume_name}_{modality.lower()}-{count}"
                written: Any = nib.load(str(outputs[i]))
                turned = not np.allclose(written.affine, volume.nifti_affine, atol=1e-4)
                got.to_nifti(dst / (stem + suffix), reorient=turned)
                key = "SegmentNumber" if modality == "SEG" else "ROINumber"
                label = "SegmentLabel" if modality == "SEG" else "ROIName"
                lines = ["number\tname"] + [
                    f"{r[key]}\t{r[label] or ''}" for r in got.segments.to_pylist()
                ]
                (dst / (stem + ".tsv")).write_text("\n".join(lines) + "\n")
                print(f"    labels: {stem + suffix} ({modality} {uri})", file=sys.stderr)
        except Exception as exc:  # one unreadable SEG or RTSTRUCT is a line, not the end
            failed += 1
            print(f"    FAILED labels of {uri}: {type(exc).__name__}: {exc}", file=sys.stderr)
    return failed


def _referenced_series(ds: Any) -> list[str]:
    out = [str(item.SeriesInstanceUID) for item in ds.get("ReferencedSeriesSequence", [])]
    for frame in ds.get("ReferencedFrameOfReferenceSequence", []):
        for study in frame.get("RTReferencedStudySequence", []):
            for series in study.get("RTReferencedSeriesSequence", []):
                out.append(str(series.SeriesInstanceUID))
    return list(dict.fromkeys(out))


def _export_dicomweb(args: argparse.Namespace, storage_options: dict[str, Any]) -> int:
    """A static DICOMweb tree of SRC (a catalog, a folder with one, or a lake) in DST."""
    from ..network import export_dicomweb, load_index

    src = args.src
    if not os.path.exists(src):
        raise ConfigError(f"--format dicomweb: SRC {src!r} must be a catalog, a folder or a lake")
    counts = export_dicomweb(load_index(src), args.dst, base_url=args.base_url,
                             storage_options=storage_options or None)  # fmt: skip
    print(", ".join(f"{v:,} {k}" for k, v in counts.items()) + f" -> {args.dst}", file=sys.stderr)
    return EXIT_FAILED if counts["frames_refused"] else EXIT_OK


def _write_table(table: Any, path: Path) -> None:
    import pyarrow.parquet as pq

    from ..dicom import atomic_path

    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def _export_dicom(catalog: Any, args: argparse.Namespace, storage_options: dict[str, Any]) -> int:
    """Every instance of the catalog into a Part 10 folder or a media set, via a pipeline."""
    from ..pipeline import pipeline
    from ..writers import DEFAULT_TEMPLATE, MediaSet, Part10Folder
    from .run import execute

    if args.dicomdir:
        sink: Any = MediaSet(args.dst)
    else:
        sink = Part10Folder(args.dst, template=args.template or DEFAULT_TEMPLATE)
    run_args = argparse.Namespace(
        workers=args.workers, batch_size=32, manifest=None, no_resume=False,
        dry_run=args.dry_run, quiet=False,
    )  # fmt: skip
    return execute(pipeline(catalog, storage_options=storage_options).write(sink), run_args)
