"""``dicomflow measurements SRC`` and ``dicomflow seg LABELS --series SRC``: derived objects.

``measurements`` scans SRC for SR instances and writes the TID 1500 measurements of all of them
as one Parquet table (qualitative evaluations beside it with ``--evaluations``); an SR that is
not a measurement report gives no row, one that cannot be read is listed with its reason.
``seg`` writes a DICOM SEG of a label map (NIfTI on the grid ``dicomflow export`` writes the
series on) referencing the series in SRC.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..errors import ConfigError, DicomflowError
from .run import EXIT_FAILED, EXIT_OK

__all__ = ["register"]


def register(sub: Any) -> None:
    p = sub.add_parser(
        "measurements",
        help="TID 1500 measurement reports in SRC to one Parquet table",
        description=(
            "Scan SRC for SR instances and write their TID 1500 measurements (tracking "
            "identifier and UID, finding, finding site, concept, value, UCUM unit, referenced "
            "instance/segment/frames, derivation, observer) as one table."
        ),
    )
    p.add_argument("source", metavar="SRC", help="folder, file or URL to scan")
    p.add_argument("-o", "--output", required=True, help="Parquet file of measurements")
    p.add_argument("--evaluations", help="Parquet file of the qualitative evaluations")
    _storage_option(p, "SRC")
    p.set_defaults(func=run_measurements)

    s = sub.add_parser(
        "seg",
        help="write a DICOM SEG of a NIfTI label map referencing the series in SRC",
        description=(
            "Write a BINARY (or --fractional) DICOM SEG of LABELS, a NIfTI label map on the grid "
            "'dicomflow export --format nifti' writes the series on; each label value becomes a "
            "segment (numbered 1..n in increasing label order)."
        ),
    )
    s.add_argument("labels", metavar="LABELS", help="NIfTI label map (.nii or .nii.gz)")
    s.add_argument("--series", required=True, metavar="SRC", help="the source series to reference")
    s.add_argument("-o", "--output", required=True, help="SEG file to write")
    s.add_argument("--label", action="append", default=[], metavar="N=NAME", help="segment name")
    s.add_argument("--algorithm", help="algorithm name (segments become AUTOMATIC)")
    s.add_argument("--fractional", action="store_true", help="write a FRACTIONAL SEG")
    _storage_option(s, "the series")
    s.set_defaults(func=run_seg)


def _storage_option(parser: Any, what: str) -> None:
    parser.add_argument(
        "--storage-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"fsspec storage option for reading {what} (repeatable)",
    )


def run_measurements(args: argparse.Namespace) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ..catalog import scan
    from ..derived import EVALUATION_SCHEMA, MEASUREMENT_SCHEMA, read_measurements
    from ..pixels import read_header
    from .export import _storage_options

    options = _storage_options(args.storage_option) or None
    catalog = scan(args.source, storage_options=options).to_arrow()
    uris = [
        u
        for u, m, err in zip(
            catalog.column("uri").to_pylist(),
            catalog.column("Modality").to_pylist(),
            catalog.column("error").to_pylist(),
        )
        if m == "SR" and not err
    ]
    meas, evals, failed = [], [], 0
    for uri in uris:
        try:
            m, e = read_measurements(read_header(uri, options))
        except (DicomflowError, OSError, ValueError, KeyError, AttributeError) as exc:
            print(f"{uri}: {exc}", file=sys.stderr)
            failed += 1
            continue
        meas.append(m)
        evals.append(e)
    table = pa.concat_tables(meas) if meas else MEASUREMENT_SCHEMA.empty_table()
    pq.write_table(table, args.output)
    if args.evaluations:
        etable = pa.concat_tables(evals) if evals else EVALUATION_SCHEMA.empty_table()
        pq.write_table(etable, args.evaluations)
    print(f"{table.num_rows} measurement(s) from {len(uris)} SR instance(s) -> {args.output}")
    return EXIT_FAILED if failed else EXIT_OK


def run_seg(args: argparse.Namespace) -> int:
    from ..catalog import scan
    from ..derived import write_seg
    from ..pixels import volumes
    from .export import _storage_options

    names = {}
    for item in args.label:
        number, sep, name = item.partition("=")
        if not sep or not number.strip().isdigit():
            raise ConfigError(f"--label takes N=NAME, not {item!r}")
        names[int(number)] = name
    options = _storage_options(args.storage_option) or None
    found = volumes(scan(args.series, storage_options=options), storage_options=options)
    vols = [v for v in found if not v.is_4d]
    if len(vols) != 1:
        raise ConfigError(f"--series must hold one 3-D series; {args.series!r} gives {len(vols)}")
    write_seg(
        args.labels,
        vols[0],
        args.output,
        segments=names,
        algorithm=args.algorithm,
        fractional=args.fractional,
    )
    print(f"SEG of {args.labels} on {vols[0].info.get('SeriesInstanceUID')} -> {args.output}")
    return EXIT_OK
