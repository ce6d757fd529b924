"""dciodvfy over transcoded and de-identified outputs: the errors an output adds to its input's.

A sample of the corpus (CT, MR, US, SC, XC, PT; native little and big endian, JPEG baseline,
JPEG-LS, JPEG 2000, RLE; multi-frame; Icon Image Sequences) plus inputs generated from it (an
Icon Image Sequence whose pixels are encapsulated like the image's: JPEG baseline in a JPEG
file, RLE in an RLE file) goes through each output route:

* ``transcode:<target>``: the Transcode stage (``explicit-vr-le``, ``jpeg-ls-lossless``,
  ``rle``, ``jpeg2000-lossless``) through the stage runtime, then ``encode_part10`` (what the
  Part 10 folder sink writes);
* ``deid``: the Deidentify stage with the Basic Profile, then ``encode_part10``.

``dciodvfy`` (Debian dicom3tools) checks the input and each output. Its ``Error`` lines are
normalised (:func:`normalise`: values shown as ``= <...>`` and long numbers stripped), so that
the same error on input and output compares equal although de-identification replaced the
value; an output's *added* errors are those not among its input's. Routes that write nothing
(the stage refused the instance) are counted apart, with their reason.

Usage (from the repository root)::

    .venv/bin/python benchmarks/dciodvfy_outputs.py            # totals and added errors by kind
    .venv/bin/python benchmarks/dciodvfy_outputs.py --verbose  # and each output's added errors

Exit status 1 when an output adds an error. ``tests/test_output_validity.py`` imports this
module by path (``benchmarks/`` is not a package) and asserts the same for each output.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("DICOMFLOW_SHARED", ROOT.parent / "shared"))
CORPUS = SHARED / "corpus"
DCIODVFY = shutil.which("dciodvfy")
SECRET = b"dciodvfy outputs benchmark secret"

#: corpus files: what each one stands for
SAMPLE = {
    "transfer-syntax/explicit-vr-le/CT_small.dcm": "CT, explicit VR LE",
    "transfer-syntax/implicit-vr-le/MR_small_implicit.dcm": "MR, implicit VR LE",
    "transfer-syntax/explicit-vr-be/MR_small_bigendian.dcm": "MR, explicit VR big endian",
    "transfer-syntax/explicit-vr-le/examples_ybr_color.dcm": "US multi-frame, JPEG baseline 422",
    "transfer-syntax/jpeg-baseline/SC_rgb_jpeg_dcmtk.dcm": "SC, JPEG baseline YBR_FULL",
    "transfer-syntax/jpeg-baseline/SC_rgb_dcmtk_+eb+cy+s2.dcm": "SC, JPEG baseline 422",
    "transfer-syntax/jpeg-ls-lossless/MR_small_jpeg_ls_lossless.dcm": "MR, JPEG-LS lossless",
    "transfer-syntax/jpeg2000-lossless/MR_small_jp2klossless.dcm": "MR, JPEG 2000 lossless",
    "transfer-syntax/rle/SC_rgb_rle.dcm": "SC RGB, RLE",
    "multiframe/fo-dicom_mr_brucker.dcm": "Enhanced MR, 4 frames",
    "modality/XC/fo-dicom_JPEGwithIcon.dcm": "XC, JPEG baseline 422, native icon",
    "modality/PT/tcia_acrin-flt-breast_1.dcm": "PT, native icon",
    "broken/CR-MONO1-10-chest": "CR without preamble or File Meta (a raw data set)",
    "modality/RTSTRUCT/rtstruct.dcm": "RT Structure Set, a raw data set without pixels",
}
#: generated inputs (see :func:`generate`): what each one stands for
GENERATED = {
    "icon-jpeg-in-jpeg.dcm": "XC, JPEG baseline, icon JPEG baseline",
    "icon-rle-in-rle.dcm": "MR, RLE, icon RLE",
}
TARGETS = ("explicit-vr-le", "jpeg-ls-lossless", "rle", "jpeg2000-lossless")
ROUTES = (*(f"transcode:{t}" for t in TARGETS), "deid")


# -- dciodvfy ---------------------------------------------------------------------------------

_VALUE = re.compile(r"= <[^>]*>?")  # a value dciodvfy shows (may run past the line's end)
_UID = re.compile(r"<\d+(\.\d+){2,}>")  # a UID it names ("... same value as ... <1.2.3>")
_NUMBER = re.compile(r"\b\d{5,}\b")  # lengths, offsets


def normalise(line: str) -> str:
    """An ``Error`` line without the values it shows, so input and output compare equal.

    >>> normalise("Error - SeriesInstanceUID has same value as StudyInstanceUID <1.2.3.4>")
    'Error - SeriesInstanceUID has same value as StudyInstanceUID <uid>'
    >>> normalise("Error - Value invalid - (0x0008,0x0022) DA [1] = <1993.02.24> - '.' (0x2e)")
    "Error - Value invalid - (0x0008,0x0022) DA [1] = <> - '.' (0x2e)"
    """
    line = _UID.sub("<uid>", _VALUE.sub("= <>", line.strip()))
    return _NUMBER.sub("#", line)


def dciodvfy_errors(path: Path) -> set[str]:
    """The normalised ``Error`` lines dciodvfy prints for ``path``."""
    if DCIODVFY is None:
        raise RuntimeError("dciodvfy (Debian dicom3tools) is not installed")
    run = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, timeout=120)
    lines = (run.stdout + run.stderr).splitlines()
    return {normalise(line) for line in lines if line.startswith("Error")}


# -- inputs -----------------------------------------------------------------------------------


def _read(path: Path) -> pydicom.FileDataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(path, force=True)


def _icon(pixels: np.ndarray, frame: bytes) -> Dataset:
    """An Icon Image Sequence item (PS3.3 F.7: 8-bit MONOCHROME2) with encapsulated pixels."""
    item = Dataset()
    item.SamplesPerPixel = 1
    item.PhotometricInterpretation = "MONOCHROME2"
    item.Rows, item.Columns = pixels.shape
    item.BitsAllocated = item.BitsStored = 8
    item.HighBit = 7
    item.PixelRepresentation = 0
    item.PixelData = encapsulate([frame])
    item["PixelData"].VR = "OB"
    item["PixelData"].is_undefined_length = True
    return item


def generate(folder: Path) -> dict[str, Path]:
    """Write the generated inputs into ``folder``; their names (:data:`GENERATED`) and paths.

    * ``icon-jpeg-in-jpeg.dcm``: the XC JPEG file of the corpus, its icon replaced by a
      MONOCHROME2 one encoded in JPEG baseline (imagecodecs' libjpeg-turbo), as PS3.5 8.2
      lets an encapsulated file hold it;
    * ``icon-rle-in-rle.dcm``: the MR RLE file of the corpus with a MONOCHROME2 icon encoded in
      RLE Lossless (pydicom's own RLE encoder).
    """
    import imagecodecs
    from pydicom.pixels.encoders import RLELosslessEncoder

    folder.mkdir(parents=True, exist_ok=True)
    out = {}

    ds = _read(CORPUS / "modality/XC/fo-dicom_JPEGwithIcon.dcm")
    old = ds.IconImageSequence[0]
    gray = np.frombuffer(old.PixelData, np.uint8)[: old.Rows * old.Columns]
    gray = gray.reshape(old.Rows, old.Columns)
    ds.IconImageSequence = Sequence([_icon(gray, bytes(imagecodecs.jpeg8_encode(gray, 90)))])
    out["icon-jpeg-in-jpeg.dcm"] = folder / "icon-jpeg-in-jpeg.dcm"
    ds.save_as(out["icon-jpeg-in-jpeg.dcm"], enforce_file_format=True)

    ds = _read(CORPUS / "transfer-syntax/rle/MR_small_RLE.dcm")
    image = ds.pixel_array.astype(np.float64)
    small = image[::2, ::2]
    gray = np.round(255 * (small - small.min()) / max(np.ptp(small), 1)).astype(np.uint8)
    frame = RLELosslessEncoder.encode(
        gray,
        rows=gray.shape[0],
        columns=gray.shape[1],
        samples_per_pixel=1,
        bits_allocated=8,
        bits_stored=8,
        pixel_representation=0,
        photometric_interpretation="MONOCHROME2",
        number_of_frames=1,
    )
    ds.IconImageSequence = Sequence([_icon(gray, frame)])
    out["icon-rle-in-rle.dcm"] = folder / "icon-rle-in-rle.dcm"
    ds.save_as(out["icon-rle-in-rle.dcm"], enforce_file_format=True)
    return out


def inputs(folder: Path) -> dict[str, Path]:
    """Every input of the check: the corpus sample, then the generated files (in ``folder``)."""
    found = {name: CORPUS / name for name in SAMPLE}
    missing = [name for name, path in found.items() if not path.is_file()]
    if missing:
        raise FileNotFoundError(f"corpus files missing under {CORPUS}: {missing}")
    return found | generate(folder)


# -- outputs ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Result:
    """One input through one route: the errors its output added, or why nothing was written."""

    input: str
    route: str
    added: frozenset[str] = frozenset()
    refused: str | None = None


def stages() -> dict[str, object]:
    """The stage of each route."""
    from dicomflow.anonymize import Deidentify
    from dicomflow.pipeline import Transcode

    built: dict[str, object] = {f"transcode:{t}": Transcode(t) for t in TARGETS}
    built["deid"] = Deidentify(secret=SECRET)
    return built


def output(stage: object, source: Path) -> tuple[bytes | None, str | None]:
    """The Part 10 bytes ``stage`` makes of ``source`` (as a folder sink writes them), or None
    and the reason the runtime recorded."""
    from dicomflow.dicom import encode_part10
    from dicomflow.pipeline import Instance, run_stages

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        outcome = run_stages([stage], Instance(str(source)))
        if outcome.status != "done" or outcome.instance is None:
            return None, outcome.reason or outcome.status
        try:
            return encode_part10(outcome.instance.dataset), None
        except Exception as exc:  # noqa: BLE001 - the sink would fail this instance so
            return None, f"{type(exc).__name__}: {exc}"


def check(folder: Path, routes: tuple[str, ...] = ROUTES) -> Iterator[Result]:
    """Every input through every route, with the dciodvfy errors each output added."""
    built = stages()
    for name, source in inputs(folder / "inputs").items():
        before = dciodvfy_errors(source)
        for route in routes:
            data, reason = output(built[route], source)
            if data is None:
                yield Result(name, route, refused=reason)
                continue
            path = folder / "outputs" / route.replace(":", "-") / Path(name).name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            yield Result(name, route, frozenset(dciodvfy_errors(path) - before))


def _kind(error: str) -> str:
    return error if len(error) <= 110 else error[:107] + "..."


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="where outputs are kept (default: temporary)")
    parser.add_argument("--verbose", action="store_true", help="each output's added errors")
    args = parser.parse_args(argv)
    if DCIODVFY is None:
        print("dciodvfy (Debian dicom3tools) is not installed", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.out or Path(tmp)
        results = list(check(folder))
    written = [r for r in results if r.refused is None]
    refused = [r for r in results if r.refused is not None]
    kinds: Counter[str] = Counter(error for r in written for error in r.added)
    per_route: Counter[str] = Counter()
    for r in written:
        per_route[r.route] += len(r.added)
    inputs_count = len({r.input for r in results})
    print(f"inputs: {inputs_count}, outputs written: {len(written)}, refused: {len(refused)}")
    print(f"added dciodvfy errors: {sum(kinds.values())} "
          f"(outputs adding any: {sum(1 for r in written if r.added)})")  # fmt: skip
    for route in ROUTES:
        print(f"  {route:28} {per_route[route]}")
    if kinds:
        print("added errors by kind:")
        for error, count in kinds.most_common():
            print(f"  {count:3}  {_kind(error)}")
    if refused:
        print("refused:")
        for r in refused:
            print(f"  {r.input} [{r.route}]: {str(r.refused)[:140]}")
    if args.verbose:
        for r in written:
            for error in sorted(r.added):
                print(f"{r.input} [{r.route}]: {error}")
    return 1 if kinds else 0


if __name__ == "__main__":
    sys.exit(main())
