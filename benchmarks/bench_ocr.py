"""Burned-in text benchmark: how much planted text the OCR detector finds, and what it costs.

Data: frames of real corpus images (XA, US, MR, CT, DX, RT and test-pattern frames that hold no
text of their own; ultrasound frames are cropped to their image sector) with text drawn by
Pillow at known places (``planted_set``), and the same kind of frames without text
(``clean_set``). The text is written into the stored pixel values, so the detector sees what a
DICOM file would hold: 16-bit grey levels, RGB, MONOCHROME1. It varies in

* font: DejaVu Sans, Sans Bold, Sans Mono, Serif (Debian ``fonts-dejavu-core``), Pillow's
  scalable default (Aileron) and its fixed bitmap font;
* size: 10 to 40 pixels;
* contrast: white (the top of the stored range), grey (60 % of the frame's range), low (the
  local background plus a step, or minus it where the background is bright: 18 % of the range,
  and at least twice the standard deviation of the background under the box, so that the text
  stays legible on speckle and texture), and colours on RGB frames;
* position: the four corners, the four edges and the middle.

A planted box counts as found when the detector's blanked area (its boxes, margins included)
covers at least 80 % of the box's pixels. A clean frame counts as altered when the detector
returns any box for it. frames/s is the number of frames searched (planted and clean) per
second of detection, in this one process (``OMP_THREAD_LIMIT=1``: one core).

Targets (issue 13, item 4): recall >= 0.95 of the planted boxes, <= 10 % of the clean frames
altered.

Usage (from the repository root)::

    .venv/bin/python benchmarks/bench_ocr.py                 # 200 planted frames, 60 clean
    .venv/bin/python benchmarks/bench_ocr.py --planted 40 --clean 20 --seed 1
    .venv/bin/python benchmarks/bench_ocr.py --misses .bench/ocr-misses   # PNGs of the misses

``tests/anonymize/test_ocr.py`` imports this file by path for its smaller set.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from _summary import record  # benchmarks/ is on sys.path when run as a script

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DICOMFLOW_SHARED", REPO.parent / "shared"))
FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")
FONTS = ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSansMono.ttf", "DejaVuSerif.ttf",
         "pillow", "bitmap")  # fmt: skip
POSITIONS = ("top-left", "top-right", "bottom-left", "bottom-right", "top", "bottom", "left",
             "right", "middle")  # fmt: skip
CONTRASTS = ("white", "grey", "low", "colour")
COVERED = 0.8  # share of a planted box the blanked area must cover for it to count as found

#: (corpus path, frames to use, crop (top, left, bottom, right) or None): frames without text.
BACKGROUNDS: tuple[tuple[str, tuple[int, ...], tuple[int, int, int, int] | None], ...] = (
    ("modality/XA/fo-dicom_HasFragmentSequence.dcm", (5, 30, 60, 90), None),
    ("encapsulation/IM00001.fragmented_no_bot_jpeg_baseline.50.dcm", (0, 3, 6), None),
    ("transfer-syntax/explicit-vr-le/examples_ybr_color.dcm", (0, 10, 20, 29), (20, 60, 220, 280)),
    ("transfer-syntax/jpeg-extended/JPEGExtended_3s_1f_u_08_08.dcm", (0,), (60, 100, 540, 580)),
    ("multiframe/fo-dicom_MOVEKNEE.dcm", (2, 9, 15), None),
    ("series/dcm_qa_ts/2.dcm", (0,), None),
    ("transfer-syntax/deflated/image_dfl.dcm", (0,), None),
    ("encapsulation/CT0012.not_fragmented_bot_rle.dcm", (0, 1), None),
    ("modality/DX/highdicom_dx_image.dcm", (0,), None),
    ("transfer-syntax/explicit-vr-le/examples_overlay.dcm", (0,), None),
    ("transfer-syntax/jpeg2000-lossless/JPEG2KLossless_1s_1f_u_16_16.dcm", (0,), None),
    ("modality/MR/tcia_acrin-flt-breast_3.dcm", (0,), None),
    ("transfer-syntax/jpeg-lossless-p14/JPEGLossless_1s_1f_u_16_12.dcm", (0,), None),
    ("modality/RTIMAGE/fo-dicom_RI6XDosiGap.dcm", (0,), None),
)

_FIRST = ("JANE", "JOHN", "MARIA", "AHMED", "LI", "OLGA", "PIERRE", "SOPHIE", "KENJI", "ANNA")
_LAST = ("DOE", "SMITH", "BERNARD", "NGUYEN", "KOWALSKI", "GARCIA", "MUELLER", "OKAFOR",
         "ROSSI", "JOHANSSON")  # fmt: skip
_PLACES = ("ST MARY HOSPITAL", "Hopital Cardio Lyon", "City Clinic Rad 2", "General Hosp. US3",
           "Northside Imaging")  # fmt: skip


@dataclass
class Sample:
    """One frame to search: stored pixel values, how to show them, and the planted boxes."""

    frame: np.ndarray
    photometric: str
    source: str
    boxes: list[tuple[int, int, int, int]] = field(default_factory=list)  # x, y, w, h
    texts: list[str] = field(default_factory=list)
    specs: list[str] = field(default_factory=list)  # font/size/contrast/position of each box
    bits_stored: int = 8


def _text(rng: random.Random) -> str:
    kind = rng.randrange(6)
    if kind == 0:
        return f"{rng.choice(_LAST)}^{rng.choice(_FIRST)}"
    if kind == 1:
        return f"{rng.choice(_LAST)}, {rng.choice(_FIRST).title()}"
    if kind == 2:
        return f"ID {rng.randrange(10**6, 10**8)}"
    if kind == 3:
        day, month, year = rng.randrange(1, 29), rng.randrange(1, 13), rng.randrange(1940, 2025)
        return rng.choice((f"{day:02d}/{month:02d}/{year}", f"DOB {year}-{month:02d}-{day:02d}",
                           f"{day:02d}.{month:02d}.{year} {rng.randrange(24):02d}:"
                           f"{rng.randrange(60):02d}"))  # fmt: skip
    if kind == 4:
        return rng.choice(_PLACES)
    return f"Acc {rng.choice('ABCX')}{rng.randrange(10**5, 10**7)}"


def _font(name: str, size: int):
    from PIL import ImageFont

    if name == "bitmap":
        return ImageFont.load_default_imagefont()
    if name == "pillow":
        return ImageFont.load_default(size=size)
    return ImageFont.truetype(str(FONT_DIR / name), size)


def load_backgrounds(corpus: Path | None = None) -> list[Sample]:
    """The text-free corpus frames of `BACKGROUNDS`, decoded to stored values (colour as RGB)."""
    import pydicom

    from dicomflow.anonymize import decoded_frames

    corpus = corpus or SHARED / "corpus"
    found = []
    for relative, indexes, crop in BACKGROUNDS:
        path = corpus / relative
        if not path.is_file():
            continue
        ds = pydicom.dcmread(path)
        frames, photometric = decoded_frames(ds)
        for index in indexes:
            frame = frames[min(index, len(frames) - 1)]
            if crop is not None:
                top, left, bottom, right = crop
                frame = frame[top:bottom, left:right]
            bits = int(ds.get("BitsStored", 8) or 8)
            found.append(Sample(np.ascontiguousarray(frame), photometric, f"{relative}#{index}",
                                bits_stored=bits))  # fmt: skip
    if not found:
        raise FileNotFoundError(f"no background image of the OCR benchmark under {corpus}")
    return found


def _place(position: str, size: tuple[int, int], box: tuple[int, int], rng: random.Random):
    rows, columns = size
    w, h = box
    pad = rng.randrange(2, 12)
    x = {"left": pad, "right": columns - w - pad}.get(position.split("-")[-1], None)
    y = {"top": pad, "bottom": rows - h - pad}.get(position.split("-")[0], None)
    if x is None:
        x = (columns - w) // 2 + rng.randrange(-columns // 8, columns // 8 + 1)
    if y is None:
        y = (rows - h) // 2 + rng.randrange(-rows // 8, rows // 8 + 1)
    return max(0, min(x, columns - w)), max(0, min(y, rows - h))


def _value(sample: Sample, contrast: str, area: np.ndarray, rng: random.Random) -> np.ndarray:
    """The stored value (per sample) of the text's pixels."""
    frame = sample.frame
    colour = frame.ndim == 3
    if np.issubdtype(frame.dtype, np.integer):
        top = float(np.iinfo(frame.dtype).max if frame.dtype.itemsize == 1
                    else (1 << sample.bits_stored) - 1)  # fmt: skip
    else:
        top = float(frame.max())
    low, high = float(frame.min()), float(frame.max())
    bright = sample.photometric != "MONOCHROME1"  # the value that shows bright
    if contrast == "colour" and colour:
        choices = ((255, 255, 0), (0, 255, 255), (0, 255, 0), (255, 128, 0), (255, 64, 255))
        return np.array(rng.choice(choices), dtype=np.float64)
    if contrast in ("white", "colour"):
        value = top if bright else low
    elif contrast == "grey":
        value = low + (high - low) * 0.6 if bright else low + (high - low) * 0.4
    else:  # low contrast: the smallest step a reader still makes out (see the docstring)
        local = float(np.median(area))
        step = max((high - low) * 0.18, 2.0 * float(np.std(area)))
        value = local + step if local + step <= high else local - step
    return np.full(3 if colour else 1, value)


def _draw(sample: Sample, rng: random.Random, used: list[tuple[int, int, int, int]]) -> bool:
    """Plant one line of text in ``sample``; False if there was no room."""
    from PIL import Image, ImageDraw

    rows, columns = sample.frame.shape[:2]
    text = _text(rng)
    name = rng.choice(FONTS)
    size = rng.randrange(10, 41)
    size = min(size, max(10, rows // 6))
    font = _font(name, size)
    left, top, right, bottom = ImageDraw.Draw(Image.new("L", (1, 1))).textbbox(
        (0, 0), text, font=font
    )
    while right - left > columns - 8 and len(text) > 4:
        text = text[: len(text) * 2 // 3].rstrip()
        left, top, right, bottom = font.getbbox(text)
    w, h = right - left, bottom - top
    if w > columns - 4 or h > rows - 4:
        return False
    position = rng.choice(POSITIONS)
    x, y = _place(position, (rows, columns), (w, h), rng)
    box = (x, y, w, h)
    if any(_overlap(box, other) for other in used):
        return False
    mask = Image.new("L", (columns, rows), 0)
    ImageDraw.Draw(mask).text((x - left, y - top), text, fill=255, font=font)
    alpha = np.asarray(mask, dtype=np.float64) / 255.0
    if not alpha.any():
        return False
    ys, xs = np.nonzero(alpha > 0.25)
    box = (int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1))
    contrast = rng.choice(CONTRASTS)
    area = sample.frame[y : y + h, x : x + w]
    value = _value(sample, contrast, area, rng)
    frame = sample.frame.astype(np.float64)
    if frame.ndim == 3:
        frame = frame * (1 - alpha[..., None]) + value * alpha[..., None]
    else:
        frame = frame * (1 - alpha) + value[0] * alpha
    info = np.iinfo(sample.frame.dtype) if np.issubdtype(sample.frame.dtype, np.integer) else None
    if info is not None:
        frame = np.clip(np.rint(frame), info.min, info.max)
    sample.frame = frame.astype(sample.frame.dtype)
    sample.boxes.append(box)
    sample.texts.append(text)
    sample.specs.append(f"{name}/{size}px/{contrast}/{position}")
    used.append(box)
    return True


def _overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int], gap: int = 6) -> bool:
    return not (a[0] + a[2] + gap <= b[0] or b[0] + b[2] + gap <= a[0]
                or a[1] + a[3] + gap <= b[1] or b[1] + b[3] + gap <= a[1])  # fmt: skip


def planted_set(n: int, seed: int = 0, corpus: Path | None = None) -> list[Sample]:
    """``n`` background frames with one to three lines of text each, at known boxes."""
    rng = random.Random(seed)
    backgrounds = load_backgrounds(corpus)
    samples = []
    for index in range(n):
        bg = backgrounds[index % len(backgrounds)]
        sample = Sample(bg.frame.copy(), bg.photometric, bg.source, bits_stored=bg.bits_stored)
        used: list[tuple[int, int, int, int]] = []
        wanted = rng.randrange(1, 4)
        for _ in range(wanted * 4):
            if len(sample.boxes) == wanted:
                break
            _draw(sample, rng, used)
        if sample.boxes:
            samples.append(sample)
    return samples


def clean_set(n: int, corpus: Path | None = None) -> list[Sample]:
    """``n`` background frames without text (the backgrounds in turn, then flipped copies)."""
    backgrounds = load_backgrounds(corpus)
    samples = []
    for index in range(n):
        bg = backgrounds[index % len(backgrounds)]
        frame = bg.frame
        turn = index // len(backgrounds)
        if turn % 2:
            frame = frame[:, ::-1]
        if turn % 4 >= 2:
            frame = frame[::-1]
        samples.append(Sample(np.ascontiguousarray(frame), bg.photometric,
                              f"{bg.source}/flip{turn}", bits_stored=bg.bits_stored))  # fmt: skip
    return samples


@dataclass
class Result:
    """What the detector did on a set: recall of planted boxes, clean frames altered, speed."""

    planted: int
    found: int
    clean: int
    altered: int
    frames: int
    seconds: float
    misses: list[tuple[Sample, int]] = field(default_factory=list)
    false_alarms: list[tuple[Sample, list]] = field(default_factory=list)

    @property
    def recall(self) -> float:
        return self.found / self.planted if self.planted else 1.0

    @property
    def altered_share(self) -> float:
        return self.altered / self.clean if self.clean else 0.0

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.seconds if self.seconds else float("inf")


def covered(box: tuple[int, int, int, int], blanked: Sequence[tuple[int, int, int, int]],
            shape: tuple[int, int]) -> float:  # fmt: skip
    """The share of ``box``'s pixels inside the union of ``blanked`` rectangles."""
    mask = np.zeros(shape, dtype=bool)
    for x, y, w, h in blanked:
        mask[max(0, y) : y + h, max(0, x) : x + w] = True
    x, y, w, h = box
    return float(mask[y : y + h, x : x + w].mean())


def measure(planted: Sequence[Sample], clean: Sequence[Sample]) -> Result:
    """Run the detector (``find_text`` with the default settings) on both sets."""
    from dicomflow.anonymize import TextDetector

    detector = TextDetector()
    result = Result(sum(len(s.boxes) for s in planted), 0, len(clean), 0, 0, 0.0)
    for sample in planted:
        start = time.perf_counter()
        found = detector.find_text(sample.frame, sample.photometric)
        result.seconds += time.perf_counter() - start
        result.frames += 1
        blanked = [b.blank for b in found]
        for index, box in enumerate(sample.boxes):
            if covered(box, blanked, sample.frame.shape[:2]) >= COVERED:
                result.found += 1
            else:
                result.misses.append((sample, index))
    for sample in clean:
        start = time.perf_counter()
        found = detector.find_text(sample.frame, sample.photometric)
        result.seconds += time.perf_counter() - start
        result.frames += 1
        if found:
            result.altered += 1
            result.false_alarms.append((sample, found))
    return result


def _save_misses(result: Result, folder: Path) -> None:
    from PIL import Image

    from dicomflow.anonymize import display_frame

    folder.mkdir(parents=True, exist_ok=True)
    for number, (sample, index) in enumerate(result.misses):
        image = display_frame(sample.frame, sample.photometric)
        x, y, w, h = sample.boxes[index]
        crop = image[max(0, y - 20) : y + h + 20, max(0, x - 20) : x + w + 20]
        Image.fromarray(crop).save(folder / f"miss-{number:03d}.png")
    for number, (sample, _boxes) in enumerate(result.false_alarms):
        Image.fromarray(display_frame(sample.frame, sample.photometric)).save(
            folder / f"false-{number:03d}.png"
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--planted", type=int, default=200, help="frames with text (200)")
    parser.add_argument("--clean", type=int, default=60, help="frames without text (60)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--corpus", type=Path, default=None)
    parser.add_argument("--misses", type=Path, default=None, help="write PNGs of misses here")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_THREAD_LIMIT", "1")
    planted = planted_set(args.planted, args.seed, args.corpus)
    clean = clean_set(args.clean, args.corpus)
    result = measure(planted, clean)
    print(f"planted boxes found: {result.found}/{result.planted} (recall {result.recall:.3f}; "
          f"target >= 0.95)")  # fmt: skip
    print(f"clean frames altered: {result.altered}/{result.clean} "
          f"({100 * result.altered_share:.1f} %; target <= 10 %)")  # fmt: skip
    print(f"speed: {result.frames} frames in {result.seconds:.1f} s "
          f"({result.frames_per_second:.2f} frames/s, one process)")  # fmt: skip
    record("ocr", "recall of planted boxes", result.recall, target=0.95, unit="ratio")
    record("ocr", "share of clean frames altered", result.altered_share, target=0.10,
           lower_is_better=True, unit="ratio")  # fmt: skip
    record("ocr", "speed", result.frames_per_second, unit="frames/s")
    for sample, index in result.misses:
        print(f"  missed {sample.texts[index]!r} ({sample.specs[index]}) at "
              f"{sample.boxes[index]} in {sample.source}")  # fmt: skip
    for sample, boxes in result.false_alarms:
        print(f"  altered clean {sample.source}: {[(b.text, b.rectangle) for b in boxes]}")
    if args.misses is not None:
        _save_misses(result, args.misses)
    return 0 if result.recall >= 0.95 and result.altered_share <= 0.10 else 1


if __name__ == "__main__":
    sys.exit(main())
