"""Parts of the OCR detector (`dicomflow.anonymize._ocr`), white-box: how the ink of a word is
found, which grey levels are read alone as flat colours, when a line is noise; and one frame
whose text only the flat-colour pages find."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

from dicomflow.anonymize import TextDetector, decoded_frames
from dicomflow.anonymize._ocr import _contrast, _flat_levels, _ink, _Line, _textured, _Word

from .conftest import SHARED

CORPUS = Path(os.environ.get("DICOMFLOW_SHARED", SHARED)) / "corpus"
FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"


def _word(top: int, height: int, text: str, confidence: float = 10.0) -> _Word:
    return _Word(1, 10, top, 4 * height, height, confidence, text, (1, 1, 1, 1))


def test_the_ink_of_bold_text_filling_its_box_is_the_text() -> None:
    """White bold strokes cover most of the word's box (its median is the ink): the ring around
    the box shows the black background, so the ink is white, not black."""
    view = np.zeros((40, 100), np.uint8)
    view[10:30, 10:90] = 255
    view[14:26, 20:24] = 0  # the counters of the letters
    view[14:26, 50:54] = 0
    level, tolerance = _ink(view, (10, 10, 90, 30))
    assert abs(level - 255) <= tolerance


def test_faint_text_on_few_grey_levels_has_ink() -> None:
    """Text 3 grey levels above its background (a frame whose range brighter text sets) has an
    ink on its box stretched to its range, and the seed grows along the rest of its line."""
    view = np.zeros((30, 200), np.uint8)
    view[10:20, 20:180:6] = 3  # strokes
    low, gain = _contrast(view[10:20, 20:60])
    assert (low, gain) == (0, 85.0)
    ink = _ink(view, (20, 10, 60, 20), low, gain)
    assert ink is not None and ink[0] == 255
    line = _Line(20, 10, 60, 20, 0, ink[0], ink[1], (), low, gain)
    grown = TextDetector()._grow([view], line)
    assert (grown.x0, grown.x1) == (20, 177)


def test_flat_levels_are_the_colour_of_text_not_the_background() -> None:
    rng = np.random.default_rng(0)
    view = np.clip(rng.normal(90, 25, (200, 200)), 0, 255).astype(np.uint8)
    view[:, :80] = 0  # a black margin: more than 30 % of the frame
    view[150:170, 100:190:3] = 173  # strokes of one flat grey
    levels = _flat_levels(view, 4)
    assert 173 in levels
    assert 0 not in levels
    assert _flat_levels(view, 0) == []


def test_a_line_is_noise_by_its_fragments_of_the_strong_words_height() -> None:
    """Large text read on enlarged tiles comes out as many fragments of other heights: they do
    not make its line noise; thirteen fragments of its height do."""
    tall = tuple(_word(0, 50, f"x{n}") for n in range(14))
    assert _textured(tall, 0.0)
    assert not _textured(tall, 24.0)
    alike = tuple(_word(0, 24, f"x{n}") for n in range(14))
    assert _textured(alike, 24.0)


@pytest.mark.skipif(shutil.which("tesseract") is None, reason="needs Tesseract (test_ocr fails)")
def test_large_grey_text_over_textured_anatomy_is_found() -> None:
    """A line of grey 32-pixel text over an MR montage: its strokes cross textured anatomy,
    which no tile or polarity lets Tesseract read; its flat grey level, read alone, does."""
    from PIL import Image, ImageDraw, ImageFont

    ds = pydicom.dcmread(CORPUS / "series" / "dcm_qa_ts" / "2.dcm")
    frames, photometric = decoded_frames(ds)
    frame = np.ascontiguousarray(frames[0])
    mask = Image.new("L", (frame.shape[1], frame.shape[0]), 0)
    ImageDraw.Draw(mask).text((13, 342), "SMITH^LI", fill=255, font=ImageFont.truetype(FONT, 32))
    alpha = np.asarray(mask, np.float64) / 255.0
    low, high = float(frame.min()), float(frame.max())
    grey = low + 0.6 * (high - low)
    frame = np.rint(frame * (1 - alpha) + grey * alpha).astype(frame.dtype)
    ys, xs = np.nonzero(alpha > 0.25)
    found = TextDetector().find_text(frame, photometric)
    covered = np.zeros(frame.shape, bool)
    for x, y, w, h in (box.blank for box in found):
        covered[y : y + h, x : x + w] = True
    assert covered[ys, xs].mean() >= 0.8, [(b.text, b.rectangle) for b in found]
