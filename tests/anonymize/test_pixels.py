"""Clean Pixel Data: burned-in text quarantined, or blanked by a rule table in the stored pixels."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian, JPEGLSLossless, RLELossless

import dicomflow as dfl
from dicomflow.anonymize import (
    DeidentificationError,
    Deidentifier,
    PixelReport,
    PixelRules,
    verify,
)
from dicomflow.dicom import encode_part10
from dicomflow.errors import ConfigError
from dicomflow.sample import (
    build_header,
    make_patient,
    make_series,
    make_study,
    phantom_slice,
    seeded_rng,
    set_instance,
)

from .conftest import SECRET, SHARED

CORPUS = Path(os.environ.get("DICOMFLOW_SHARED", SHARED)) / "corpus"
TEXT = (4, 2, 40, 8)  # x, y, w, h of the burned-in "text"
RULES = """manufacturer,model,rows,columns,rectangles,note
ACME Medical \\(fake\\),Imaginex.*,64,64,"0,0,64,12",top band of the fake scanner
"SonoSite, Inc\\.",Turbo,240,320,"0,0,320,30;0,226,320,14",labels and toolbar
"""


def _burned_in(syntax: str = ExplicitVRLittleEndian) -> pydicom.Dataset:
    """A sample-style CT image with a rectangle of text-like strokes, Burned In Annotation YES."""
    study = make_study(make_patient(0, 0), 0, seed=0, exam="CT HEAD")
    series = make_series(study, 0, seed=0, kind="CT", slices=1, matrix=64)
    ds = build_header(series)
    set_instance(ds, series, 0)
    pixels = phantom_slice(series, 0.0, seeded_rng(0, "burned-in"))
    x, y, w, h = TEXT
    strokes = np.zeros((h, w), dtype=bool)
    strokes[1:-1, ::3] = True  # letter-like vertical strokes
    strokes[[1, h // 2, h - 2], :] = True
    pixels[y : y + h, x : x + w][strokes] = 4000
    ds.BurnedInAnnotation = "YES"
    if syntax == ExplicitVRLittleEndian:
        ds.PixelData = pixels.tobytes()
    else:
        ds.compress(syntax, pixels, generate_instance_uid=False)
    return pydicom.dcmread(io.BytesIO(encode_part10(ds)))


def _engine(**kwargs) -> Deidentifier:
    return Deidentifier(SECRET, ["clean-pixel-data"], **kwargs)


def test_quarantined_without_the_option_searched_without_a_rule() -> None:
    with pytest.raises(DeidentificationError, match="Burned In Annotation is YES"):
        Deidentifier(SECRET).deidentify(_burned_in())
    # no rule for this scanner: searched by OCR instead of refused; the strokes are no text
    ds = _burned_in()
    out, _ = _engine().deidentify(ds)
    assert np.array_equal(out.pixel_array, ds.pixel_array)
    assert out.BurnedInAnnotation == "YES"  # nothing was blanked: no claim is made


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, RLELossless, JPEGLSLossless])
def test_rule_blanks_the_stored_pixels(syntax: str) -> None:
    ds = _burned_in(syntax)
    before = ds.pixel_array.copy()
    out, _ = _engine(pixel_rules=PixelRules.from_text(RULES)).deidentify(ds)
    out = pydicom.dcmread(io.BytesIO(encode_part10(out)))
    assert out.file_meta.TransferSyntaxUID == syntax  # lossless: stored the same way
    after = out.pixel_array
    assert (after[:12] == before.min()).all()  # the band, text included, is blank
    assert np.array_equal(after[12:], before[12:])  # everything else is untouched
    assert out.BurnedInAnnotation == "NO"
    assert "113101" in [item.CodeValue for item in out.DeidentificationMethodCodeSequence]
    assert [f for f in verify(ds, out) if f.kind == "leak"] == []
    assert np.array_equal(ds.pixel_array, before)  # the input is not modified


def test_rule_table_from_a_file(tmp_path) -> None:
    path = tmp_path / "rules.csv"
    path.write_text(RULES)
    out, _ = _engine(pixel_rules=path).deidentify(_burned_in())
    assert out.BurnedInAnnotation == "NO"
    bad = tmp_path / "bad.csv"
    bad.write_text('manufacturer,model,rows,columns,rectangles\nACME,,64,64,"0,0,64"\n')
    with pytest.raises(ConfigError, match="x,y,w,h"):
        PixelRules.load(bad)
    with pytest.raises(ConfigError, match="columns"):
        PixelRules.from_text("manufacturer,model\nACME,X\n")


def _corpus(relative: str) -> pydicom.Dataset:
    path = CORPUS / relative
    if not path.is_file():
        pytest.skip(f"corpus file {relative} not found")
    return pydicom.dcmread(path)


def test_shipped_rule_on_a_real_ultrasound_image() -> None:
    ds = _corpus("transfer-syntax/explicit-vr-le/examples_rgb_color.dcm")  # GE LOGIQ 700
    report = PixelReport()
    out, _ = _engine().deidentify(ds, pixel_report=report)
    before, after = ds.pixel_array, out.pixel_array
    assert after[:54].max() == 0  # the rule's band
    # below it, OCR finds the image's caption ("LYMPH NODE") and scale text; only those
    # boxes change
    assert report.rule_rectangles == 1 and report.found
    changed = np.zeros(before.shape[:2], bool)
    for x, y, w, h in report.found[0]:
        changed[y : y + h, x : x + w] = True
    changed[:54] = True
    assert np.array_equal(after[~changed], before[~changed])


def test_lossy_source_is_stored_uncompressed_not_recompressed() -> None:
    ds = _corpus("transfer-syntax/explicit-vr-le/examples_ybr_color.dcm")  # JPEG baseline US
    out, _ = _engine(pixel_rules=PixelRules.from_text(RULES)).deidentify(ds)
    out = pydicom.dcmread(io.BytesIO(encode_part10(out)))
    assert out.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert out.PhotometricInterpretation == "RGB" and out.LossyImageCompression == "01"
    frames = out.pixel_array
    assert frames.shape == (30, 240, 320, 3) and frames[:, :30].max() == 0


def test_corpus_burned_in_files_are_searched_or_fail_with_a_reason(tmp_path) -> None:
    folder = CORPUS / "burned-in"
    if not folder.is_dir():
        pytest.skip("corpus not found")
    stage = dfl.anonymize.Deidentify(secret=SECRET, options=["clean-pixel-data"])
    job = (dfl.pipeline(str(folder)) | stage).write(dfl.writers.Part10Folder(str(tmp_path)))
    report = job.execute(workers=1, manifest=str(tmp_path / "m"))
    rows = report.manifest.to_pylist()
    assert len(rows) == 2
    by_name = {r["source_uri"].rsplit("/", 1)[-1]: r for r in rows}
    # no rule for this CT: searched by OCR (every frame), not refused
    searched = by_name["fo-dicom_GH1728.dcm"]
    assert searched["status"] == "done", searched["reason"]
    assert json.loads(searched["counts"])["ocr.frames"] == 1
    unreadable = by_name["fo-dicom_GH364.dcm"]  # pydicom cannot read it: failed, with a reason
    assert unreadable["status"] == "failed" and unreadable["reason"]
