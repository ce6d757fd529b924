"""Clean Pixel Data (PS3.15 E.3.1): blank the regions where a device burns in text.

Which regions is data, not code: a rule table (``data/pixel-rules.csv``, or the caller's own
CSV in the same layout) maps Manufacturer / Manufacturer's Model Name (regular expressions,
matched case-insensitively against the whole value) and Rows / Columns (exact, empty for any)
to rectangles ``x,y,w,h`` (column and row of the top-left corner, width and height, in pixels;
several separated by ``;``). Every rule that matches an image applies.

Blanking works on the stored pixel values: the pixel data is decoded with pydicom, each
rectangle of every frame is filled with the darkest value of the image, and the result is
stored again:

* native (uncompressed, deflated, big endian) pixel data is written back in the same syntax;
* lossless compressed pixel data is re-encoded in the same syntax when pydicom has an encoder
  for it and the re-encoded pixels decode to exactly the blanked ones; otherwise, and for
  lossy sources (whose re-encoding would lose more), it is stored uncompressed in Explicit VR
  Little Endian.

Colour images are stored as RGB after cleaning when their stored form was YCbCr.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.uid import (
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    JPEG2000Lossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
)

from ..errors import ConfigError
from ._errors import DeidentificationError

__all__ = ["PixelRule", "PixelRules", "blank_pixels"]

PIXEL_DATA = 0x7FE00010
Rectangle = tuple[int, int, int, int]

#: Compressed syntaxes whose pixels come back exactly: re-encoded in the same syntax if possible.
LOSSLESS = frozenset({RLELossless, JPEGLSLossless, JPEG2000Lossless, HTJ2KLossless,
                      JPEGLosslessSV1, UID("1.2.840.10008.1.2.4.57")})  # fmt: skip
_COLUMNS = ("manufacturer", "model", "rows", "columns", "rectangles")


def _pattern(text: str, what: str, where: str) -> re.Pattern[str]:
    try:
        return re.compile(text.strip() or ".*", re.IGNORECASE)
    except re.error as exc:
        raise ConfigError(f"{where}: {what} {text!r} is not a regular expression: {exc}") from exc


def _size(text: str, what: str, where: str) -> int | None:
    text = text.strip()
    if not text:
        return None
    if not text.isdigit() or int(text) == 0:
        raise ConfigError(f"{where}: {what} must be a positive whole number or empty, not {text!r}")
    return int(text)


def _rectangles(text: str, where: str) -> tuple[Rectangle, ...]:
    found = []
    for part in text.split(";"):
        numbers = [p.strip() for p in part.split(",")]
        if len(numbers) != 4 or not all(n.isdigit() for n in numbers):
            raise ConfigError(
                f"{where}: a rectangle is 'x,y,w,h' (four whole numbers), not {part!r}"
            )
        x, y, w, h = (int(n) for n in numbers)
        if w == 0 or h == 0:
            raise ConfigError(f"{where}: rectangle {part!r} is empty")
        found.append((x, y, w, h))
    return tuple(found)


@dataclass(frozen=True)
class PixelRule:
    """One row of a pixel rule table.

    Attributes
    ----------
    manufacturer, model : str
        Regular expressions matched (case-insensitively, against the whole value with leading
        and trailing spaces removed) with Manufacturer (0008,0070) and Manufacturer's Model
        Name (0008,1090); empty matches anything.
    rows, columns : int or None
        The image size the rule is for; ``None`` for any.
    rectangles : tuple of (x, y, w, h)
        Regions to blank: column and row of the top-left pixel, width and height.
    note : str
        What the regions hold, and on which image they were checked.
    """

    manufacturer: str
    model: str
    rows: int | None
    columns: int | None
    rectangles: tuple[Rectangle, ...]
    note: str = ""
    _patterns: tuple[re.Pattern[str], re.Pattern[str]] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        where = f"pixel rule {self.manufacturer!r} / {self.model!r}"
        patterns = (
            _pattern(self.manufacturer, "manufacturer", where),
            _pattern(self.model, "model", where),
        )
        object.__setattr__(self, "_patterns", patterns)

    def matches(self, manufacturer: str, model: str, rows: int, columns: int) -> bool:
        """Whether the rule is for an image of this device and size."""
        return (
            (self.rows is None or self.rows == rows)
            and (self.columns is None or self.columns == columns)
            and self._patterns[0].fullmatch(manufacturer.strip()) is not None
            and self._patterns[1].fullmatch(model.strip()) is not None
        )


@dataclass(frozen=True)
class PixelRules:
    """A pixel rule table: which rectangles to blank on which devices' images.

    Examples
    --------
    >>> rules = PixelRules.load()  # the table shipped with dicomflow
    >>> rules.source, len(rules.rules) > 0
    ('builtin', True)
    >>> text = 'manufacturer,model,rows,columns,rectangles\\nACME,,64,64,"0,0,64,8"\\n'
    >>> PixelRules.from_text(text).rules[0].rectangles
    ((0, 0, 64, 8),)
    """

    rules: tuple[PixelRule, ...]
    source: str = "builtin"
    fingerprint: str = ""

    @classmethod
    def from_text(cls, text: str, source: str = "<text>") -> PixelRules:
        """Parse a rule table (CSV with a header; extra columns such as ``note`` are kept)."""
        reader = csv.DictReader(io.StringIO(text, newline=""))
        header = [h.strip() for h in reader.fieldnames or []]
        missing = [c for c in _COLUMNS if c not in header]
        if missing:
            raise ConfigError(f"{source}: a pixel rule table needs the columns {_COLUMNS}; "
                              f"missing {missing}")  # fmt: skip
        rules = []
        for line, raw in enumerate(reader, start=2):
            row = {(k or "").strip(): (v or "") for k, v in raw.items()}
            where = f"{source} line {line}"
            rules.append(
                PixelRule(
                    manufacturer=row["manufacturer"],
                    model=row["model"],
                    rows=_size(row["rows"], "rows", where),
                    columns=_size(row["columns"], "columns", where),
                    rectangles=_rectangles(row["rectangles"], where),
                    note=row.get("note", ""),
                )
            )
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
        return cls(tuple(rules), source, digest)

    @classmethod
    def load(cls, path: str | Path | None = None) -> PixelRules:
        """The table at ``path`` (CSV), or the one shipped with dicomflow when ``None``."""
        if path is None:
            return _builtin()
        try:
            text = Path(path).read_text(encoding="utf-8-sig")
        except OSError as exc:
            raise ConfigError(f"pixel rule table {path} cannot be read: {exc}") from exc
        return cls.from_text(text, str(path))

    def rectangles_for(self, ds: Dataset) -> tuple[Rectangle, ...]:
        """Every rectangle of every rule matching ``ds`` (empty: no rule covers it)."""
        manufacturer, model = _text(ds, 0x00080070), _text(ds, 0x00081090)
        rows, columns = _number(ds, 0x00280010), _number(ds, 0x00280011)
        found: list[Rectangle] = []
        for rule in self.rules:
            if rule.matches(manufacturer, model, rows, columns):
                found.extend(rule.rectangles)
        return tuple(found)


@cache
def _builtin() -> PixelRules:
    text = (resources.files(__package__) / "data" / "pixel-rules.csv").read_text("utf-8")
    return PixelRules.from_text(text, "builtin")


def _text(ds: Dataset, tag: int) -> str:
    try:
        value = ds.get(tag)
        return "" if value is None or value.value is None else str(value.value)
    except Exception:  # noqa: BLE001 - unreadable: matches only rules for any value
        return ""


def _number(ds: Dataset, tag: int) -> int:
    try:
        value = ds.get(tag)
        return int(value.value) if value is not None and value.value is not None else 0
    except Exception:  # noqa: BLE001
        return 0


def describe_device(ds: Dataset) -> str:
    """``Manufacturer 'X', model 'Y', R x C``: what a rule would have to match."""
    return (
        f"Manufacturer {_text(ds, 0x00080070).strip()!r}, model "
        f"{_text(ds, 0x00081090).strip()!r}, {_number(ds, 0x00280010)} x "
        f"{_number(ds, 0x00280011)} pixels"
    )


# -- blanking ---------------------------------------------------------------------------------


def _fill(arr: np.ndarray, photometric: str) -> object:
    if photometric == "MONOCHROME1":
        return arr.max() if arr.size else 0
    if photometric == "MONOCHROME2":
        return arr.min() if arr.size else 0
    if photometric.startswith("YBR") and arr.ndim >= 3 and arr.shape[-1] == 3:
        middle = 1 << (8 * arr.dtype.itemsize - 1)
        return np.array([0, middle, middle], dtype=arr.dtype)  # black in YCbCr
    return 0  # RGB black; palette index 0


def _blank(arr: np.ndarray, rectangles: Iterable[Rectangle], samples: int, photometric: str):
    fill = _fill(arr, photometric)
    for x, y, w, h in rectangles:
        if samples > 1:
            arr[..., y : y + h, x : x + w, :] = fill
        else:
            arr[..., y : y + h, x : x + w] = fill
    return arr


def _native_bytes(arr: np.ndarray, bits_allocated: int, big_endian: bool) -> bytes:
    if bits_allocated == 1:
        from pydicom.pixels import pack_bits

        return pack_bits(arr)
    dtype = arr.dtype.newbyteorder(">" if big_endian else "<")
    data = arr.astype(dtype, copy=False).tobytes()
    return data + b"\0" if len(data) % 2 else data


def _set_image(out: Dataset, meta: dict, arr: np.ndarray) -> None:
    """Image Pixel attributes of ``out`` describing the decoded ``arr``."""
    out.SamplesPerPixel = int(meta["samples_per_pixel"])
    out.PhotometricInterpretation = str(meta["photometric_interpretation"])
    out.BitsAllocated = int(meta["bits_allocated"])
    out.BitsStored = int(meta["bits_stored"])
    out.HighBit = int(meta["bits_stored"]) - 1
    out.PixelRepresentation = int(meta["pixel_representation"])
    if int(meta["samples_per_pixel"]) > 1:
        out.PlanarConfiguration = 0  # decoded arrays are colour-by-pixel


def _store_native(out: Dataset, meta: dict, arr: np.ndarray, syntax: UID) -> None:
    _set_image(out, meta, arr)
    bits = int(meta["bits_allocated"])
    vr = "OB" if bits <= 8 else "OW"
    data = _native_bytes(arr, bits, big_endian=syntax == ExplicitVRBigEndian)
    out[PIXEL_DATA] = DataElement(PIXEL_DATA, vr, data)
    out.file_meta.TransferSyntaxUID = syntax


def _reencode(out: Dataset, meta: dict, arr: np.ndarray, syntax: UID) -> bool:
    """Encode ``arr`` in ``syntax`` into ``out`` if it decodes back exactly; else False."""
    from pydicom.pixels import get_decoder

    probe = Dataset()
    _set_image(probe, meta, arr)
    probe.Rows, probe.Columns = int(meta["rows"]), int(meta["columns"])
    frames = int(meta.get("number_of_frames") or 1)
    if frames > 1:
        probe.NumberOfFrames = frames
    try:
        probe.compress(syntax, arr, generate_instance_uid=False)
        stored: dict[str, Any] = {"as_rgb": False}  # the values as encoded, no colour change
        back, _ = get_decoder(syntax).as_array(probe, **stored)
    except Exception:  # noqa: BLE001 - no encoder, or one that refuses this image
        return False
    if back.shape != arr.shape or not np.array_equal(back, arr):
        return False
    for tag in (0x00280002, 0x00280004, 0x00280006, 0x00280100, 0x00280101, 0x00280102,
                0x00280103, PIXEL_DATA):  # fmt: skip
        if tag in probe:
            out[tag] = probe[tag]
    out.file_meta.TransferSyntaxUID = syntax
    return True


def blank_pixels(src: Dataset, out: Dataset, rectangles: Iterable[Rectangle]) -> str:
    """Blank ``rectangles`` in every frame of ``src``'s pixels and store them in ``out``.

    ``out`` (the de-identified copy, with File Meta Information) gets the new Pixel Data, the
    Image Pixel attributes that describe it and, where the pixels had to be stored another way,
    the new Transfer Syntax UID. ``src`` is not modified.

    Returns
    -------
    str
        The transfer syntax the cleaned pixels are stored in.

    Raises
    ------
    DeidentificationError
        The pixel data cannot be decoded, or is float pixel data (not cleaned).
    """
    from pydicom.pixels import get_decoder

    if PIXEL_DATA not in src:
        raise DeidentificationError(
            "clean-pixel-data: only Pixel Data (7FE0,0010) can be blanked; this instance has "
            "Float or Double Float Pixel Data"
        )
    meta_group = getattr(src, "file_meta", None)
    found = meta_group.get("TransferSyntaxUID") if meta_group is not None else None
    syntax = UID(str(found or ExplicitVRLittleEndian))
    try:
        arr, meta = get_decoder(syntax).as_array(src)
    except Exception as exc:  # noqa: BLE001 - any decoder failure fails the instance
        raise DeidentificationError(
            f"clean-pixel-data: the pixel data ({syntax.name}) cannot be decoded, so it cannot "
            f"be cleaned: {type(exc).__name__}: {exc}"
        ) from exc
    if not arr.flags.writeable:
        arr = arr.copy()
    samples = int(meta["samples_per_pixel"])
    _blank(arr, rectangles, samples, str(meta["photometric_interpretation"]))
    if not syntax.is_compressed:
        _store_native(out, meta, arr, syntax)
    elif syntax in LOSSLESS and _reencode(out, meta, arr, syntax):
        pass
    else:
        _store_native(out, meta, arr, ExplicitVRLittleEndian)
        out.set_original_encoding(False, True, out.original_character_set)
    return str(out.file_meta.TransferSyntaxUID)
