"""Encoded element values -> typed Arrow columns, one column of a batch at a time.

Text follows pydicom's rules exactly (which VRs use the Specific Character Set, which padding is
stripped, where values split), and non-ASCII or ISO 2022 text is decoded by pydicom's own
``decode_bytes``, so a decoded string here equals ``str(ds.Keyword)`` in pydicom.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Sequence
from functools import lru_cache
from struct import Struct
from struct import error as StructError
from typing import Any

import pyarrow as pa
from pydicom.charset import convert_encodings as _convert_encodings
from pydicom.charset import decode_bytes, default_encoding

from ._header import ALL_VRS, ParsedHeader, _compiled
from ._schema import ColumnSpec

__all__ = [
    "column_array",
    "encodings_of",
    "parse_da",
    "parse_ds",
    "parse_dt",
    "parse_is",
    "parse_tm",
    "to_text",
]

_CHARSET_VRS = frozenset({"SH", "LO", "UC", "ST", "LT", "UT", "PN"})
_SINGLE_VALUE_TEXT = frozenset({"ST", "LT", "UT", "UR"})
_TEXT_DELIMS = {0x5C, 0x09, 0x0A, 0x0C, 0x0D}  # pydicom's TEXT_VR_DELIMS
_PN_DELIMS = {0x5E, 0x3D, 0x5C}  # ^ = and the value separator
_BINARY_NUMBER_FORMATS = {
    "US": "H", "SS": "h", "UL": "L", "SL": "l", "UV": "Q", "SV": "q", "FL": "f", "FD": "d",
}  # fmt: skip
_ESC = 0x1B
_FALLBACK_ENCODING = [default_encoding]


@lru_cache(maxsize=256)
def _encodings_for(charset: tuple[str, ...]) -> tuple[str, ...]:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return tuple(_convert_encodings(list(charset)))


def encodings_of(header: ParsedHeader) -> tuple[str, ...]:
    """Python codecs for the object's Specific Character Set, as pydicom chooses them."""
    raw = header.value(0x00080005)
    if not raw:
        return tuple(_FALLBACK_ENCODING)
    terms = raw.decode("latin-1").rstrip("\x00 ").split("\\")
    try:
        return _encodings_for(tuple(t.strip() for t in terms))
    except ValueError:  # a term Python cannot even look up ("ISO_IR\x00100"): pydicom's default
        return tuple(_FALLBACK_ENCODING)


def to_text(raw: bytes, vr: str, encodings: Sequence[str]) -> str:
    """Decode a text value with pydicom's padding rules; multiple values stay ``\\``-joined."""
    if vr == "PN":
        raw = raw.rstrip(b"\x00 ")
    if vr in _CHARSET_VRS:
        if raw.isascii() and _ESC not in raw:
            text = raw.decode("ascii")
        else:
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                text = decode_bytes(
                    raw, list(encodings), _PN_DELIMS if vr == "PN" else _TEXT_DELIMS
                )
    else:
        text = raw.decode("latin-1")
    if vr in ("SH", "LO", "UC"):
        if "\\" in text:
            return "\\".join(v.rstrip("\x00 ") for v in text.split("\\"))
        return text.rstrip("\x00 ")
    if vr == "PN":
        return "\\".join(_trim_pn(v) for v in text.split("\\")) if "=" in text else text
    if vr == "AE":
        return "\\".join(v.strip() for v in text.split("\\"))
    if vr in ("UR", "DA", "TM", "DT"):
        return text.rstrip() if vr == "UR" else text.rstrip("\x00 ")
    return text.rstrip("\x00 ")


def _trim_pn(value: str) -> str:
    """Drop empty component groups from the end, as pydicom's PersonName does."""
    groups = value.split("=")
    while len(groups) > 1 and not groups[-1]:
        groups.pop()
    return "=".join(groups)


def parse_is(text: str) -> int | None:
    text = text.strip()
    try:
        return int(text)
    except ValueError:
        try:
            value = float(text)
        except ValueError:
            return None
        return int(value) if value.is_integer() else None


def parse_ds(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def parse_da(text: str) -> dt.date | None:
    text = text.strip()
    try:
        if len(text) == 8 and text.isdigit():
            return dt.date(int(text[:4]), int(text[4:6]), int(text[6:8]))
        if len(text) == 10 and text[4] == "." and text[7] == ".":  # ACR-NEMA YYYY.MM.DD
            return dt.date(int(text[:4]), int(text[5:7]), int(text[8:10]))
    except ValueError:
        return None
    return None


def parse_tm(text: str) -> dt.time | None:
    text = text.strip().replace(":", "")  # ACR-NEMA HH:MM:SS
    whole, _, frac = text.partition(".")
    if not whole.isdigit() or len(whole) not in (2, 4, 6) or (frac and not frac.isdigit()):
        return None
    try:
        return dt.time(
            int(whole[:2]),
            int(whole[2:4] or 0),
            min(int(whole[4:6] or 0), 59),  # 60 is a valid leap second in DICOM
            int(frac[:6].ljust(6, "0")) if frac else 0,
        )
    except ValueError:
        return None


def parse_dt(text: str) -> dt.datetime | None:
    """DICOM DT to a naive datetime; a UTC offset suffix is not applied (the header keeps it)."""
    text = text.strip()
    for sign in "+-":
        if sign in text[4:]:
            text = text[: 4 + text[4:].index(sign)]
    whole, _, frac = text.partition(".")
    if not whole.isdigit() or len(whole) not in (4, 6, 8, 10, 12, 14):
        return None
    try:
        return dt.datetime(
            int(whole[:4]),
            int(whole[4:6] or 1),
            int(whole[6:8] or 1),
            int(whole[8:10] or 0),
            int(whole[10:12] or 0),
            min(int(whole[12:14] or 0), 59),
            int(frac[:6].ljust(6, "0")) if frac and frac.isdigit() else 0,
        )
    except ValueError:
        return None


_TEXT_PARSERS: dict[str, Callable[[str], Any]] = {
    "IS": parse_is,
    "DS": parse_ds,
    "DA": parse_da,
    "TM": parse_tm,
    "DT": parse_dt,
}


@lru_cache(maxsize=64)
def _struct(vr: str, little: bool, count: int) -> Struct:
    return Struct(("<" if little else ">") + str(count) + _BINARY_NUMBER_FORMATS[vr])


def _binary_numbers(raw: bytes, vr: str, little: bool) -> tuple[Any, ...] | None:
    size = _struct(vr, True, 1).size
    if len(raw) % size:
        return None
    try:
        return _struct(vr, little, len(raw) // size).unpack(raw)
    except StructError:
        return None


def _effective_vr(spec: ColumnSpec, actual: bytes | None, header: ParsedHeader) -> str:
    """The VR to decode with: the encoded VR when explicit and known, else the dictionary's."""
    if actual is not None and actual != b"UN" and actual in ALL_VRS:
        return actual.decode("latin-1")
    if spec.vr in ("US or SS", "US or SS or OW"):
        rep = header.value(0x00280103)
        signed = rep is not None and len(rep) == 2 and rep != b"\x00\x00"
        return "SS" if signed else "US"
    if spec.vr in ("OB or OW", "US or OW"):
        return "OW"
    return spec.vr


def _python_value(
    spec: ColumnSpec, header: ParsedHeader, tag: int, encodings: Sequence[str]
) -> Any:
    entry = header.elements.get(tag)
    if entry is None:
        return None
    actual, pos, length = entry
    raw = header.data[pos : pos + length]
    vr = _effective_vr(spec, actual, header)
    column_vr = spec.vr
    if column_vr == "SQ" or vr == "SQ":
        return _sequence_json(raw, header, encodings) if column_vr == "SQ" else None
    if column_vr in ("OB", "OW", "OD", "OF", "OL", "OV", "UN", "NONE") or "OW" in column_vr:
        return raw
    if not raw:
        return "" if not spec.multi and spec.arrow_type == pa.string() else None
    if vr in _BINARY_NUMBER_FORMATS:
        values = _binary_numbers(raw, vr, header.little)
        if values is None:
            return None
        if column_vr not in _BINARY_NUMBER_FORMATS and column_vr != "US or SS":
            values = tuple(str(v) for v in values)  # a number where text was expected
    elif vr == "AT":
        numbers = _binary_numbers(raw, "US", header.little)
        if numbers is None or len(numbers) % 2:
            return None
        values = tuple(f"{numbers[i]:04X}{numbers[i + 1]:04X}" for i in range(0, len(numbers), 2))
    else:
        text = to_text(raw, vr if vr in _CHARSET_VRS or vr in _TEXT_PARSERS else column_vr,
                       encodings)  # fmt: skip
        if column_vr in _SINGLE_VALUE_TEXT:
            return text
        parser = _TEXT_PARSERS.get(column_vr)
        if parser is None and column_vr in _BINARY_NUMBER_FORMATS:
            parser = parse_is if column_vr not in ("FL", "FD") else parse_ds
        if not spec.multi:
            if parser is None:
                return text
            return parser(text) if "\\" not in text else None
        if not text:
            return None
        parts = text.split("\\")
        if parser is None:
            return parts
        values = tuple(parser(p) for p in parts)
        return list(values)
    if not spec.multi:
        return values[0] if len(values) == 1 else None
    return list(values)


def _sequence_json(raw: bytes, header: ParsedHeader, encodings: Sequence[str]) -> str | None:
    from pydicom.values import convert_SQ

    try:
        seq = convert_SQ(raw, header.implicit, header.little, list(encodings))
        return json.dumps([item.to_json_dict(1024, _bulk_placeholder) for item in seq])
    except Exception:  # noqa: BLE001 - a sequence that does not decode becomes null
        return None


def _bulk_placeholder(elem: Any) -> str:
    return f"bulkdata:{elem.tag:08X}"


def _private_tag(header: ParsedHeader, spec: ColumnSpec) -> int | None:
    group = spec.tag >> 16
    wanted = spec.creator
    for block in range(0x10, 0x100):
        raw = header.value(group << 16 | block)
        if raw is None:
            continue
        if raw.decode("latin-1").rstrip("\x00 ") == wanted:
            return group << 16 | block << 8 | (spec.tag & 0xFF)
    return None


_SLOW = object()  # a fast converter's "take the general path"


def _fast_text(raw: bytes) -> Any:
    if raw.isascii() and _ESC not in raw and 0x5C not in raw:
        return raw.decode("ascii").rstrip("\x00 ")
    return _SLOW


def _fast_pn(raw: bytes) -> Any:
    if raw.isascii() and _ESC not in raw and 0x3D not in raw:
        return raw.rstrip(b"\x00 ").decode("ascii")
    return _SLOW


def _fast_code(raw: bytes) -> Any:
    return raw.decode("latin-1").rstrip("\x00 ")


def _fast_codes(raw: bytes) -> Any:
    text = raw.decode("latin-1").rstrip("\x00 ")
    return text.split("\\") if text else None


def _fast_ds(raw: bytes) -> Any:
    if 0x5C in raw:
        return None
    try:
        return float(raw)
    except ValueError:
        return _SLOW


def _fast_is(raw: bytes) -> Any:
    if 0x5C in raw:
        return None
    try:
        return int(raw)
    except ValueError:
        return _SLOW


def _fast_numbers(parse: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def convert(raw: bytes) -> Any:
        try:
            return [parse(part) for part in raw.split(b"\\")]
        except ValueError:
            return _SLOW

    return convert


def _fast_da(raw: bytes) -> Any:
    if len(raw) == 8 and raw.isdigit():
        try:
            return dt.date(int(raw[:4]), int(raw[4:6]), int(raw[6:8]))
        except ValueError:
            return None
    return _SLOW


def _fast_tm(raw: bytes) -> Any:
    return parse_tm(raw.decode("latin-1"))


def _fast_dt(raw: bytes) -> Any:
    if 0x5C in raw:
        return None
    return parse_dt(raw.decode("latin-1").rstrip("\x00 "))


def _fast_texts(raw: bytes) -> Any:
    """Multi-valued SH, LO, UC: each value loses its trailing NULs and spaces (as to_text)."""
    if not raw.isascii() or _ESC in raw:
        return _SLOW
    if 0x5C not in raw:
        text = raw.decode("ascii").rstrip("\x00 ")
        return [text] if text else None
    return [v.rstrip("\x00 ") for v in raw.decode("ascii").split("\\")]


def _fast_unsigned(raw: bytes) -> Any:
    return int.from_bytes(raw, "little")


def _fast_signed(raw: bytes) -> Any:
    return int.from_bytes(raw, "little", signed=True)


_FAST_SCALAR: dict[str, Callable[[bytes], Any]] = {
    "SH": _fast_text, "LO": _fast_text, "UC": _fast_text, "ST": _fast_text, "LT": _fast_text,
    "UT": _fast_text, "PN": _fast_pn, "CS": _fast_code, "UI": _fast_code, "AS": _fast_code,
    "DS": _fast_ds, "IS": _fast_is, "DA": _fast_da, "TM": _fast_tm, "DT": _fast_dt,
}  # fmt: skip
_FAST_MULTI: dict[str, Callable[[bytes], Any]] = {
    "CS": _fast_codes,
    "DS": _fast_numbers(float),
    "IS": _fast_numbers(int),
    "SH": _fast_texts,
    "LO": _fast_texts,
    "UC": _fast_texts,
}
#: the compiled core's converter of each fast converter (dicomflow/dicom/_cheader.c, K_*)
_KINDS: dict[Callable[[bytes], Any], int] = {
    _fast_text: 0, _fast_pn: 1, _fast_code: 2, _fast_codes: 3, _fast_ds: 4, _fast_is: 5,
    _FAST_MULTI["DS"]: 6, _FAST_MULTI["IS"]: 7, _fast_da: 8, _fast_tm: 9,
    _fast_unsigned: 10, _fast_signed: 11, _fast_texts: 12, _fast_dt: 13,
}  # fmt: skip
_INT_SIZES = {"US": 2, "UL": 4, "UV": 8, "SS": 2, "SL": 4, "SV": 8}


def _fast_converter(spec: ColumnSpec) -> tuple[Callable[[bytes], Any] | None, int]:
    """A converter for the common case (the dictionary's VR, little endian) and its value size."""
    if spec.multi:
        return _FAST_MULTI.get(spec.vr), 0
    if spec.vr in _INT_SIZES:
        signed = spec.vr.startswith("S")
        return (_fast_signed if signed else _fast_unsigned), _INT_SIZES[spec.vr]
    return _FAST_SCALAR.get(spec.vr), 0


def column_array(
    spec: ColumnSpec,
    headers: Sequence[ParsedHeader | None],
    encodings: Sequence[Sequence[str]],
) -> pa.Array:
    """The Arrow array of one attribute column over a batch of parsed headers."""
    fast, size = _fast_converter(spec) if spec.creator is None else (None, 0)
    kind = _KINDS.get(fast) if fast is not None and _compiled is not None else None
    if kind is not None and fast is not None and _compiled is not None:
        out = _compiled_values(spec, headers, encodings, kind, fast, size)
    else:
        out = _python_values(spec, headers, encodings, fast, size)
    try:
        return pa.array(out, type=spec.arrow_type)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        return pa.array([_coerce(v, spec.arrow_type) for v in out], type=spec.arrow_type)


def _compiled_values(
    spec: ColumnSpec,
    headers: Sequence[ParsedHeader | None],
    encodings: Sequence[Sequence[str]],
    kind: int,
    fast: Callable[[bytes], Any],
    size: int,
) -> list[Any]:
    """:func:`_python_values`'s loop in C; what C hands back (``_SLOW``) is done here."""
    assert _compiled is not None
    tag = spec.tag
    out = _compiled.convert_column(kind, tag, spec.vr.encode(), size, headers, fast, _SLOW)
    for i, value in enumerate(out):
        if value is _SLOW:
            header = headers[i]
            assert header is not None
            try:
                out[i] = _python_value(spec, header, tag, encodings[i])
            except Exception:  # noqa: BLE001 - a value that does not convert is null
                out[i] = None
    return out


def _python_values(
    spec: ColumnSpec,
    headers: Sequence[ParsedHeader | None],
    encodings: Sequence[Sequence[str]],
    fast: Callable[[bytes], Any] | None,
    size: int,
) -> list[Any]:
    out: list[Any] = []
    append = out.append
    tag = spec.tag
    expected = spec.vr.encode()
    for header, enc in zip(headers, encodings):
        if header is None:
            append(None)
            continue
        if spec.creator is not None:
            found = _private_tag(header, spec)
            append(None if found is None else _python_value(spec, header, found, enc))
            continue
        entry = header.elements.get(tag)
        if entry is None:
            append(None)
            continue
        if fast is not None and header.little and (entry[0] == expected or entry[0] is None):
            _, pos, length = entry
            if length and (not size or length == size):
                value = fast(header.data[pos : pos + length])
                if value is not _SLOW:
                    append(value)
                    continue
        try:
            append(_python_value(spec, header, tag, enc))
        except Exception:  # noqa: BLE001 - a value that does not convert is null
            append(None)
    return out


def _coerce(value: Any, type_: pa.DataType) -> Any:
    """Values that do not fit the dictionary's type become null (the header keeps the raw)."""
    try:
        pa.array([value], type=type_)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        return None
    return value
