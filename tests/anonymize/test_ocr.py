"""Burned-in text found by OCR (Clean Pixel Data): how much planted text is found and blanked,
how many clean images are left alone, and what ``dicomflow deid`` does with it end to end.

Tesseract is installed by ``scripts/system-deps.sh``; without it these tests fail, they do not
skip.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian

from dicomflow.anonymize import (
    DeidentificationError,
    Deidentifier,
    PixelReport,
    TextDetector,
    decoded_frames,
    find_text,
    risk_reasons,
)
from dicomflow.cli import main
from dicomflow.dicom import encode_part10
from dicomflow.errors import TextDetectionError
from dicomflow.sample import build_header, make_patient, make_series, make_study, set_instance

from .conftest import SECRET, SHARED

REPO = Path(__file__).resolve().parents[2]
CORPUS = Path(os.environ.get("DICOMFLOW_SHARED", SHARED)) / "corpus"
FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"
US_IMAGE = "1.2.840.10008.5.1.4.1.1.6.1"
US_MULTIFRAME = "1.2.840.10008.5.1.4.1.1.3.1"
#: The identifying lines planted in the end-to-end images, and where.
LINES = (("DOE^JANE 14.07.1961", (8, 8)), ("ID 4471203", (8, 226)))


@pytest.fixture(scope="module", autouse=True)
def tesseract() -> None:
    """Tesseract with its English data, as scripts/system-deps.sh installs it: required."""
    if shutil.which("tesseract") is None:
        pytest.fail("the tesseract program is missing: run scripts/system-deps.sh "
                    "(apt-get install tesseract-ocr tesseract-ocr-eng)")  # fmt: skip


def _bench():
    """benchmarks/bench_ocr.py, imported by path (benchmarks/ is not a package)."""
    name = "dicomflow_benchmarks_ocr"
    if name not in sys.modules:
        if str(REPO / "benchmarks") not in sys.path:  # it imports its neighbours (_summary)
            sys.path.append(str(REPO / "benchmarks"))
        spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / "bench_ocr.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture(scope="module")
def measured():
    """The detector on 20 corpus frames with planted text and 12 without (as the benchmark)."""
    if not (CORPUS / "MANIFEST.csv").exists():
        pytest.fail(f"the DICOM corpus is missing at {CORPUS}")
    bench = _bench()
    return bench.measure(bench.planted_set(20, seed=3, corpus=CORPUS),
                         bench.clean_set(12, corpus=CORPUS))  # fmt: skip


def test_planted_text_is_found_and_clean_frames_are_left_alone(measured) -> None:
    missed = [(s.texts[i], s.specs[i]) for s, i in measured.misses]
    assert measured.planted >= 30  # one to three lines on each of the 20 frames
    assert measured.recall >= 0.8, missed
    assert measured.altered_share <= 0.10, [(s.source, b) for s, b in measured.false_alarms]


def test_planted_text_recall_holds_what_the_detector_reached(measured) -> None:
    """A floor under the detector's recall on this set: 38 of its 40 lines found (the two
    missed are 8- and 7-pixel-high text: DejaVu Sans 11 px, low contrast, on ultrasound; the
    bitmap font on a test pattern), as the detector before the flat-level pages also found
    here; the detector of before that found 36. Over the benchmark's 409 lines the issue's
    target, 0.95, is met: 0.973 (docs/deidentification.md section 14)."""
    missed = [(s.texts[i], s.specs[i]) for s, i in measured.misses]
    assert measured.planted == 40
    assert measured.found >= 38, missed


def test_missing_tesseract_names_the_packages() -> None:
    frame = np.zeros((64, 64), np.uint8)
    frame[20:40, 10:50] = 255
    with pytest.raises(TextDetectionError, match="tesseract-ocr tesseract-ocr-eng"):
        find_text(frame, detector=TextDetector(program="no-such-tesseract"))
    with pytest.raises(TextDetectionError, match="'xxx' language data"):
        find_text(frame, detector=TextDetector(language="xxx"))


# -- images with text, end to end -------------------------------------------------------------


def _background() -> np.ndarray:
    """A real MR frame (256 x 256, 12 bits in 16) of the corpus."""
    ds = pydicom.dcmread(CORPUS / "multiframe" / "fo-dicom_MOVEKNEE.dcm")
    frames, _ = decoded_frames(ds)
    return np.ascontiguousarray(frames[9])


def _planted(frame: np.ndarray, value: float) -> np.ndarray:
    from PIL import Image, ImageDraw, ImageFont

    mask = Image.new("L", (frame.shape[1], frame.shape[0]), 0)
    font = ImageFont.truetype(FONT, 18)
    for text, (x, y) in LINES:
        ImageDraw.Draw(mask).text((x, y), text, fill=255, font=font)
    alpha = np.asarray(mask, np.float64) / 255.0
    out = frame.astype(np.float64) * (1 - alpha) + value * alpha
    return np.rint(out).astype(frame.dtype) if frame.dtype.kind in "iu" else out.astype(frame.dtype)


def _text_boxes(frame: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Where the planted lines are: (x, y, w, h) of each line's ink."""
    blank = np.zeros_like(frame)
    ink = _planted(blank, 1) > 0
    boxes = []
    for _, (_, y) in LINES:
        top = max(0, y - 4)
        rows, cols = np.nonzero(ink[top : y + 28])
        width, height = int(cols.max() - cols.min() + 1), int(rows.max() - rows.min() + 1)
        boxes.append((int(cols.min()), top + int(rows.min()), width, height))
    return boxes


def _ultrasound(frames: int = 1) -> pydicom.Dataset:
    """An ultrasound image (a device no pixel rule knows) with a name and an ID burned in."""
    study = make_study(make_patient(0, 0), 0, seed=0, exam="MR KNEE")
    series = make_series(study, 0, seed=0, kind="T1", slices=1, matrix=256)
    ds = build_header(series)
    set_instance(ds, series, 0)
    ds.Modality, ds.Manufacturer, ds.ManufacturerModelName = "US", "ACME (fake)", "Sono 1"
    ds.SOPClassUID = US_IMAGE if frames == 1 else US_MULTIFRAME
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    for keyword in ("BurnedInAnnotation", "RescaleIntercept", "RescaleSlope"):
        if keyword in ds:
            delattr(ds, keyword)
    pixels = _planted(_background(), 4095)
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    if frames > 1:  # a loop: the overlay is still, the image under it moves
        loop = [np.roll(pixels, shift, axis=0) for shift in range(frames)]
        for frame in loop:
            frame[:40], frame[216:] = pixels[:40], pixels[216:]
        pixels = np.stack(loop)
        ds.NumberOfFrames = frames
    ds.PixelData = pixels.astype("<u2").tobytes()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return pydicom.dcmread(io.BytesIO(encode_part10(ds)))


def test_an_ultrasound_image_without_a_rule_is_searched_and_blanked() -> None:
    ds = _ultrasound()
    assert "modality US often carries burned-in text" in risk_reasons(ds)
    report = PixelReport()
    out, _ = Deidentifier(SECRET, ["clean-pixel-data"]).deidentify(ds, pixel_report=report)
    out = pydicom.dcmread(io.BytesIO(encode_part10(out)))
    before, after = ds.pixel_array, out.pixel_array
    for x, y, w, h in _text_boxes(before):
        assert (after[y : y + h, x : x + w] == before.min()).all()  # the text is gone
    assert report.searched == 1 and report.boxes >= 2 and not report.residual
    assert find_text(after) == []  # OCR of the output finds nothing
    blanked = np.zeros(before.shape, bool)
    for x, y, w, h in report.found[0]:
        blanked[y : y + h, x : x + w] = True
    assert np.array_equal(after[~blanked], before[~blanked])  # and nothing else changed
    assert blanked.mean() < 0.25  # the two lines with their margins
    assert out.BurnedInAnnotation == "NO"
    assert "113101" in [item.CodeValue for item in out.DeidentificationMethodCodeSequence]


def test_quarantine_policy_fails_the_instance() -> None:
    engine = Deidentifier(SECRET, ["clean-pixel-data"], burned_in_text="quarantine")
    with pytest.raises(DeidentificationError, match="burned-in text found by OCR in frame 1"):
        engine.deidentify(_ultrasound())


def test_every_frame_of_a_loop_is_searched_and_blanked() -> None:
    ds = _ultrasound(frames=3)
    report = PixelReport()
    out, _ = Deidentifier(SECRET, ["clean-pixel-data"]).deidentify(ds, pixel_report=report)
    after = pydicom.dcmread(io.BytesIO(encode_part10(out))).pixel_array
    assert after.shape == (3, 256, 256) and report.searched == 3
    assert sorted(report.found) == [0, 1, 2]
    for frame in range(3):
        for x, y, w, h in _text_boxes(after[frame]):
            assert (after[frame, y : y + h, x : x + w] == ds.pixel_array.min()).all()


def test_float_pixel_data_is_cleaned_not_passed_through() -> None:
    ds = pydicom.dcmread(CORPUS / "modality" / "PMAP" / "parametric_map_float.dcm")
    values = _background().astype(np.float32) / 4095.0
    ds.Rows, ds.Columns = values.shape
    ds.FloatPixelData = _planted(values, 1.0).astype("<f4").tobytes()
    assert risk_reasons(ds)  # modality OT
    report = PixelReport()
    out, _ = Deidentifier(SECRET, ["clean-pixel-data"]).deidentify(ds, pixel_report=report)
    assert "PixelData" not in out and out["FloatPixelData"].VR == "OF"
    after = np.frombuffer(out.FloatPixelData, "<f4").reshape(values.shape)
    for x, y, w, h in _text_boxes(values):
        assert (after[y : y + h, x : x + w] == 0.0).all()
    assert report.boxes >= 2


def test_deid_command_blanks_text_no_rule_covers_and_records_it(tmp_path, secret_file) -> None:
    src, dst = tmp_path / "export", tmp_path / "share"
    src.mkdir()
    (src / "us.dcm").write_bytes(encode_part10(_ultrasound()))
    args = ["deid", str(src), str(dst), "--secret-file", str(secret_file), "--workers", "1",
            "--option", "clean-pixel-data", "-q"]  # fmt: skip
    assert main(args) == 0
    [row] = _manifest_rows(tmp_path / "share.manifests")
    assert row["status"] == "done", row["reason"]
    counts = json.loads(row["counts"])
    assert counts["ocr.frames"] == 1 and counts["ocr.boxes"] >= 2
    assert counts["ocr.residual_frames"] == 0
    [found] = counts["ocr.found"]
    assert found["frame"] == 0 and len(found["boxes"]) >= 2 and found["residual"] == ""
    [output] = list(dst.rglob("*.dcm"))
    assert find_text(pydicom.dcmread(output).pixel_array) == []

    quarantined = tmp_path / "quarantined"
    args = ["deid", str(src), str(quarantined), "--secret-file", str(secret_file),
            "--workers", "1", "--option", "clean-pixel-data", "--burned-in-text", "quarantine",
            "-q"]  # fmt: skip
    assert main(args) == 1
    [row] = _manifest_rows(tmp_path / "quarantined.manifests")
    assert row["status"] == "failed" and "burned-in text found" in row["reason"]
    assert not list(quarantined.rglob("*.dcm"))


def _manifest_rows(folder: Path) -> list[dict]:
    import pyarrow.parquet as pq

    [path] = sorted(folder.glob("run-*.parquet"))
    return pq.read_table(path).to_pylist()
