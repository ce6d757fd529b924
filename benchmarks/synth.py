"""Write a realistic synthetic CT/MR archive of any size, for benchmarks.

Every file is a CT (about two thirds) or MR instance with a header of about 165 elements
(counted recursively) and about 10 KB: patient, study, series, equipment, image plane, image
pixel, VOI LUT and CT or MR modules, nested sequences (some two levels deep), three private
blocks (one holding a private sequence) and identifying values planted where real archives carry
them (:data:`PLANTED_KEYWORDS`). Files are grouped in series of 50 to 300 instances, one to three
series per study, one or two studies per patient, laid out as
``PAT001/STU001/SER001/IM00001.dcm``. The same seed gives byte-identical files.

The headers come from :mod:`dicomflow.sample`; this module only plans the archive and writes it
fast: one header per series, encoded once, and per instance only the few elements that change
(UIDs, position, instance number, times) are encoded and spliced in, with Pixel Data bytes taken
from a few phantom slices precomputed per series. The result is byte for byte what
``pydicom.dcmwrite(path, ds, enforce_file_format=True)`` writes for the same dataset.

Usage::

    python benchmarks/synth.py DEST -n 2000 [--seed 0] [--pixels ct512|small|none]
"""

from __future__ import annotations

import argparse
import bisect
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.tag import BaseTag, Tag

from dicomflow import sample
from dicomflow.sample import (
    INSTANCE_KEYWORDS,
    Series,
    Study,
    build_header,
    make_patient,
    make_series,
    make_study,
    phantom_slice,
    seeded_rng,
    set_instance,
    slice_offset,
)

#: Keywords of the standard attributes carrying planted identifying values in every file; the
#: private ones are listed in ``dicomflow.sample.PLANTED_PRIVATE``.
PLANTED_KEYWORDS = list(sample.PLANTED_KEYWORDS)

#: Image matrix per ``pixels`` choice; ``none`` keeps the 512 x 512 image attributes but writes
#: no Pixel Data.
MATRIX = {"ct512": 512, "small": 64, "none": 512}

_SERIES_SIZE = (50, 300)
_VARIANTS = 8  # distinct phantom slices per series, reused along the stack
_VENDOR_BLOB_SIZE = 5600  # vendor private OB header, puts the whole header near 10 KB
_CT_EXAMS = ("CT CHEST", "CT ABDOMEN", "CT HEAD")
_MR_EXAMS = ("MR BRAIN", "MR KNEE")


def plan(n: int, *, seed: int = 0, matrix: int = 512) -> list[Series]:
    """Return the series of an ``n``-file archive, whose ``slices`` add up to ``n``.

    A study is MR when the MR files so far are fewer than half the CT files, so about two
    thirds of the files are CT; MR series alternate T1 and T2. The second study of a patient
    refers to the first as its prior.
    """
    rng = seeded_rng(seed, "synth plan")
    series: list[Series] = []
    remaining, patient_index = n, 0
    files = {"CT": 0, "MR": 0}
    while remaining > 0:
        patient = make_patient(seed, patient_index)
        patient_index += 1
        prior: Study | None = None
        for study_index in range(int(rng.integers(1, 3))):
            is_ct = 2 * files["MR"] >= files["CT"]
            exams = _CT_EXAMS if is_ct else _MR_EXAMS
            exam = exams[int(rng.integers(len(exams)))]
            study = make_study(patient, study_index, seed=seed, exam=exam, prior=prior)
            prior = study
            for series_index in range(int(rng.integers(1, 4))):
                size = min(remaining, int(rng.integers(_SERIES_SIZE[0], _SERIES_SIZE[1] + 1)))
                kind = "CT" if is_ct else ("T1", "T2")[series_index % 2]
                series.append(
                    make_series(
                        study, series_index, seed=seed, kind=kind, slices=size, matrix=matrix
                    )
                )
                remaining -= size
                files["CT" if is_ct else "MR"] += size
                if remaining == 0:
                    return series
    return series


def _pixel_variants(series: Series, seed: int) -> list[bytes]:
    """Return ``_VARIANTS`` encoded phantom slices spread evenly along the stack of ``series``."""
    variants = []
    for variant in range(_VARIANTS):
        index = (2 * variant + 1) * series.slices // (2 * _VARIANTS)
        rng = seeded_rng(seed, "synth pixels", series.folder, variant)
        variants.append(phantom_slice(series, slice_offset(series, index), rng).tobytes())
    return variants


@dataclass(frozen=True)
class SplitHeader:
    """A series header encoded once, around the elements that change per instance.

    ``segments[i]`` holds the encoded constant elements before ``tags[i]``; the last segment
    those after the last tag.
    """

    tags: tuple[BaseTag, ...]
    segments: tuple[bytes, ...]
    charset: str | list[str]


def _encoded(ds: Dataset, charset: str | list[str]) -> bytes:
    """Return ``ds`` encoded in Explicit VR Little Endian, as pydicom writes it."""
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    write_dataset(fp, ds, parent_encoding=charset)
    return fp.getvalue()


def split_header(header: Dataset) -> SplitHeader:
    """Encode the elements of ``header`` that no instance changes, once for the series."""
    tags = tuple(sorted(Tag(keyword) for keyword in (*INSTANCE_KEYWORDS, "PixelData")))
    groups = [Dataset() for _ in range(len(tags) + 1)]
    for elem in header:
        if elem.tag not in tags:
            groups[bisect.bisect(tags, elem.tag)].add(elem)
    charset = header.get("SpecificCharacterSet", "iso8859")
    return SplitHeader(tags, tuple(_encoded(group, charset) for group in groups), charset)


def encode_instance(header: Dataset, split: SplitHeader) -> bytes:
    """Return the Part 10 file of ``header``: its constant part from ``split``, the rest fresh."""
    meta = DicomBytesIO()
    meta.is_little_endian, meta.is_implicit_VR = True, False
    write_file_meta_info(meta, header.file_meta, enforce_standard=True)
    parts = [b"\x00" * 128, b"DICM", meta.getvalue()]
    for segment, tag in zip(split.segments, split.tags, strict=False):
        parts.append(segment)
        if tag in header:
            parts.append(_encoded(Dataset({tag: header[tag]}), split.charset))
    parts.append(split.segments[-1])
    return b"".join(parts)


def _write_series(root: Path, series: Series, *, seed: int, pixels: str) -> list[str]:
    header = build_header(series, vendor_blob_size=_VENDOR_BLOB_SIZE)
    variants = _pixel_variants(series, seed) if pixels != "none" else []
    split = split_header(header)
    folder = root / series.folder
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(series.slices):
        set_instance(header, series, index)
        if variants:
            header.add_new("PixelData", "OW", variants[index * _VARIANTS // series.slices])
        path = folder / f"IM{index + 1:05d}.dcm"
        path.write_bytes(encode_instance(header, split))
        paths.append(str(path))
    return paths


def generate(dest: str | Path, n: int, *, seed: int = 0, pixels: str = "ct512") -> list[str]:
    """Write an archive of ``n`` synthetic DICOM files under ``dest``.

    Parameters
    ----------
    dest : str or Path
        Local folder, created if missing.
    n : int
        Number of files.
    seed : int, optional
        Everything derives from it: the same seed writes byte-identical files.
    pixels : {"ct512", "small", "none"}, optional
        512 x 512 pixels (int16 CT, uint16 MR), 64 x 64 pixels, or no Pixel Data.

    Returns
    -------
    list of str
        The paths written, series by series in instance order.

    Examples
    --------
    >>> import tempfile
    >>> len(generate(tempfile.mkdtemp(), 3, pixels="small"))
    3
    """
    if pixels not in MATRIX:
        raise ValueError(f"pixels must be one of {sorted(MATRIX)}, not {pixels!r}")
    root = Path(dest)
    paths: list[str] = []
    for series in plan(n, seed=seed, matrix=MATRIX[pixels]):
        paths += _write_series(root, series, seed=seed, pixels=pixels)
    return paths


def list_dicom(folder: str | Path) -> list[str]:
    """Every ``*.dcm`` below ``folder``, sorted."""
    return sorted(str(p) for p in Path(folder).rglob("*.dcm"))


def ensure_archive(archive: Path, n: int, *, seed: int, pixels: str) -> tuple[list[str], str]:
    """The benchmarks' archive: reused when the stamp beside it (outside the folder, so a scan
    of the folder sees only DICOM files) says the same N, seed and pixels, else written anew.
    A non-empty folder without a stamp is someone else's: it is never overwritten.

    Returns the files and how they were obtained.
    """
    wanted = {"n": n, "seed": seed, "pixels": pixels, "generator": "benchmarks/synth.py"}
    stamp = archive.with_name(archive.name + ".stamp.json")
    if stamp.exists():
        try:
            found = json.loads(stamp.read_text())
        except ValueError:
            found = None
        if found == wanted:
            paths = list_dicom(archive)
            if len(paths) == n:
                return paths, "reused (stamp matches)"
        shutil.rmtree(archive, ignore_errors=True)  # ours: the stamp says we wrote it
        stamp.unlink()
    elif archive.exists() and any(archive.iterdir()):
        raise SystemExit(
            f"{archive} exists, is not empty and has no {stamp.name}: "
            "refusing to overwrite it; pass another folder"
        )
    start = time.perf_counter()
    generate(archive, n, seed=seed, pixels=pixels)
    seconds = time.perf_counter() - start
    stamp.write_text(json.dumps(wanted))
    paths = list_dicom(archive)
    if len(paths) != n:
        raise SystemExit(f"{archive}: {len(paths)} files written, {n} wanted")
    return paths, f"generated in {seconds:.1f} s"


def main(argv: list[str] | None = None) -> None:
    """Command line: ``python benchmarks/synth.py DEST -n N [--seed S] [--pixels P]``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("dest", help="folder to write into")
    parser.add_argument("-n", type=int, required=True, help="number of files")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pixels", choices=sorted(MATRIX), default="ct512")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    paths = generate(args.dest, args.n, seed=args.seed, pixels=args.pixels)
    seconds = time.perf_counter() - start
    size = sum(Path(path).stat().st_size for path in paths)
    print(
        f"{len(paths)} files, {size / 1e6:.1f} MB under {args.dest} in {seconds:.1f} s "
        f"({len(paths) / seconds:.0f} files/s)"
    )


if __name__ == "__main__":
    main()
