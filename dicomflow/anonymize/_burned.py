"""Clean Pixel Data with OCR: which images are searched for text, and what is done with it.

With the Clean Pixel Data Option, an image's pixels are cleaned in two steps:

1. the rectangles of every matching rule of the pixel rule table are blanked (`PixelRules`);
2. when the image may show burned-in text (`risk_reasons`: Burned In Annotation ``YES`` or
   absent; modality US, OT, XC, SC, XA, RF or ES; a Secondary Capture, Ultrasound or VL /
   Video Photographic SOP Class), every frame (all frames of a cine loop) is searched by OCR
   (`TextDetector`). What is found is blanked with the detector's margin (policy ``blank``,
   the default) or fails the instance with the reason "burned-in text found" (policy
   ``quarantine``). A box found in one frame of a loop is also blanked in the other frames
   where its pixels are unchanged (a still overlay OCR missed there). Every frame that was
   blanked is searched again, and what is still read there is recorded as residual text.

Float and Double Float Pixel Data go through the same steps and are stored back as float.
What was done is collected in a `PixelReport` (the stage puts it into the manifest's
``counts``). Identical frames (a still part of a loop) are searched once.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from ._errors import DeidentificationError
from ._ocr import TextBox, TextDetector, chroma_frame, display_frame
from ._pixels import PixelRules, _blank, blank, decode_pixels, store_pixels
from ._record import BURNED_IN_MODALITIES, _burned_in_iod, _text
from ._tables import iod_for_sop_class

__all__ = ["BURNED_IN_TEXT_ACTIONS", "SEARCHED_MODALITIES", "PixelReport", "clean_pixels",
           "decoded_frames", "risk_reasons"]  # fmt: skip

#: What is done with burned-in text OCR finds: blank it, or fail (quarantine) the instance.
BURNED_IN_TEXT_ACTIONS = ("blank", "quarantine")
#: Modalities searched for text besides `BURNED_IN_MODALITIES`: X-ray angiography and
#: fluoroscopy, endoscopy (their screens carry names, dates and annotations).
SEARCHED_MODALITIES = BURNED_IN_MODALITIES | {"XA", "RF", "ES"}
_PIXEL_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)
_BURNED_IN_ANNOTATION = 0x00280301


def risk_reasons(ds: Dataset) -> list[str]:
    """Why the pixels of ``ds`` are searched for burned-in text under Clean Pixel Data.

    Returns
    -------
    list of str
        Empty when there is no reason: no pixel data, or Burned In Annotation ``NO`` on an
        image of a modality and SOP Class that do not usually carry text.

    Examples
    --------
    >>> ds = Dataset(); ds.Modality = "CT"; ds.PixelData = b"\\0\\0"
    >>> risk_reasons(ds)
    ['Burned In Annotation is absent']
    >>> ds.BurnedInAnnotation = "NO"; risk_reasons(ds)
    []
    """
    if not any(tag in ds for tag in _PIXEL_TAGS):
        return []
    reasons = []
    annotation = _text(ds, "BurnedInAnnotation")
    if annotation == "YES":
        reasons.append("Burned In Annotation is YES")
    elif not annotation:
        reasons.append("Burned In Annotation is absent")
    modality = _text(ds, "Modality")
    if modality in SEARCHED_MODALITIES:
        reasons.append(f"modality {modality} often carries burned-in text")
    ciod = iod_for_sop_class(_text(ds, "SOPClassUID"))
    if _burned_in_iod(ciod):
        reasons.append(f"{ciod} instances often carry burned-in text")
    return reasons


@dataclass
class PixelReport:
    """What Clean Pixel Data did to one instance: filled in by `clean_pixels`.

    Attributes
    ----------
    frames : int
        Frames of the image.
    rule_rectangles : int
        Rectangles of the pixel rule table blanked in every frame.
    searched : int
        Frames searched by OCR (0: the image gave no reason to search it).
    found : dict
        ``frame -> [(x, y, w, h), ...]``: what OCR found and was blanked (margins included).
    residual : dict
        ``frame -> text``: what OCR still reads in a frame after blanking it.
    reasons : list of str
        Why the image was searched (`risk_reasons`).
    """

    frames: int = 0
    rule_rectangles: int = 0
    searched: int = 0
    found: dict[int, list[tuple[int, int, int, int]]] = field(default_factory=dict)
    residual: dict[int, str] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)

    @property
    def boxes(self) -> int:
        """Boxes OCR found, over all frames."""
        return sum(len(boxes) for boxes in self.found.values())

    def counts(self) -> dict[str, Any]:
        """The manifest's view: numbers, and per frame the boxes blanked and residual text.

        The text OCR read in the blanked boxes is not recorded (it is what was removed); the
        residual text is, since a reviewer has to see it. Keep the manifest private, as always.
        """
        counts: dict[str, Any] = {}
        if self.rule_rectangles:
            counts["pixels.rule_rectangles"] = self.rule_rectangles
        if self.searched:
            counts["ocr.frames"] = self.searched
            counts["ocr.boxes"] = self.boxes
            counts["ocr.frames_with_text"] = len(self.found)
            counts["ocr.residual_frames"] = len(self.residual)
        frames = sorted(set(self.found) | set(self.residual))
        if frames:
            counts["ocr.found"] = [
                {
                    "frame": frame,
                    "boxes": [list(b) for b in self.found.get(frame, [])],
                    "residual": self.residual.get(frame, ""),
                }  # fmt: skip
                for frame in frames
            ]
        return counts


def _views(frame: np.ndarray, photometric: str, ds: Dataset) -> tuple[np.ndarray, str]:
    """One stored frame as a reader sees it: palette colour through its tables (8-bit RGB)."""
    if photometric != "PALETTE COLOR":
        return frame, photometric
    from pydicom.pixels import apply_color_lut

    rgb = apply_color_lut(frame, ds)
    if rgb.dtype != np.uint8:
        top = float(rgb.max()) or 1.0
        rgb = np.rint(rgb * (255.0 / max(top, 255.0))).astype(np.uint8)
    return rgb, "RGB"


def decoded_frames(ds: Dataset) -> tuple[np.ndarray, str]:
    """Every frame of ``ds`` as a reader sees it: ``(frames, rows, columns[, 3])`` and the
    Photometric Interpretation of the result.

    Colour (YCbCr, palette) comes back as RGB; grey stays in stored values (MONOCHROME1 or 2).

    Raises
    ------
    DeidentificationError
        The pixel data cannot be decoded.
    """
    arr, fmt, _ = decode_pixels(ds)
    frames = arr if fmt.number_of_frames > 1 else arr[np.newaxis]
    if fmt.photometric_interpretation != "PALETTE COLOR":
        return frames, fmt.photometric_interpretation
    shown = [_views(frame, "PALETTE COLOR", ds)[0] for frame in frames]
    return np.stack(shown), "RGB"


class _Searcher:
    """OCR of the frames of one image, each distinct frame once."""

    def __init__(self, detector: TextDetector, photometric: str, ds: Dataset) -> None:
        self.detector = detector
        self.photometric = photometric
        self.ds = ds
        self.seen: dict[bytes, list[TextBox]] = {}

    def __call__(self, frame: np.ndarray) -> list[TextBox]:
        key = hashlib.blake2b(np.ascontiguousarray(frame).tobytes(), digest_size=16).digest()
        if key not in self.seen:
            shown, photometric = _views(frame, self.photometric, self.ds)
            views = [display_frame(shown, photometric)]
            if shown.ndim == 3:
                views.append(chroma_frame(shown))
            self.seen[key] = self.detector.find_in_views(views)
        return self.seen[key]


def clean_pixels(
    src: Dataset,
    out: Dataset,
    *,
    rules: PixelRules,
    reasons: list[str],
    detector: TextDetector,
    action: str = "blank",
    report: PixelReport | None = None,
) -> bool:
    """Clean the pixels of ``src`` into ``out``: rule rectangles, then OCR if ``reasons``.

    Parameters
    ----------
    src, out : Dataset
        The original (not modified) and its de-identified copy (receives the pixel data).
    rules : PixelRules
        The pixel rule table.
    reasons : list of str
        Why the image may show text (`risk_reasons`); empty: OCR is not run.
    detector : TextDetector
        The OCR settings.
    action : {"blank", "quarantine"}
        What to do with text OCR finds.
    report : PixelReport, optional
        Receives what was done.

    Returns
    -------
    bool
        Whether pixels were blanked and no text is left that OCR can read (the instance may
        then claim Clean Pixel Data and Burned In Annotation ``NO``).

    Raises
    ------
    DeidentificationError
        The pixels cannot be decoded; OCR found text and ``action`` is ``"quarantine"``.
    TextDetectionError
        OCR is needed but Tesseract is missing or fails.
    """
    if action not in BURNED_IN_TEXT_ACTIONS:
        raise ValueError(f"burned-in text action must be one of {BURNED_IN_TEXT_ACTIONS}")
    report = report if report is not None else PixelReport()
    rectangles = rules.rectangles_for(src) if 0x7FE00010 in src else ()
    if not rectangles and not reasons:
        return False
    arr, fmt, syntax = decode_pixels(src)
    frames = arr if fmt.number_of_frames > 1 else arr[np.newaxis]
    report.frames, report.reasons = len(frames), list(reasons)
    if rectangles:
        blank(arr, fmt, rectangles)
        report.rule_rectangles = len(rectangles)
    found: dict[int, list[TextBox]] = {}
    if reasons:
        search = _Searcher(detector, fmt.photometric_interpretation, src)
        for index, frame in enumerate(frames):
            boxes = search(frame)
            report.searched += 1
            if boxes:
                found[index] = boxes
                if action == "quarantine":
                    _quarantine(index, boxes, len(frames))
        if len(frames) > 1 and found:
            found = _still(frames, found)
        for index, boxes in sorted(found.items()):
            _blank(frames[index], [b.blank for b in boxes], fmt.samples_per_pixel,
                   fmt.photometric_interpretation)  # fmt: skip
            report.found[index] = [b.blank for b in boxes]
            left = search(frames[index])
            if left:
                report.residual[index] = " | ".join(b.text for b in left)
    if not rectangles and not found:
        return False  # searched and nothing found: the pixel data is copied as it was
    store_pixels(out, arr, fmt, syntax)
    return not report.residual


def _still(frames: np.ndarray, found: dict[int, list[TextBox]]) -> dict[int, list[TextBox]]:
    """Boxes found in one frame of a loop also blanked in every other frame where their
    pixels are the same (a still overlay OCR missed there), within 2 % of the value range."""
    top = float(frames.max()) - float(frames.min()) or 1.0
    grown = {index: list(boxes) for index, boxes in found.items()}
    for index, boxes in found.items():
        for box in boxes:
            x, y, w, h = box.blank
            here = frames[index][y : y + h, x : x + w].astype(np.float64)
            for other in range(len(frames)):
                if other == index or any(
                    _overlap(box.blank, b.blank) for b in grown.get(other, [])
                ):
                    continue
                there = frames[other][y : y + h, x : x + w].astype(np.float64)
                if float(np.mean(np.abs(there - here))) <= 0.02 * top:
                    grown.setdefault(other, []).append(box)
    return grown


def _overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    """Whether one rectangle covers most (80 %) of the other."""
    width = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    height = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    return width > 0 and height > 0 and width * height >= 0.8 * min(a[2] * a[3], b[2] * b[3])


def _quarantine(index: int, boxes: list[TextBox], count: int) -> None:
    x, y, w, h = boxes[0].rectangle
    raise DeidentificationError(
        f"burned-in text found by OCR in frame {index + 1} of {count} ({len(boxes)} line(s), "
        f"the first at x={x}, y={y}, {w} x {h} pixels); quarantined by the burned-in text "
        "policy (choose 'blank' to blank it instead)"
    )
