"""Burned-in text found by OCR: Tesseract over renderings of each frame.

The detector works on what a reader would see, not on the stored values. A frame is rendered
to 8 bits (`display_frame`: grey levels stretched from the frame's minimum to its maximum,
MONOCHROME1 inverted, colour as its brightest sample so that text of any colour is bright;
colour frames also as `chroma_frame`, where coloured text on a grey image stands out). Then:

1. **Search.** Each rendering is cut into overlapping tiles (192 pixels, 48 overlapping), each
   tile stretched to its own range (faint text on a dark margin gets the full contrast) and
   to the range of each neighbourhood (`_local_range`: dim text beside bright anatomy),
   enlarged 2x (text from about 7 pixels high reaches the size Tesseract reads), and shown to
   Tesseract (the stretched tile in both polarities); a frame larger than a tile is also shown
   whole (lines wider than the overlap are cut on every tile), also stretched to the range of
   each neighbourhood of large text (faint large text). Text is drawn in one flat colour,
   which stands out of the smooth histogram of anatomy and speckle (`_flat_levels`): the
   pixels of each such grey level are also shown alone, black on white, as they are and
   with a 3 x 3 median filter (speckle of that level gone), at the size of the frame (large
   text over textured anatomy or ultrasound speckle, which Tesseract cannot tell from the
   strokes otherwise). All are pages of one multi-page TIFF read in sparse-text mode
   (``--psm 11``) with local (Sauvola) thresholding.
2. **Lines.** Each word read confidently, or alike on other pages, becomes a seed with the grey
   level of its ink (`_ink`: text is drawn in one flat colour); the seed grows left and right
   over pixels of that ink, across gaps up to its height, so that the rest of a line Tesseract
   read only in part is covered; pieces read beside a kept line, of its height, join it.
3. **Plausibility.** A line is kept only when one of its words is text on its own
   (`TextDetector.strong`): not one repeated letter (``SSS``, ``ee``: how ultrasound speckle
   reads), shaped like a word, and, the shorter it is, read with more confidence and alike on
   more other pages (tiles, polarities, renderings) at the same place, or it holds two words
   side by side read alike elsewhere (a line cut by tile edges). Lines of many fragments
   (noise read as text) are dropped unless one of their words is read surely (`_sure`). What
   is kept is blanked with a margin.

Tesseract is the Debian ``tesseract-ocr`` program with ``tesseract-ocr-eng``, run as a process
per frame (``OMP_THREAD_LIMIT=1``: one core; the pipeline's process pool gives the
parallelism) that reads the pages from standard input and writes TSV to standard output:
nothing is written to disk, nothing is downloaded. It is looked for only when an image needs
it; `TextDetectionError` names the packages when it is missing. Calling the program rather
than a binding (pytesseract, tesserocr) adds no Python dependency and lets all pages of a
frame share one start of the program (pytesseract starts it, and writes temporary files, per
image; tesserocr must be built against ``libtesseract-dev``).
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from difflib import SequenceMatcher
from functools import cache

import numpy as np

from ..errors import TextDetectionError

__all__ = ["TextBox", "TextDetector", "chroma_frame", "display_frame", "find_text",
           "tesseract_version"]  # fmt: skip

Rectangle = tuple[int, int, int, int]

_PACKAGES = "apt-get install tesseract-ocr tesseract-ocr-eng"
_ALNUM = re.compile(r"[0-9A-Za-z\u00c0-\u024f]")
_TIMEOUT = 300


@cache
def _tesseract(program: str, language: str) -> str:
    """The path of the Tesseract program, checked to have ``language``'s data (once per process)."""
    path = shutil.which(program)
    if path is None:
        raise TextDetectionError(
            f"burned-in text cannot be searched for: the Tesseract OCR program ({program!r}) is "
            f"not installed; install it with `{_PACKAGES}` (scripts/system-deps.sh does)"
        )
    try:
        listed = subprocess.run([path, "--list-langs"], capture_output=True, timeout=60,
                                check=False)  # fmt: skip
    except (OSError, subprocess.SubprocessError) as exc:
        raise TextDetectionError(f"burned-in text cannot be searched for: {path} fails: "
                                 f"{exc}") from exc  # fmt: skip
    languages = (listed.stdout + listed.stderr).decode("utf-8", "replace").split()
    if language not in languages:
        raise TextDetectionError(
            f"burned-in text cannot be searched for: Tesseract has no {language!r} language data; "
            f"install it with `{_PACKAGES}`"
        )
    return path


def tesseract_version(program: str = "tesseract") -> str:
    """The version Tesseract reports (``'5.3.0'``), or raise `TextDetectionError`."""
    path = _tesseract(program, "eng")
    shown = subprocess.run([path, "--version"], capture_output=True, timeout=60, check=False)
    words = (shown.stdout + shown.stderr).decode("utf-8", "replace").split()
    return words[1] if len(words) > 1 else "unknown"


# -- rendering --------------------------------------------------------------------------------


def display_frame(frame: np.ndarray, photometric: str = "MONOCHROME2") -> np.ndarray:
    """One frame as 8-bit grey levels for a reader: text of any colour or polarity shows.

    Parameters
    ----------
    frame : ndarray
        Stored values of one frame, ``(rows, columns)`` or ``(rows, columns, 3)`` RGB (decoded
        YCbCr and palette colour are RGB already); integer or float.
    photometric : str
        Photometric Interpretation of ``frame``; ``MONOCHROME1`` is inverted.

    Returns
    -------
    ndarray of uint8, (rows, columns)
        Grey levels stretched from the frame's minimum to its maximum; colour frames as the
        brightest of their three samples.

    Examples
    --------
    >>> display_frame(np.array([[0, 2048], [4095, 1024]], dtype=np.uint16)).tolist()
    [[0, 128], [255, 64]]
    """
    grey = frame.max(axis=-1) if frame.ndim == 3 else frame
    if grey.dtype == np.uint8 and photometric != "MONOCHROME1":
        if int(grey.min()) == 0 and int(grey.max()) == 255:
            return np.ascontiguousarray(grey)
    values = grey.astype(np.float64)
    if not np.isfinite(values).all():
        values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
    low, high = float(values.min()), float(values.max())
    span = high - low
    if span <= 0:
        return np.zeros(grey.shape, np.uint8)
    shown = np.rint((values - low) * (255.0 / span))
    if photometric == "MONOCHROME1":
        shown = 255.0 - shown
    return shown.astype(np.uint8)


def chroma_frame(frame: np.ndarray) -> np.ndarray:
    """How coloured each pixel of an RGB frame is (max - min of its samples), as 8 bits.

    Coloured text on a grey image (ultrasound, screen captures) is bright here and the grey
    image dark.

    Examples
    --------
    >>> chroma_frame(np.array([[[200, 200, 200], [255, 255, 0]]], dtype=np.uint8)).tolist()
    [[0, 255]]
    """
    rgb = frame.astype(np.float64)
    spread = rgb.max(axis=-1) - rgb.min(axis=-1)
    top = float(spread.max())
    if top <= 0:
        return np.zeros(frame.shape[:2], np.uint8)
    return np.rint(spread * (255.0 / top)).astype(np.uint8)


# -- boxes ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TextBox:
    """Text found in a frame: where, what Tesseract read, and what blanking covers.

    Attributes
    ----------
    rectangle : (x, y, w, h)
        The text's box in frame pixels (column and row of the top-left pixel, width, height).
    blank : (x, y, w, h)
        ``rectangle`` grown by the detector's margin, clipped to the frame: what is blanked.
    text : str
        What Tesseract read (the words of one line, joined by spaces).
    confidence : float
        The lowest word confidence of the line (0-100).
    """

    rectangle: Rectangle
    blank: Rectangle
    text: str
    confidence: float

    def record(self) -> dict[str, object]:
        """A JSON-ready description for the manifest."""
        return {"box": list(self.blank), "text": self.text, "confidence": round(self.confidence)}


@dataclass(frozen=True)
class _Word:
    page: int
    left: int
    top: int
    width: int
    height: int
    confidence: float
    text: str
    line: tuple[int, int, int, int]  # page, block, paragraph, line


def _parse_tsv(text: str) -> list[_Word]:
    words = []
    for row in text.splitlines()[1:]:
        cells = row.split("\t")
        if len(cells) != 12 or cells[0] != "5":
            continue
        word = cells[11].strip()
        if not word:
            continue
        try:
            numbers = [int(c) for c in cells[1:10]]
            confidence = float(cells[10])
        except ValueError:
            continue
        page, block, paragraph, line, _, left, top, width, height = numbers
        words.append(_Word(page, left, top, width, height, confidence, word,
                           (page, block, paragraph, line)))  # fmt: skip
    return words


# -- the detector -----------------------------------------------------------------------------


@dataclass(frozen=True)
class TextDetector:
    """How burned-in text is searched for (the settings of `find_text`); frozen, picklable.

    Parameters
    ----------
    min_confidence : float
        Confidence (0-100) with which Tesseract must read a word of four or more letters and
        digits for it to count as text without other pages reading it alike.
    margin : float
        Each box is blanked this share of its height beyond its edges (at least 2 pixels).
    min_height : int
        Text is expected from about this height in pixels (the capitals of a 10-pixel font).
    search_height : int
        The height such text is enlarged to for Tesseract.
    max_pixels : int
        Frames whose enlarged size would pass this are read at a smaller scale (at most
        halved), to bound the cost of one frame.
    tile, overlap : int
        Side of the search tiles and their overlap, in frame pixels.
    reach : float
        How far (in line heights) a seed may grow along its line.
    candidate_confidence : float
        Words read with less confidence are no seeds unless other pages read them alike (they
        still count as agreeing reads).
    long_word : int
        Words of this many letters and digits or more are text with confidence 50, or 30 and
        one agreeing page (noise seldom reads as a long word).
    equalise : bool
        Also search histogram-equalised tiles (off: the local-range tiles find what they
        found, at a quarter fewer pages).
    local : bool
        Also search tiles stretched to the range of each neighbourhood (`_local_range`: dim
        text next to bright anatomy).
    whole : int
        Frames larger than a tile are also read whole, at most this many pixels on their longer
        side (lines wider than the tiles' overlap are cut on every tile), also stretched to
        the range of each neighbourhood when `local` is on; 0: not. Pages of flat grey levels
        are shrunk to this size too.
    levels : int
        Up to this many grey levels of each rendering that its histogram shows as a flat
        colour (`_flat_levels`) are also read alone, as a black-on-white page of the frame's
        size and that page median-filtered; 0: not.
    language : str
        Tesseract's language data (``eng``, from ``tesseract-ocr-eng``).
    program : str
        The Tesseract program (looked up on ``PATH``).

    Examples
    --------
    >>> TextDetector().margin
    0.3
    >>> TextDetector().scale((240, 320))
    2.0
    """

    min_confidence: float = 80.0
    margin: float = 0.3
    min_height: int = 7
    search_height: int = 14
    max_pixels: int = 3_000_000
    tile: int = 192
    overlap: int = 48
    reach: float = 12.0
    candidate_confidence: float = 20.0
    long_word: int = 7
    equalise: bool = False
    local: bool = True
    whole: int = 1024
    levels: int = 4
    language: str = "eng"
    program: str = "tesseract"

    def scale(self, shape: tuple[int, ...]) -> float:
        """The enlargement of a frame of ``shape`` for the search."""
        rows, columns = shape[:2]
        scale = max(1.0, self.search_height / self.min_height)
        if rows * columns * scale * scale > self.max_pixels:
            scale = max(0.5, (self.max_pixels / (rows * columns)) ** 0.5)
        return scale

    def read(self, pages: list[np.ndarray], psm: int = 11) -> list[_Word]:
        """Tesseract's words on each page (8-bit grey images), in one run of the program.

        Raises
        ------
        TextDetectionError
            Tesseract or its language data is missing, or Tesseract fails.
        """
        from PIL import Image

        if not pages:
            return []
        program = _tesseract(self.program, self.language)
        buffer = io.BytesIO()
        images = [Image.fromarray(p) for p in pages]
        images[0].save(buffer, format="TIFF", save_all=True, append_images=images[1:])
        command = [program, "stdin", "stdout", "-l", self.language, "--psm", str(psm),
                   "-c", "thresholding_method=2", "tsv"]  # fmt: skip
        env = {**os.environ, "OMP_THREAD_LIMIT": "1"}
        try:
            done = subprocess.run(command, input=buffer.getvalue(), capture_output=True,
                                  env=env, timeout=_TIMEOUT, check=False)  # fmt: skip
        except (OSError, subprocess.SubprocessError) as exc:
            raise TextDetectionError(f"Tesseract failed: {type(exc).__name__}: {exc}") from exc
        if done.returncode != 0:
            message = done.stderr.decode("utf-8", "replace").strip().splitlines()
            raise TextDetectionError(
                f"Tesseract failed (exit {done.returncode}): {' / '.join(message[-3:])}"
            )
        return _parse_tsv(done.stdout.decode("utf-8", "replace"))

    def strong(self, word: _Word, words: list[_Word]) -> bool:
        """Whether a word of the search shows text on its own.

        It must be shaped like a word (about as wide as its characters), not be one repeated
        letter (``SSS``, ``ee``: how speckle reads), and the fewer letters and digits it has,
        the surer Tesseract must be and the more other pages must read it alike at the same
        place (`_agreeing`): two characters with confidence 90 and three agreeing pages; three
        with 90, or 75 and one agreeing page; four or more with `min_confidence` or two
        agreeing pages; five or more also with 40 and one agreeing page; `long_word` or more
        also with 50, or 30 and one agreeing page.
        """
        found = _ALNUM.findall(word.text)
        if len(found) < 2 or (len({c.lower() for c in found}) == 1 and found[0].isalpha()):
            return False
        ratio = word.width / (word.height * len(word.text))
        if not 0.15 <= ratio <= 2.5:
            return False
        agree = _agreeing(word, words)
        if len(found) == 2:
            return word.confidence >= 90 and agree >= 3
        if len(found) == 3:
            return word.confidence >= 90 or (word.confidence >= 75 and agree >= 1)
        if len(found) >= 5 and word.confidence >= 40 and agree >= 1:
            return True
        if len(found) >= self.long_word and word.confidence >= (30 if agree >= 1 else 50):
            return True
        return word.confidence >= self.min_confidence or agree >= 2

    def find_text(self, frame: np.ndarray, photometric: str = "MONOCHROME2") -> list[TextBox]:
        """The boxes of text in one frame of stored values; see `find_text`."""
        views = [display_frame(frame, photometric)]
        if frame.ndim == 3:
            views.append(chroma_frame(frame))
        return self.find_in_views(views)

    def find_in_views(self, views: list[np.ndarray]) -> list[TextBox]:
        """The boxes of text in 8-bit renderings of one frame (`display_frame` first)."""
        views = [v for v in views if v.size and int(v.min()) != int(v.max())]
        if not views:
            return []
        seeds, everything = self._search(views)
        lines = _merge_lines([self._grow(views, seed) for seed in seeds])
        kept, rest = [], []
        for line in lines:
            strong = [w for w in line.words if self.strong(w, everything)]
            text = " ".join(dict.fromkeys(w.text for w in line.words if _ALNUM.search(w.text)))
            confidence = max(w.confidence for w in line.words)
            y0, y1 = _inked_rows(views[line.view], line)
            box = _Word(0, line.x0, y0, line.x1 - line.x0, y1 - y0, confidence, text,
                        (0, 0, 0, 0))  # fmt: skip
            if not strong and not _corroborated(line.words, everything):
                rest.append(box)
            elif _textured(line.words, _height(strong)) and not any(map(_sure, strong)):
                continue
            else:
                kept.append(box)
        grown = True
        while grown and kept:  # the rest of a kept line: pieces read beside it, of its height
            beside = [b for b in rest if any(_continues(k, b) for k in kept)]
            kept += beside
            rest = [b for b in rest if b not in beside]
            grown = bool(beside)
        return _lines(kept, views[0].shape[:2], self.margin)

    def _search(self, views: list[np.ndarray]) -> tuple[list[_Line], list[_Word]]:
        """Every word Tesseract reads on the tiles of every view, in frame pixels, and those
        that are seeds of lines (confident enough, of a plausible height, with ink)."""
        scale = self.scale(views[0].shape)
        rows = views[0].shape[0]
        pages: list[np.ndarray] = []
        sources: list[tuple[int, int, int, float]] = []
        for index, view in enumerate(views):
            for top, left, tile in _tiles(view, self.tile, self.overlap):
                grey = _resize(_stretch(tile), scale)
                pages += [255 - grey, grey]
                sources += [(index, top, left, scale)] * 2
                if self.equalise:
                    pages.append(255 - _resize(_equalise(tile), scale))
                    sources.append((index, top, left, scale))
                if self.local:
                    pages.append(255 - _resize(_local_range(tile, self.min_height), scale))
                    sources.append((index, top, left, scale))
        for index, view in enumerate(views):  # lines wider than a tile's overlap: whole frames
            if max(view.shape) <= self.tile or not self.whole:
                continue
            shrink = min(1.0, self.whole / max(view.shape))
            grey = _resize(view, shrink)
            pages += [255 - grey, grey]
            sources += [(index, 0, 0, shrink)] * 2
            if self.local:
                pages.append(255 - _local_range(grey, 16))
                sources.append((index, 0, 0, shrink))
        for index, view in enumerate(views):  # text of one flat colour, over anatomy or speckle
            shrink = min(1.0, self.whole / max(view.shape)) if self.whole else 1.0
            for level in _flat_levels(view, self.levels):
                inked = np.abs(view.astype(np.int16) - level) <= 1
                page = _resize(np.where(inked, 0, 255).astype(np.uint8), shrink)
                pages += [page, _median(page)]
                sources += [(index, 0, 0, shrink)] * 2
        everything, views_of = _Reads(), []
        for word in self.read(pages, psm=11):
            if not _ALNUM.search(word.text):
                continue
            index, top, left, scale = sources[word.page - 1]
            x0, y0 = left + int(word.left / scale), top + int(word.top / scale)
            x1 = left + int(np.ceil((word.left + word.width) / scale))
            y1 = top + int(np.ceil((word.top + word.height) / scale))
            everything.append(_Word(word.page, x0, y0, x1 - x0, y1 - y0, word.confidence,
                                    word.text, word.line))  # fmt: skip
            views_of.append(index)
        seeds = []
        for found, index in zip(everything, views_of, strict=True):
            if found.height < self.min_height * 0.5 or found.height > rows / 2:
                continue
            if found.confidence < self.candidate_confidence and not self.strong(found, everything):
                continue  # an unsure read seeds a line only when other pages read it alike
            x0, y0 = found.left, found.top
            x1, y1 = x0 + found.width, y0 + found.height
            low, gain = _contrast(views[index][y0:y1, x0:x1])
            ink = _ink(views[index], (x0, y0, x1, y1), low, gain)
            if ink is not None:
                seeds.append(_Line(x0, y0, x1, y1, index, ink[0], ink[1], (found,), low, gain))
        return seeds, everything

    def _grow(self, views: list[np.ndarray], seed: _Line) -> _Line:
        """A seed grown along its line over columns holding its ink, across gaps up to its
        height (the rest of a line Tesseract read in part), at most `reach` heights."""
        view = views[seed.view]
        h = seed.y1 - seed.y0
        inked = np.abs(seed.shown(view[seed.y0 : seed.y1]) - seed.level) <= seed.tolerance
        columns = np.count_nonzero(inked, axis=0) > 0
        gap, limit = max(2, int(1.2 * h)), int(self.reach * h)
        last, x = seed.x1 - 1, seed.x1
        while x < min(view.shape[1], seed.x1 + limit) and x - last <= gap:
            if columns[x]:
                last = x
            x += 1
        first, x = seed.x0, seed.x0 - 1
        while x >= max(0, seed.x0 - limit) and first - x <= gap:
            if columns[x]:
                first = x
            x -= 1
        return _Line(first, seed.y0, last + 1, seed.y1, seed.view, seed.level, seed.tolerance,
                     seed.words, seed.low, seed.gain)  # fmt: skip


@dataclass(frozen=True)
class _Line:
    """A box of a view that may hold a line of text whose ink is ``level`` +- ``tolerance``,
    and the words the search read in it. Levels are of the view as `shown`: stretched from
    ``low`` by ``gain`` where the seed's word box spans few grey levels (`_contrast`)."""

    x0: int
    y0: int
    x1: int
    y1: int
    view: int
    level: int
    tolerance: int
    words: tuple[_Word, ...]
    low: int = 0
    gain: float = 1.0

    def shown(self, pixels: np.ndarray) -> np.ndarray:
        """``pixels`` of the line's view on the scale of its levels (int16)."""
        return _shown(pixels, self.low, self.gain)

    def joins(self, other: _Line) -> bool:
        if self.view != other.view or abs(self.level - other.level) > self.tolerance:
            return False
        if (self.low, self.gain) != (other.low, other.gain):
            return False
        if self.x1 < other.x0 or other.x1 < self.x0:
            return False
        shared = min(self.y1, other.y1) - max(self.y0, other.y0)
        return shared > 0.5 * min(self.y1 - self.y0, other.y1 - other.y0)

    def union(self, other: _Line) -> _Line:
        return _Line(min(self.x0, other.x0), min(self.y0, other.y0), max(self.x1, other.x1),
                     max(self.y1, other.y1), self.view, self.level, self.tolerance,
                     self.words + other.words, self.low, self.gain)  # fmt: skip


def _inked_rows(view: np.ndarray, line: _Line) -> tuple[int, int]:
    """The first and past-the-last row of a line's box, cut back to the rows that hold its
    ink when those are under half of it (a word box read far taller than its text)."""
    band = line.shown(view[line.y0 : line.y1, line.x0 : line.x1])
    rows = np.flatnonzero((np.abs(band - line.level) <= line.tolerance).any(axis=1))
    if rows.size == 0 or rows[-1] + 1 - rows[0] >= 0.5 * (line.y1 - line.y0):
        return line.y0, line.y1
    return line.y0 + int(rows[0]), line.y0 + int(rows[-1]) + 1


def _merge_lines(lines: list[_Line]) -> list[_Line]:
    """Lines that overlap on the same view with the same ink joined into one."""
    merged: list[_Line] = []
    for line in sorted(lines, key=lambda item: (item.view, item.y0, item.x0)):
        for number, other in enumerate(merged):
            if other.joins(line):
                merged[number] = other.union(line)
                break
        else:
            merged.append(line)
    return merged


def _shown(pixels: np.ndarray, low: int, gain: float) -> np.ndarray:
    """``pixels`` stretched from ``low`` by ``gain`` (`_contrast`), as int16."""
    if gain == 1.0 and low == 0:
        return pixels.astype(np.int16)
    stretched = (pixels.astype(np.float32) - low) * gain
    return np.clip(np.rint(stretched), -255, 510).astype(np.int16)


def _ink(
    view: np.ndarray, box: Rectangle, low: int = 0, gain: float = 1.0
) -> tuple[int, int] | None:
    """The grey level of the text in a word's box and a tolerance around it (None: no ink).

    ``box`` is ``(x0, y0, x1, y1)`` in ``view``, whose levels are taken stretched from ``low``
    by ``gain`` (`_contrast`). Text is drawn in one flat colour, brighter or darker than what
    is around it (the box's median): its level is where the pixels on one side of the
    background end (the 90th percentile of those brighter, the 10th of those darker: thin text
    is mostly its anti-aliased edge), taken on the side where more pixels lie far from the
    background, and never a level covering most of the box. A level that covers most of a
    ring two pixels wide around the box is the background (bold text filling most of its
    box): then the ring's median is taken as the background instead."""
    x0, y0, x1, y1 = box
    pixels = view[y0:y1, x0:x1]
    if pixels.size == 0:
        return None
    values = _shown(pixels, low, gain).ravel()
    found = _ink_from(values, int(np.median(values)))
    top, left = max(0, y0 - 2), max(0, x0 - 2)
    around = view[top : y1 + 2, left : x1 + 2]
    ring = np.ones(around.shape, bool)
    ring[y0 - top : y1 - top, x0 - left : x1 - left] = False
    if found is None or np.count_nonzero(ring) < 8:
        return found
    outside = _shown(around[ring], low, gain)
    if np.count_nonzero(np.abs(outside - found[0]) <= found[1]) <= 0.5 * outside.size:
        return found
    return _ink_from(values, int(np.median(outside)), bold=True)


def _ink_from(values: np.ndarray, background: int, bold: bool = False) -> tuple[int, int] | None:
    """`_ink` of a box's ``values`` against ``background``; ``bold``: the ink may cover most
    of the box."""
    best: tuple[float, int, int] | None = None
    for side, end in ((values[values > background], 90), (values[values < background], 10)):
        if side.size < 3:
            continue
        level = int(np.percentile(side, end))
        distance = abs(level - background)
        if distance < 8:
            continue
        tolerance = max(6, distance // 3)
        covered = np.count_nonzero(np.abs(values - level) <= tolerance)
        if not bold and covered > 0.6 * values.size:
            continue  # that is the background (a box mostly of bold text): not the ink
        score = float(np.count_nonzero(np.abs(side - level) <= tolerance)) * distance
        if best is None or score > best[0]:
            best = (score, level, tolerance)
    return None if best is None or best[0] == 0 else (best[1], best[2])


def _contrast(box: np.ndarray, few: int = 48) -> tuple[int, float]:
    """How a word's box is shown to find its ink: ``(low, gain)``, stretched from its minimum to
    its maximum when those are under ``few`` grey levels apart (faint text in a frame whose
    range other, brighter text or anatomy sets: the search read it on a stretched tile), else
    as it is ``(0, 1.0)``."""
    if box.size == 0:
        return 0, 1.0
    low, high = int(box.min()), int(box.max())
    if high - low >= few or high == low:
        return 0, 1.0
    return low, 255.0 / (high - low)


class _Reads(list[_Word]):
    """The words of a search, with their boxes as arrays (to find those overlapping a word
    without a loop over all of them)."""

    def boxes(self) -> np.ndarray:
        cached = self.__dict__.get("_boxes")
        if cached is None or len(cached) != len(self):
            cached = np.array([(w.left, w.top, w.left + w.width, w.top + w.height, w.page)
                               for w in self], dtype=np.int64).reshape(-1, 5)  # fmt: skip
            self.__dict__["_boxes"] = cached
        return cached


def _agreeing(word: _Word, words: list[_Word]) -> int:
    """On how many other pages a word overlapping ``word`` reads three or more of its
    letters and digits in a row (all of them if it has fewer)."""
    text = "".join(_ALNUM.findall(word.text)).upper()
    if isinstance(words, _Reads) and len(words):
        box = words.boxes()
        width = np.minimum(box[:, 2], word.left + word.width) - np.maximum(box[:, 0], word.left)
        height = np.minimum(box[:, 3], word.top + word.height) - np.maximum(box[:, 1], word.top)
        area = np.minimum((box[:, 2] - box[:, 0]) * (box[:, 3] - box[:, 1]),
                          word.width * word.height)  # fmt: skip
        near = (width > 0) & (height > 0) & (box[:, 4] != word.page)
        near &= width * height >= 0.3 * area
        candidates = [words[i] for i in np.flatnonzero(near)]
    else:
        candidates = words
    pages: set[int] = set()
    for other in candidates:
        if other.page == word.page or other.page in pages:
            continue
        width = min(word.left + word.width, other.left + other.width) - max(word.left, other.left)
        height = min(word.top + word.height, other.top + other.height) - max(word.top, other.top)
        if width <= 0 or height <= 0:
            continue
        if width * height < 0.3 * min(word.width * word.height, other.width * other.height):
            continue
        seen = "".join(_ALNUM.findall(other.text)).upper()
        match = SequenceMatcher(None, text, seen, autojunk=False).find_longest_match()
        if match.size >= min(3, len(text)):
            pages.add(other.page)
    return len(pages)


def _textured(words: tuple[_Word, ...], height: float) -> bool:
    """Whether a line's words look like noise read as text: more than 12 different ones of
    about ``height`` (that of its strong words; large text read on enlarged tiles comes out
    in fragments of other heights), mostly fragments (fewer than three letters and digits, or
    read without confidence)."""
    if height > 0:
        words = tuple(w for w in words if 0.6 * height <= w.height <= 1.6 * height)
    if len({w.text for w in words}) <= 12:
        return False
    solid = [w for w in words if len(_ALNUM.findall(w.text)) >= 3 and w.confidence >= 50]
    return len(solid) < 0.3 * len(words)


def _height(words: list[_Word]) -> float:
    """The median height of ``words`` (0 for none: then every word counts)."""
    return float(np.median([w.height for w in words])) if words else 0.0


def _corroborated(words: tuple[_Word, ...], everything: list[_Word]) -> bool:
    """Whether a line holds two or more words side by side, each read with confidence 40 or
    more and alike on another page, with five or more letters and digits in all (a line cut
    by tile edges, none of whose pieces is text on its own)."""
    pieces: list[tuple[int, int, int]] = []  # left, right, letters and digits
    for word in words:
        found = _ALNUM.findall(word.text)
        if word.confidence < 40 or len(found) < 2:
            continue
        if len({c.lower() for c in found}) == 1 and found[0].isalpha():
            continue
        if _agreeing(word, everything) < 1:
            continue
        right = word.left + word.width
        if any(left < right and word.left < end for left, end, _ in pieces):
            continue  # the same place read again
        pieces.append((word.left, right, len(found)))
    return len(pieces) >= 2 and sum(count for *_, count in pieces) >= 5


def _continues(line: _Word, piece: _Word) -> bool:
    """Whether ``piece`` (a line not kept on its own) continues a kept ``line``: of about its
    height, on its row, at most a height away."""
    if not 0.6 * line.height <= piece.height <= 1.6 * line.height:
        return False
    return _near(line, piece)


def _sure(word: _Word) -> bool:
    """Whether a word is read surely enough to outweigh the noise around it: four or more
    letters and digits read with confidence 80 or more."""
    return word.confidence >= 80 and len(_ALNUM.findall(word.text)) >= 4


def _near(a: _Word, b: _Word) -> bool:
    """Whether two boxes belong to one line of text (or overlap)."""
    shared = min(a.top + a.height, b.top + b.height) - max(a.top, b.top)
    if shared <= 0.5 * min(a.height, b.height):
        return False
    gap = max(a.left, b.left) - min(a.left + a.width, b.left + b.width)
    return gap <= 1.5 * max(a.height, b.height)


def _lines(words: list[_Word], shape: tuple[int, int], margin: float) -> list[TextBox]:
    """Words (in frame pixels) joined into lines: one box per group of near words."""
    groups: list[list[_Word]] = []
    for word in sorted(words, key=lambda w: (w.left, w.top)):
        joined = [g for g in groups if any(_near(word, other) for other in g)]
        for group in joined[1:]:
            joined[0].extend(group)
            groups.remove(group)
        if joined:
            joined[0].append(word)
        else:
            groups.append([word])
    rows, columns = shape
    found = []
    for group in groups:
        group.sort(key=lambda w: w.left)
        x0 = max(0, min(w.left for w in group))
        y0 = max(0, min(w.top for w in group))
        x1 = min(columns, max(w.left + w.width for w in group))
        y1 = min(rows, max(w.top + w.height for w in group))
        pad = max(2, int(np.ceil(margin * max(w.height for w in group))))
        bx0, by0 = max(0, x0 - pad), max(0, y0 - pad)
        bx1, by1 = min(columns, x1 + pad), min(rows, y1 + pad)
        text = " ".join(dict.fromkeys(w.text for w in group))
        found.append(TextBox((x0, y0, x1 - x0, y1 - y0), (bx0, by0, bx1 - bx0, by1 - by0),
                             text, min(w.confidence for w in group)))  # fmt: skip
    return sorted(found, key=lambda b: (b.rectangle[1], b.rectangle[0]))


def _tiles(image: np.ndarray, size: int, overlap: int) -> Iterator[tuple[int, int, np.ndarray]]:
    """``(top, left, tile)`` of overlapping tiles covering ``image`` (one if it is small)."""
    rows, columns = image.shape[:2]

    def starts(length: int) -> list[int]:
        if length <= size:
            return [0]
        count = int(np.ceil((length - overlap) / (size - overlap)))
        step = (length - size) / (count - 1)
        return [round(i * step) for i in range(count)]

    for top in starts(rows):
        for left in starts(columns):
            yield top, left, image[top : top + size, left : left + size]


def _stretch(tile: np.ndarray) -> np.ndarray:
    """A tile stretched from its own minimum to its maximum."""
    low, high = int(tile.min()), int(tile.max())
    if high - low in (0, 255):
        return tile
    return np.rint((tile.astype(np.float32) - low) * (255.0 / (high - low))).astype(np.uint8)


def _equalise(tile: np.ndarray) -> np.ndarray:
    """A tile's histogram equalised: each grey level becomes the share of the tile's pixels
    at or below it. Faint text on a flat background (few pixels just above it) comes out
    bright."""
    cumulative = np.cumsum(np.bincount(tile.ravel(), minlength=256))
    first = int(cumulative[int(tile.min())])
    span = int(cumulative[-1]) - first
    if span <= 0:
        return tile
    table = np.clip(np.rint((cumulative - first) * (255.0 / span)), 0, 255).astype(np.uint8)
    return table[tile]


def _local_range(tile: np.ndarray, height: int, floor: int = 40) -> np.ndarray:
    """A tile with each pixel stretched between the darkest and the brightest pixel near it
    (within about three text heights; blocks of ``2 * height``, and the eight blocks around).

    Dim text on a dark background next to bright anatomy comes out as bright as white text;
    a flat area whose range is under ``floor`` grey levels (noise) stays dark."""
    rows, columns = tile.shape
    block = max(4, 2 * height)
    down, across = -(-rows // block), -(-columns // block)
    padded = np.pad(tile, ((0, down * block - rows), (0, across * block - columns)), mode="edge")
    blocks = padded.reshape(down, block, across, block)
    high, low = blocks.max(axis=(1, 3)), blocks.min(axis=(1, 3))
    high, low = _spread(high, np.maximum), _spread(low, np.minimum)
    high = np.repeat(np.repeat(high, block, axis=0), block, axis=1)[:rows, :columns]
    low = np.repeat(np.repeat(low, block, axis=0), block, axis=1)[:rows, :columns]
    span = np.maximum(high.astype(np.float32) - low, floor)
    shown = (tile.astype(np.float32) - low) * (255.0 / span)
    return np.clip(np.rint(shown), 0, 255).astype(np.uint8)


def _flat_levels(view: np.ndarray, count: int, least: int = 40) -> list[int]:
    """Up to ``count`` grey levels that many more pixels of ``view`` hold exactly than the
    levels two and three away (at least ``least`` more): the flat colour burned-in text is
    drawn in, which stands out of the smooth histogram of anatomy and speckle. Levels holding
    more than 30 % of the view (its background) are left out."""
    if count <= 0:
        return []
    counts = np.bincount(view.ravel(), minlength=256).astype(np.int64)
    padded = np.pad(counts, 3)
    near = np.maximum.reduce([padded[3 + d : 259 + d] for d in (-3, -2, 2, 3)])
    excess = counts - near
    excess[counts > 0.3 * view.size] = 0
    order = np.argsort(excess, kind="stable")[::-1][:count]
    return [int(level) for level in order if excess[level] >= least]


def _median(page: np.ndarray) -> np.ndarray:
    """A page with a 3 x 3 median filter (isolated pixels of speckle gone, strokes kept)."""
    from PIL import Image, ImageFilter

    return np.asarray(Image.fromarray(page).filter(ImageFilter.MedianFilter(3)))


def _spread(grid: np.ndarray, pick: np.ufunc) -> np.ndarray:
    """Each cell of ``grid`` replaced by ``pick`` (max or min) of it and its eight neighbours."""
    padded = np.pad(grid, 1, mode="edge")
    out = grid.copy()
    for dy in range(3):
        for dx in range(3):
            out = pick(out, padded[dy : dy + grid.shape[0], dx : dx + grid.shape[1]])
    return out


def _resize(image: np.ndarray, scale: float) -> np.ndarray:
    from PIL import Image

    if scale == 1.0:
        return image
    picture = Image.fromarray(image)
    size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
    resample = Image.Resampling.BICUBIC if scale > 1 else Image.Resampling.BOX
    return np.asarray(picture.resize(size, resample))


def find_text(
    frame: np.ndarray, photometric: str = "MONOCHROME2", detector: TextDetector | None = None
) -> list[TextBox]:
    """The boxes of burned-in text Tesseract finds in one frame.

    Parameters
    ----------
    frame : ndarray
        Stored values of one frame, ``(rows, columns)`` or ``(rows, columns, 3)`` RGB.
    photometric : str
        Its Photometric Interpretation (``MONOCHROME1`` is shown inverted).
    detector : TextDetector, optional
        The settings (default: ``TextDetector()``).

    Returns
    -------
    list of TextBox
        One box per line of text, in frame pixels, with the margin to blank.

    Raises
    ------
    TextDetectionError
        Tesseract or its English data is not installed, or Tesseract fails.
    """
    return (detector or TextDetector()).find_text(frame, photometric)
