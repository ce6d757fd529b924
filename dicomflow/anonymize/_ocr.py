"""Burned-in text found by OCR: Tesseract over a display rendering of each frame.

The detector works on what a person would see, not on the stored values: a frame is rendered
to 8 bits (`display_frame`: grey levels stretched from the frame's minimum to its maximum,
MONOCHROME1 inverted, colour as its brightest channel so that text of any colour is bright),
enlarged so that small text reaches the size Tesseract reads best, and shown to Tesseract in
both polarities (bright text on dark and dark on bright), as pages of one multi-page TIFF, with
its local (Sauvola) thresholding and sparse-text page segmentation. Each word it reports is
kept when it is plausible text, not texture: confident enough, holding letters or digits,
and shaped like a word of that many characters. Words of one line are merged into one box.

Tesseract is the Debian ``tesseract-ocr`` program with ``tesseract-ocr-eng``; it is run as a
process (``OMP_THREAD_LIMIT=1``: one core each, the pipeline's process pool gives the
parallelism) reading the pages from standard input and writing TSV to standard output, so
nothing is written to disk and nothing is downloaded. It is looked for only when an image needs
it; `TextDetectionError` names the packages when it is missing.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from difflib import SequenceMatcher
from functools import cache

import numpy as np

from ..errors import TextDetectionError

__all__ = ["TextBox", "TextDetector", "chroma_frame", "display_frame", "find_text",
           "tesseract_version"]

Rectangle = tuple[int, int, int, int]

_PACKAGES = "apt-get install tesseract-ocr tesseract-ocr-eng"
_ALNUM = re.compile(r"[0-9A-Za-z\u00c0-\u024f]")
_TIMEOUT = 300
#: How much less sure Tesseract may be of a word of n letters and digits (index n).
_EASING = (0, 0, 0, 0, 15, 25, 25, 25, 35)


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
        low, high = int(grey.min()), int(grey.max())
        if low == 0 and high == 255:
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
    """How burned-in text is searched for (the settings of `find_text`); picklable.

    Parameters
    ----------
    min_confidence : float
        Words Tesseract is less sure of (0-100) do not count as text.
    margin : float
        Each box is blanked this share of its height beyond its edges (at least 2 pixels).
    min_height : int
        Text is expected from about this height in pixels (cap height of a 10-pixel font).
    language : str
        Tesseract's language data.
    program : str
        The Tesseract program (looked up on ``PATH``).

    Examples
    --------
    >>> TextDetector().margin
    0.3
    """

    min_confidence: float = 60.0
    margin: float = 0.3
    min_height: int = 7
    search_height: int = 14
    read_height: int = 40
    max_pixels: int = 3_000_000
    language: str = "eng"
    program: str = "tesseract"
    candidate_confidence: float = 20.0
    read_psm: int = 7
    reach: float = 12.0
    thresholding: int = 2
    strokes: bool = False
    agree_confidence: float = 30.0
    equalise: bool = True
    agree_characters: int = 3
    tile: int = 192
    overlap: int = 48
    stroke_width: int = 9

    # -- reading ---------------------------------------------------------------------------

    def scale(self, shape: tuple[int, ...]) -> float:
        """The enlargement of a frame of ``shape`` for the search pass."""
        rows, columns = shape[:2]
        scale = max(1.0, self.search_height / self.min_height)
        if rows * columns * scale * scale > self.max_pixels:
            scale = max(0.5, (self.max_pixels / (rows * columns)) ** 0.5)
        return scale

    def read(self, pages: list[np.ndarray], psm: int) -> list[_Word]:
        """Tesseract's words on each page (8-bit grey images), in one run of the program."""
        from PIL import Image

        if not pages:
            return []
        program = _tesseract(self.program, self.language)
        buffer = io.BytesIO()
        images = [Image.fromarray(p) for p in pages]
        images[0].save(buffer, format="TIFF", save_all=True, append_images=images[1:])
        command = [program, "stdin", "stdout", "-l", self.language, "--psm", str(psm),
                   "-c", f"thresholding_method={self.thresholding}", "tsv"]  # fmt: skip
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

    # -- judging -----------------------------------------------------------------------------

    def plausible(self, word: _Word) -> bool:
        """Whether a word Tesseract read looks like text rather than texture.

        The more letters and digits it has, the less sure Tesseract has to be (texture reads
        as short words); a run of one repeated letter (``SSS``, ``ee``: how speckle reads) is
        not text, nor a word much wider or narrower than its characters."""
        found = _ALNUM.findall(word.text)
        if not found or word.height < 4 or word.width < 2:
            return False
        if len({c.lower() for c in found}) == 1 and found[0].isalpha():
            return False
        if word.confidence < self.min_confidence - _EASING[min(len(found), len(_EASING) - 1)]:
            return False
        # a word of n characters is about n times as wide as high, give or take
        ratio = word.width / (word.height * len(word.text))
        return 0.15 <= ratio <= 2.5

    def convincing(self, words: list[_Word]) -> bool:
        """Whether the plausible words of one line make it text: enough letters and digits."""
        characters = sum(len(_ALNUM.findall(w.text)) for w in words)
        best = max((w.confidence for w in words), default=0.0)
        return characters >= 4 or (characters >= 3 and best >= 85)

    # -- finding -----------------------------------------------------------------------------

    def find_text(self, frame: np.ndarray, photometric: str = "MONOCHROME2") -> list[TextBox]:
        """The boxes of text in one frame of stored values; see `find_text`."""
        views = [display_frame(frame, photometric)]
        if frame.ndim == 3:
            views.append(chroma_frame(frame))
        return self.find_in_views(views)

    def find_in_views(self, views: list[np.ndarray]) -> list[TextBox]:
        """The boxes of text in 8-bit renderings of one frame (``display_frame`` and others)."""
        views = [v for v in views if v.size and int(v.min()) != int(v.max())]
        if not views:
            return []
        seeds, everything = self._search(views)
        lines = _merge_lines([self._complete(views, seed) for seed in seeds])
        kept = []
        for line in lines:
            if not any(self.strong(w, everything) for w in line.words):
                continue
            if _textured(line.words):
                continue
            text = " ".join(dict.fromkeys(w.text for w in line.words if _ALNUM.search(w.text)))
            confidence = max(w.confidence for w in line.words)
            kept.append(_Word(0, line.x0, line.y0, line.x1 - line.x0, line.y1 - line.y0,
                              confidence, text, (0, 0, 0, 0)))  # fmt: skip
        return _lines(kept, views[0].shape[:2], self.margin)

    def strong(self, word: _Word, words: list[_Word]) -> bool:
        """Whether a word of the search pass shows text on its own.

        It must be shaped like a word, not be one repeated letter (``SSS``, ``ee``: how
        speckle reads), and, the fewer letters and digits it has, the surer Tesseract must be
        of it and the more other pages (other tiles, polarities, views) must read it alike at
        the same place (`_agreeing`): four or more read with `min_confidence` or alike on two
        other pages; five or more alike on one other page and read with some confidence;
        three read with high confidence; two read with very high confidence on three pages."""
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
        return word.confidence >= self.min_confidence or agree >= 2

    def _search(self, views: list[np.ndarray]) -> list[_Line]:
        """Search pass: overlapping tiles of every view, each stretched to its own range, in
        both polarities; the words that may be text, as seeds."""
        scale = self.scale(views[0].shape)
        rows = views[0].shape[0]
        pages, sources = [], []
        for index, view in enumerate(views):
            for top, left, tile in _tiles(view, self.tile, self.overlap):
                grey = _resize(_stretch(tile), scale)
                pages += [255 - grey, grey]
                sources += [(index, top, left)] * 2
                if self.equalise:
                    grey = _resize(_equalise(tile), scale)
                    pages += [255 - grey]
                    sources += [(index, top, left)]
            if self.strokes and index == 0:
                pages.append(255 - _resize(stroke_frame(view, self.stroke_width), scale))
                sources.append((0, 0, 0))
        seeds, everything = [], []
        for word in self.read(pages, psm=11):
            if not _ALNUM.search(word.text):
                continue
            index, top, left = sources[word.page - 1]
            x0, y0 = left + int(word.left / scale), top + int(word.top / scale)
            x1 = left + int(np.ceil((word.left + word.width) / scale))
            y1 = top + int(np.ceil((word.top + word.height) / scale))
            found = _Word(word.page, x0, y0, x1 - x0, y1 - y0, word.confidence, word.text,
                          word.line)  # fmt: skip
            everything.append(found)
            if word.confidence < self.candidate_confidence:
                continue
            if y1 - y0 < self.min_height * 0.5 or y1 - y0 > rows / 2:
                continue
            ink = _ink(views[index][y0:y1, x0:x1])
            if ink is None:
                continue
            seeds.append(_Line(x0, y0, x1, y1, index, *ink, (found,)))
        return seeds, everything

    def _complete(self, views: list[np.ndarray], seed: _Line) -> _Line:
        """A seed word grown along its line over pixels of its ink (the rest of the line)."""
        view = views[seed.view]
        h = seed.y1 - seed.y0
        band = view[seed.y0 : seed.y1].astype(np.int16)
        columns = (np.abs(band - seed.level) <= seed.tolerance).any(axis=0)
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
                     seed.words)  # fmt: skip

    def _confirm(self, views: list[np.ndarray], lines: list[_Line]) -> list[TextBox]:
        """Reading pass: each line read again, alone, enlarged to `read_height`: its ink black
        on white, and its grey levels with the ink dark. A line is kept when the two passes
        read the same letters and digits in it (texture reads differently every time)."""
        pages, places = [], []
        for line in lines:
            h = line.y1 - line.y0
            top, bottom = max(0, line.y0 - h // 3), min(views[0].shape[0], line.y1 + h // 3)
            left, right = max(0, line.x0 - h // 2), min(views[0].shape[1], line.x1 + h // 2)
            crop = views[line.view][top:bottom, left:right]
            scale = min(8.0, max(1.0, self.read_height / max(1, h)))
            grey = _resize(crop, scale)
            ink = np.abs(grey.astype(np.int16) - line.level) <= line.tolerance
            pages.append(np.pad(np.where(ink, 0, 255).astype(np.uint8), 16, constant_values=255))
            shown = _stretch(grey)
            if line.level > int(np.median(crop)):
                shown = 255 - shown
            pages.append(np.pad(shown, 16, mode="edge"))
            places += [(left, top, scale, 16)] * 2
        read: dict[int, list[_Word]] = {}
        for word in self.read(pages, psm=self.read_psm) if pages else []:
            read.setdefault((word.page - 1) // 2, []).append(word)
        kept = []
        for number, line in enumerate(lines):
            searched = [w for w in line.words if _ALNUM.search(w.text)]
            again = [w for w in read.get(number, []) if w.confidence >= self.agree_confidence]
            if not self._agree(searched, again):
                continue
            left, top, scale, pad = places[2 * number]
            x0, y0, x1, y1 = line.x0, line.y0, line.x1, line.y1
            for word in again:
                x0 = min(x0, int(left + (word.left - pad) / scale))
                y0 = min(y0, int(top + (word.top - pad) / scale))
                x1 = max(x1, int(np.ceil(left + (word.left + word.width - pad) / scale)))
                y1 = max(y1, int(np.ceil(top + (word.top + word.height - pad) / scale)))
            words = again or searched
            text = " ".join(dict.fromkeys(w.text for w in words))
            confidence = max(w.confidence for w in words)
            kept.append(_Word(0, x0, y0, x1 - x0, y1 - y0, confidence, text, (0, 0, 0, 0)))
        return _lines(kept, views[0].shape[:2], self.margin)

    def _agree(self, searched: list[_Word], again: list[_Word]) -> bool:
        """Whether the search pass and the reading pass read the same text in a line: a run
        of at least `agree_characters` letters and digits in common, not all one letter."""
        first = "".join(_ALNUM.findall("".join(w.text for w in searched))).upper()
        second = "".join(_ALNUM.findall("".join(w.text for w in again))).upper()
        if not first or not second:
            return False
        match = SequenceMatcher(None, first, second, autojunk=False).find_longest_match()
        common = first[match.a : match.a + match.size]
        if len(set(common)) < 2 and not common.isdigit():
            return False
        return match.size >= self.agree_characters


def _textured(words: tuple[_Word, ...]) -> bool:
    """Whether a line's words look like noise read as text: many of them, mostly fragments
    (fewer than three letters and digits, or read without confidence)."""
    distinct = {w.text for w in words}
    if len(distinct) <= 12:
        return False
    solid = [w for w in words if len(_ALNUM.findall(w.text)) >= 3 and w.confidence >= 50]
    return len(solid) < 0.3 * len(words)


def _agreeing(word: _Word, words: list[_Word]) -> int:
    """On how many other pages a word overlapping ``word`` reads three or more of its
    letters and digits in a row (all of them if it has fewer)."""
    text = "".join(_ALNUM.findall(word.text)).upper()
    pages = set()
    for other in words:
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


@dataclass(frozen=True)
class _Line:
    """A box of a view that may hold a line of text whose ink is ``level`` +- ``tolerance``,
    and the words the search pass read in it."""

    x0: int
    y0: int
    x1: int
    y1: int
    view: int
    level: int
    tolerance: int
    words: tuple[_Word, ...]

    def joins(self, other: _Line) -> bool:
        if self.view != other.view or abs(self.level - other.level) > self.tolerance:
            return False
        if self.x1 < other.x0 or other.x1 < self.x0:
            return False
        shared = min(self.y1, other.y1) - max(self.y0, other.y0)
        return shared > 0.5 * min(self.y1 - self.y0, other.y1 - other.y0)

    def union(self, other: _Line) -> _Line:
        return _Line(min(self.x0, other.x0), min(self.y0, other.y0), max(self.x1, other.x1),
                     max(self.y1, other.y1), self.view, self.level, self.tolerance,
                     self.words + other.words)  # fmt: skip


def _merge_lines(lines: list[_Line]) -> list[_Line]:
    """Lines that overlap on the same view and ink joined into one."""
    merged: list[_Line] = []
    for line in sorted(lines, key=lambda item: (item.view, item.y0, item.x0)):
        for number, other in enumerate(merged):
            if other.joins(line):
                merged[number] = other.union(line)
                break
        else:
            merged.append(line)
    return merged


def _ink(box: np.ndarray) -> tuple[int, int] | None:
    """The grey level of the text in a word's box and a tolerance around it (None: no ink).

    Text is drawn in one flat colour, brighter or darker than what is around it: its level is
    the commonest value on one side of the box's median (the background), the side where
    more pixels lie far from the background; the tolerance is half that distance."""
    if box.size == 0:
        return None
    values = box.ravel().astype(np.int16)
    background = int(np.median(values))
    best: tuple[float, int, int] | None = None
    for side in (values[values > background], values[values < background]):
        if side.size == 0:
            continue
        level = int(np.argmax(np.bincount(side // 4, minlength=64))) * 4 + 2
        distance = abs(level - background)
        tolerance = max(6, distance // 2)
        score = float(np.count_nonzero(np.abs(side - level) <= tolerance)) * distance
        if best is None or score > best[0]:
            best = (score, level, tolerance)
    return None if best is None or best[0] == 0 else (best[1], best[2])


def _tiles(image: np.ndarray, size: int, overlap: int):
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


def _equalise(tile: np.ndarray) -> np.ndarray:
    """A tile's histogram equalised: each grey level becomes the share of the tile's pixels
    at or below it. Faint text on a quiet background (few pixels, levels just above it)
    comes out bright."""
    counts = np.bincount(tile.ravel(), minlength=256)
    cumulative = np.cumsum(counts)
    first = int(cumulative[int(tile.min())])
    span = int(cumulative[-1]) - first
    if span <= 0:
        return tile
    table = np.clip(np.rint((cumulative - first) * (255.0 / span)), 0, 255).astype(np.uint8)
    return table[tile]


def _stretch(tile: np.ndarray) -> np.ndarray:
    """A tile stretched from its own minimum to its maximum."""
    low, high = int(tile.min()), int(tile.max())
    if high - low in (0, 255):
        return tile
    return np.rint((tile.astype(np.float32) - low) * (255.0 / (high - low))).astype(np.uint8)


def _run(image: np.ndarray, size: int, axis: int, largest: bool) -> np.ndarray:
    """The minimum (or maximum) of every run of ``size`` pixels along ``axis``, centred."""
    pad = [(0, 0), (0, 0)]
    pad[axis] = (size // 2, size - 1 - size // 2)
    windows = np.lib.stride_tricks.sliding_window_view(np.pad(image, pad, mode="edge"), size,
                                                       axis=axis)  # fmt: skip
    return windows.max(axis=-1) if largest else windows.min(axis=-1)


def stroke_frame(image: np.ndarray, width: int = 9) -> np.ndarray:
    """Thin bright and dark structures of an 8-bit image (white top-hat and black top-hat in a
    ``width`` square), stretched to 8 bits: strokes of text stand out, backgrounds vanish.

    Examples
    --------
    >>> image = np.full((20, 20), 100, np.uint8); image[8:11, 4:16] = 180
    >>> strokes = stroke_frame(image)
    >>> int(strokes[9, 10]), int(strokes[0, 0])
    (255, 0)
    """
    opened = _run(_run(_run(_run(image, width, 0, False), width, 1, False), width, 0, True),
                  width, 1, True)  # fmt: skip
    closed = _run(_run(_run(_run(image, width, 0, True), width, 1, True), width, 0, False),
                  width, 1, False)  # fmt: skip
    strokes = np.maximum(image.astype(np.int16) - opened, closed.astype(np.int16) - image)
    top = int(strokes.max())
    if top <= 0:
        return np.zeros(image.shape, np.uint8)
    return np.rint(strokes * (255.0 / top)).astype(np.uint8)


def chroma_frame(frame: np.ndarray) -> np.ndarray:
    """How coloured each pixel of an RGB frame is (max - min of its samples), 8-bit.

    Coloured text on a grey image (ultrasound, screen captures) is bright here and the grey
    image dark."""
    rgb = frame.astype(np.float64)
    spread = rgb.max(axis=-1) - rgb.min(axis=-1)
    top = float(spread.max())
    if top <= 0:
        return np.zeros(frame.shape[:2], np.uint8)
    return np.rint(spread * (255.0 / top)).astype(np.uint8)


def _near(a: _Word, b: _Word) -> bool:
    """Whether two words belong to one line of text (or overlap)."""
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
