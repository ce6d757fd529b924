"""Clean Pixel Data (PS3.15 E.3.1): blank the regions where a device burns in text.

Which regions is data, not code: a rule table (``data/pixel-rules.csv``, or the caller's own
CSV in the same layout) maps Manufacturer / Manufacturer's Model Name (regular expressions,
matched case-insensitively against the whole value) and Rows / Columns (exact, empty for any)
to rectangles ``x,y,w,h`` (column and row of the top-left corner, width and height, in pixels;
several separated by ``;``). Every rule that matches an image applies.

Blanking works on the stored pixel values: the pixel data is decoded through
:mod:`dicomflow.codecs` (encapsulated frames with pydicom's own decoders, native ones read in
place), each rectangle of every frame is filled with the darkest value of the image, and the
result is stored again:

* native (uncompressed, deflated, big endian) pixel data is written back in the same syntax;
* lossless compressed pixel data is re-encoded in the same syntax when one of pydicom's own
  encoding plugins (the codec layer's ``gdcm``, ``pylibjpeg``, ``pydicom``, ``pyjpegls``
  encoders, tried in turn as pydicom's ``compress`` does) encodes it and the re-encoded pixels
  decode to exactly the blanked ones; otherwise, and for lossy sources (whose re-encoding would
  lose more), it is stored uncompressed in Explicit VR Little Endian.

Colour images are stored as RGB after cleaning when their stored form was YCbCr. Float and
Double Float Pixel Data (always native) are blanked and stored back in their own element.

Where no rule covers an image that may show text, the text is searched for by OCR
(:mod:`._burned`, :mod:`._ocr`).
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from functools import cache
from importlib import resources
from pathlib import Path

import numpy as np
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.uid import UID

from ..codecs import (
    PixelFormat,
    decode_stored,
    encoders_for,
    pixel_format,
    stored_frames,
    to_rgb,
)
from ..dicom import TransferSyntax, transfer_syntax
from ..errors import ConfigError
from ._errors import DeidentificationError

__all__ = ["PixelRule", "PixelRules", "blank", "blank_pixels", "decode_pixels", "store_pixels"]

PIXEL_DATA = 0x7FE00010
FLOAT_PIXEL_DATA = 0x7FE00008
DOUBLE_PIXEL_DATA = 0x7FE00009
Rectangle = tuple[int, int, int, int]

#: The codec layer's encoders that are pydicom's own plugins: what ``Dataset.compress`` used.
_PYDICOM_PLUGINS = ("gdcm", "pylibjpeg", "pydicom", "pyjpegls")
_EXPLICIT_LE = "1.2.840.10008.1.2.1"
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


def _set_image(out: Dataset, fmt: PixelFormat) -> None:
    """Image Pixel attributes of ``out`` describing the decoded frames."""
    out.SamplesPerPixel = fmt.samples_per_pixel
    out.PhotometricInterpretation = fmt.photometric_interpretation
    out.BitsAllocated = fmt.bits_allocated
    out.BitsStored = fmt.bits_stored
    out.HighBit = fmt.bits_stored - 1
    out.PixelRepresentation = fmt.pixel_representation
    if fmt.samples_per_pixel > 1:
        out.PlanarConfiguration = 0  # decoded arrays are colour-by-pixel


def _store_native(out: Dataset, fmt: PixelFormat, arr: np.ndarray, syntax: TransferSyntax) -> None:
    _set_image(out, fmt)
    vr = "OB" if fmt.bits_allocated <= 8 else "OW"
    data = _native_bytes(arr, fmt.bits_allocated, big_endian=not syntax.is_little_endian)
    out[PIXEL_DATA] = DataElement(PIXEL_DATA, vr, data)
    out.file_meta.TransferSyntaxUID = UID(syntax.uid)


def _encode(frame: np.ndarray, fmt: PixelFormat, syntax: TransferSyntax) -> bytes | None:
    """``frame`` encoded by the first of pydicom's plugins that can, tried in turn as
    ``Dataset.compress`` tries them, each with pydicom's own checks (``None``: none can)."""
    target = replace(fmt, transfer_syntax_uid=syntax.uid, number_of_frames=1)
    for encoder in encoders_for(syntax):
        if encoder.name not in _PYDICOM_PLUGINS:
            continue
        try:
            return encoder.encode(frame, target, {})
        except Exception:  # noqa: BLE001 - that plugin refuses this image: the next one may not
            continue
    return None


def _reencode(out: Dataset, fmt: PixelFormat, arr: np.ndarray, syntax: TransferSyntax) -> bool:
    """Encode ``arr`` in ``syntax`` into ``out`` if it decodes back exactly; else False."""
    from pydicom.encaps import encapsulate

    frames = arr if fmt.number_of_frames > 1 else arr[np.newaxis]
    encoded = []
    for frame in frames:
        frame = np.ascontiguousarray(frame)
        data = _encode(frame, fmt, syntax)
        if data is None:
            return False
        try:  # the values as encoded, no colour change
            back, _ = decode_stored(data, fmt, syntax, backend="pydicom")
        except Exception:  # noqa: BLE001 - it cannot be read back: not stored this way
            return False
        if back.shape != frame.shape or not np.array_equal(back, frame):
            return False
        encoded.append(data)
    if sum(8 + len(data) for data in encoded) > 2**32 - 1:
        return False  # an Extended Offset Table would be needed: stored natively instead
    _set_image(out, fmt)
    out[PIXEL_DATA] = DataElement(PIXEL_DATA, "OB", encapsulate(encoded))
    out[PIXEL_DATA].is_undefined_length = True
    out.file_meta.TransferSyntaxUID = UID(syntax.uid)
    return True


def _decode(src: Dataset, syntax: TransferSyntax) -> tuple[np.ndarray, PixelFormat]:
    """Every frame of ``src`` as pydicom's ``pixel_array`` (YCbCr as RGB), and their format."""
    fmt = pixel_format(src, syntax.uid)
    backend = "pydicom" if syntax.is_encapsulated else None
    count = fmt.number_of_frames
    out = np.empty((count, *fmt.frame_shape), fmt.dtype)
    photometric = fmt.photometric_interpretation
    for index, data in enumerate(stored_frames(src, fmt)):
        frame, photometric = decode_stored(data, fmt, syntax, backend=backend)
        if photometric in ("YBR_FULL", "YBR_FULL_422") and frame.ndim == 3:
            frame, photometric = to_rgb(frame, photometric), "RGB"
        out[index] = frame
    decoded = replace(
        fmt,
        transfer_syntax_uid=_EXPLICIT_LE,
        photometric_interpretation=photometric,
        planar_configuration=0,
    )
    return (out if count > 1 else out[0]), decoded


def _store_float(out: Dataset, fmt: PixelFormat, arr: np.ndarray, syntax: TransferSyntax) -> None:
    """Float or Double Float Pixel Data back in its own element, in a native syntax."""
    tag = FLOAT_PIXEL_DATA if fmt.pixel_keyword == "FloatPixelData" else DOUBLE_PIXEL_DATA
    vr = "OF" if tag == FLOAT_PIXEL_DATA else "OD"
    dtype = arr.dtype.newbyteorder("<" if syntax.is_little_endian else ">")
    out[tag] = DataElement(tag, vr, arr.astype(dtype, copy=False).tobytes())
    out.file_meta.TransferSyntaxUID = UID(syntax.uid)


def decode_pixels(src: Dataset) -> tuple[np.ndarray, PixelFormat, TransferSyntax]:
    """Every frame of ``src``'s pixel data (Pixel Data, Float or Double Float Pixel Data) as a
    writable array (``(frames, rows, columns[, 3])`` when there are several frames), the format
    of that array, and the transfer syntax it came in.

    Raises
    ------
    DeidentificationError
        The pixel data cannot be decoded (so it cannot be cleaned).
    """
    meta_group = getattr(src, "file_meta", None)
    found = meta_group.get("TransferSyntaxUID") if meta_group is not None else None
    uid = UID(str(found or _EXPLICIT_LE))
    try:
        syntax = transfer_syntax(uid)
        arr, fmt = _decode(src, syntax)
    except Exception as exc:  # noqa: BLE001 - any decoder failure fails the instance
        raise DeidentificationError(
            f"clean-pixel-data: the pixel data ({uid.name}) cannot be decoded, so it cannot "
            f"be cleaned: {type(exc).__name__}: {exc}"
        ) from exc
    if not arr.flags.writeable:
        arr = arr.copy()
    return arr, fmt, syntax


def store_pixels(out: Dataset, arr: np.ndarray, fmt: PixelFormat, syntax: TransferSyntax) -> str:
    """Store cleaned frames ``arr`` (as `decode_pixels` gave them) in ``out``: the same transfer
    syntax where that is exact (native; lossless re-encoding that decodes back to ``arr``),
    else Explicit VR Little Endian. Returns the transfer syntax they are stored in."""
    if fmt.pixel_keyword != "PixelData":
        native = syntax if syntax.is_native else transfer_syntax(_EXPLICIT_LE)
        _store_float(out, fmt, arr, native)
    elif syntax.is_native:
        _store_native(out, fmt, arr, syntax)
    elif syntax.is_lossless and _reencode(out, fmt, arr, syntax):
        pass
    else:
        _store_native(out, fmt, arr, transfer_syntax(_EXPLICIT_LE))
        out.set_original_encoding(False, True, out.original_character_set)
    return str(out.file_meta.TransferSyntaxUID)


def blank(arr: np.ndarray, fmt: PixelFormat, rectangles: Iterable[Rectangle]) -> None:
    """Fill ``rectangles`` of every frame of ``arr`` with the image's darkest value."""
    _blank(arr, rectangles, fmt.samples_per_pixel, fmt.photometric_interpretation)


def blank_pixels(src: Dataset, out: Dataset, rectangles: Iterable[Rectangle]) -> str:
    """Blank ``rectangles`` in every frame of ``src``'s pixels and store them in ``out``.

    ``out`` (the de-identified copy, with File Meta Information) gets the new pixel data, the
    Image Pixel attributes that describe it and, where the pixels had to be stored another way,
    the new Transfer Syntax UID. ``src`` is not modified.

    Returns
    -------
    str
        The transfer syntax the cleaned pixels are stored in.

    Raises
    ------
    DeidentificationError
        The pixel data cannot be decoded.
    """
    arr, fmt, syntax = decode_pixels(src)
    blank(arr, fmt, rectangles)
    return store_pixels(out, arr, fmt, syntax)
