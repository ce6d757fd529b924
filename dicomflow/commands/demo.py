"""``dicomflow demo``: the whole flow on the built-in sample archive, no network needed.

1. write the deterministic sample archive (4 patients, CT and MR, private tags, identifying
   values planted everywhere, three broken files);
2. scan it into a Parquet catalog and summarise it;
3. de-identify it into a share (a media set with a DICOMDIR) with a demo secret, and verify
   that no planted value is left;
4. build volumes from the share, write NIfTI files and a PNG montage per volume;
5. write one HTML report of all of it (with the pictures) and print where everything went.
"""

from __future__ import annotations

import argparse
import html
import os
import secrets
import sys
import time
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .run import EXIT_FAILED, EXIT_OK


def register(sub: Any) -> None:
    p = sub.add_parser(
        "demo",
        help="run the whole flow on the built-in sample archive (scan, de-identify, verify, "
        "volumes, report)",
        description=(
            "Write the deterministic sample archive (4 patients, CT and MR, private tags, "
            "identifying values, a few broken files) under DEST, then: scan it into a Parquet "
            "catalog; de-identify it into a media set with a DICOMDIR and verify it; build "
            "volumes and write NIfTI files and PNG montages; write DEST/report.html."
        ),
    )
    p.add_argument("dest", nargs="?", default="demo-out", help="output folder (default: demo-out)")
    p.add_argument("--seed", type=int, default=0, help="the sample's seed (default: 0)")
    p.add_argument("--workers", type=int, default=None, help="processes (default: one per core)")
    p.set_defaults(func=run)


def _replace(path: Path, data: bytes) -> None:
    """Write ``path`` atomically, replacing what a previous demo left there."""
    from ..dicom import atomic_path

    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


def _say(step: str, started: float) -> None:
    print(f"[{time.perf_counter() - started:5.1f} s] {step}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    import polars as pl

    from ..anonymize import Deidentify, verify_folders
    from ..catalog import errors_by_reason, modality_counts, totals
    from ..codecs import encode_png
    from ..dicom import atomic_write
    from ..pipeline import pipeline
    from ..pixels import volumes
    from ..sample import make_sample
    from ..writers import MediaSet

    dest = Path(args.dest)
    if dest.exists() and not dest.is_dir():
        raise ConfigError(f"{dest} is a file: the demo writes a folder there, name another")
    started = time.perf_counter()
    info = make_sample(dest / "archive", seed=args.seed)
    _say(f"sample archive: {len(info.files)} DICOM files + {len(info.broken)} broken files "
         f"under {info.root}", started)  # fmt: skip

    # 1. catalog
    from ..catalog import scan

    catalog_path = dest / "catalog.parquet"
    scan(info.root, workers=args.workers).update(catalog_path)
    table = pl.read_parquet(catalog_path).to_arrow()
    counts, by_modality, errors = totals(table), modality_counts(table), errors_by_reason(table)
    _say(f"catalog: {catalog_path} ({counts['instances']} instances, {counts['errors']} "
         "unreadable files kept as rows with the reason)", started)  # fmt: skip
    with pl.Config(tbl_rows=12, fmt_str_lengths=50, tbl_hide_dataframe_shape=True):
        print(by_modality, file=sys.stderr)

    # 2. de-identification into a media set, then the proof
    private = dest / "private"
    private.mkdir(parents=True, exist_ok=True)
    key = private / "demo.key"
    if not key.exists():  # a fresh secret per demo folder; a real project keeps one safely
        atomic_write(str(key), secrets.token_hex(32).encode() + b"\n")
        os.chmod(key, 0o600)
    share = dest / "share"
    manifests = dest / "share.manifests"
    stage = Deidentify(secret_file=str(key), crosswalk=str(private / "crosswalk.parquet"))
    sink: Any = MediaSet(str(share))
    job = (pipeline(scan(info.root, columns=["SOPInstanceUID"], workers=1)) | stage).write(sink)
    report = job.execute(workers=args.workers, manifest=str(manifests))
    stage.merge_crosswalk()
    _say(f"de-identified into {share} (DICOMDIR): {report.summary()}", started)
    proof = verify_folders(info.root, share, manifest=manifests)
    _say(f"verified: {proof.summary()}", started)

    # 3. volumes of the share: NIfTI and a montage each
    vols = volumes(str(share))
    images = dest / "volumes"
    images.mkdir(exist_ok=True)
    pictures: list[tuple[str, str, str]] = []
    for i, vol in enumerate(vols):
        desc = str(vol.info.get("SeriesDescription") or vol.info.get("Modality") or "volume")
        name = f"{i:02d}_{''.join(c if c.isalnum() else '-' for c in desc)[:40]}"
        vol.to_nifti(images / f"{name}.nii.gz")
        png = images / f"{name}.png"
        _replace(png, encode_png(vol.montage(12, tile=160)))
        shape = " x ".join(str(s) for s in vol.shape)
        pictures.append((f"{desc} ({shape})", png.name, "; ".join(vol.warnings)))
    _say(f"{len(vols)} volumes -> {images} (.nii.gz + JSON sidecar + .png montage)", started)

    # 4. one page
    page = _report(info, counts, by_modality, errors, report, proof, pictures)
    _replace(dest / "report.html", page.encode("utf-8"))
    _say(f"report: {dest / 'report.html'}", started)
    print(
        f"\nwhere everything went:\n  sample archive   {info.root}\n  catalog          "
        f"{catalog_path}\n  share (DICOMDIR) {share}\n  manifest         {manifests}\n"
        f"  private (key, crosswalk: never share) {private}\n  volumes          {images}\n"
        f"  report           {dest / 'report.html'}",
        file=sys.stderr,
    )
    return EXIT_OK if proof.ok else EXIT_FAILED


def _report(info, counts, by_modality, errors, run, proof, pictures) -> str:
    """The demo's HTML page: what was read, de-identified, verified and built."""
    esc = html.escape
    line = ", ".join(f"{v:,} {k}" for k, v in counts.items())
    outcome = run.to_polars().group_by("status", "stage", "reason").len("inputs")
    figures = "".join(
        f"<figure><img src='volumes/{esc(png)}' style='max-width:100%'/><figcaption>{esc(cap)}"
        + (f"<br/><small>{esc(warn)}</small>" if warn else "")
        + "</figcaption></figure>"
        for cap, png, warn in pictures
    )
    verdict = "no identifying value left" if proof.ok else "FINDINGS: see below"
    findings = ""
    if not proof.ok:
        findings = "<ul>" + "".join(
            f"<li>{esc(str(f.output))}: {esc(f.attribute)} ({esc(f.where)})</li>"
            for f in proof.findings[:50]
        ) + "</ul>"  # fmt: skip
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>dicomflow demo</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}
figure{{display:inline-block;margin:1em;vertical-align:top}}</style></head><body>
<h1>dicomflow demo</h1>
<p>The built-in sample archive under <code>{esc(str(info.root))}</code>: {len(info.files)} DICOM
files and {len(info.broken)} broken ones, with identifying values planted in names, IDs,
dates, private tags and nested sequences.</p>
<h2>1. Catalog</h2><p>{esc(line)}</p>{by_modality._repr_html_()}
<p>Unreadable files are rows too, with the reason:</p>{errors._repr_html_()}
<h2>2. De-identification</h2>
<p>PS3.15 Annex E Basic Profile, keyed by the demo secret; written as a media set with a
DICOMDIR. {esc(run.summary())}</p>{outcome._repr_html_()}
<h2>3. Verification</h2><p>{esc(proof.summary())}: <b>{verdict}</b></p>{findings}
<h2>4. Volumes of the share</h2>{figures}
</body></html>
"""
