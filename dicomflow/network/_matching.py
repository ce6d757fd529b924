"""Query values for date and time keys: what a user types, as DICOM range matching wants it.

DICOM matches DA, TM and DT keys (PS3.4 C.2.2.2.5) against one value or a range ``A-B`` with
either end left open (``A-``, ``-B``), in the compact forms ``20240131``, ``0830`` or
``202401310830``. Users type ISO 8601 (``2024-01-31``, ``08:30``, ``2024-01-31T08:30``),
whose ``-`` would be read as a range. So:

* a single value is accepted compact or in ISO form and sent compact;
* a range is written ``A..B`` with either form (``2024-01-01..2024-01-31``, ``2024-01-01..``,
  ``..08:30``), or ``A-B`` with compact values (DICOM's own form, ``20240101-20240131``);
* ``*`` and the empty value match anything (sent empty, as a return key);
* anything else (``2024-01-01-2024-01-31``, a month 13, a range that ends before it starts,
  a ``\\`` list) is refused with a :class:`~dicomflow.errors.ConfigError` saying what is
  accepted, instead of being sent and silently matching nothing.
"""

from __future__ import annotations

import datetime as dt
import re

from ..errors import ConfigError

__all__ = ["TEMPORAL_VRS", "temporal_value"]

TEMPORAL_VRS = ("DA", "TM", "DT")

_DA = re.compile(r"\d{8}")
_ISO_DA = re.compile(r"(\d{4})-(\d{2})-(\d{2})")
_TM = re.compile(r"\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?")
_ISO_TM = re.compile(r"(\d{2}):(\d{2})(?::(\d{2})(\.\d{1,6})?)?")
_DT = re.compile(r"\d{4}(\d{2}(\d{2}(\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?)?)?)?")
_ISO_DT = re.compile(r"(\d{4}-\d{2}-\d{2})(?:[T ](\d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?))?")

_FORMS = {
    "DA": "a date as 20240131 or 2024-01-31",
    "TM": "a time as 0830, 083000 or 08:30:00",
    "DT": "a date and time as 202401310830 or 2024-01-31T08:30",
}
_KINDS = {"DA": "a date", "TM": "a time", "DT": "a date and time"}
_EXAMPLES = {
    "DA": "2024-01-01..2024-01-31 or 20240101-20240131",
    "TM": "08:00..12:30 or 0800-1230",
    "DT": "2024-01-01T08:00..2024-01-02 or 202401010800-20240102",
}


def temporal_value(key: str, vr: str, value: object) -> str:
    """``value`` of the query key ``key`` (VR ``vr``: DA, TM or DT) in DICOM's matching form.

    ``value`` may be text (see the module docstring) or a :class:`datetime.date`,
    :class:`datetime.time` or :class:`datetime.datetime`.

    Raises
    ------
    ConfigError
        The value is neither a single value nor a range in an accepted form; the message
        says which forms are.

    Examples
    --------
    >>> temporal_value("StudyDate", "DA", "2024-01-31")
    '20240131'
    >>> temporal_value("StudyDate", "DA", "2024-01-01..2024-01-31")
    '20240101-20240131'
    >>> temporal_value("StudyDate", "DA", "20240101-")
    '20240101-'
    >>> temporal_value("StudyTime", "TM", "08:30..")
    '0830-'
    """
    text = str(value).strip()
    if text in ("", "*"):
        return ""
    try:
        if "\\" in text:
            raise ValueError("a list of values does not match dates or times")
        if vr == "DT" and _utc_offset(text):
            raise ValueError(
                "a UTC offset (+0100, -0500, Z) is not matched: catalogs keep the local date "
                "and time, so give it without the offset"
            )
        if ".." in text:
            ends = text.split("..")
        elif "-" in text and _single(vr, text) is None:
            ends = text.split("-")  # DICOM's range: compact values only
            if any(e and _compact(vr, e) is None for e in ends):
                if _ISO_DA.search(text) or ":" in text:
                    raise ValueError("with ISO values, write the range as A..B")
                raise ValueError(f"{text!r} is not {_KINDS[vr]} or a range of them")
        else:
            ends = [text]
        if len(ends) > 2:
            raise ValueError("a range has two ends")
        converted = [_one(vr, e) if e else "" for e in ends]
        if len(converted) == 2:
            low, high = converted
            if not (low or high):
                raise ValueError("a range needs at least one end")
            if low and high and low > high:
                raise ValueError("the range ends before it starts")
            return f"{low}-{high}"
        return converted[0]
    except ValueError as exc:
        raise ConfigError(
            f"{key}={text!r}: {exc}; expected {_FORMS[vr]}, or a range as {_EXAMPLES[vr]} "
            "(either end may be left out), or * for any"
        ) from None


_COMPACT_OFFSET = re.compile(r"(\d{8,14}(?:\.\d{1,6})?)-(\d{4})")
_ISO_OFFSET = re.compile(r"\d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?(?:Z|[+-]\d{2}:?\d{2})")


def _utc_offset(text: str) -> bool:
    """Whether a DT value ends with a UTC offset (``&ZZXX``, PS3.5 6.2, or ISO's ``Z``,
    ``+01:00``). ``-0500`` after a compact value is an offset when, read as a range's year,
    it would end the range before it starts."""
    if "+" in text or text.endswith("Z") or any(_ISO_OFFSET.search(e) for e in text.split("..")):
        return True
    m = _COMPACT_OFFSET.fullmatch(text)
    return m is not None and m.group(2) < m.group(1)[:4]


def _one(vr: str, text: str) -> str:
    """One DA/TM/DT value, compact, checked to be a real date or time."""
    compact = _single(vr, text)
    if compact is None:
        raise ValueError(f"{text!r} is not {_KINDS[vr]}")
    _check(vr, compact, text)
    return compact


def _single(vr: str, text: str) -> str | None:
    """``text`` as one compact value (ISO forms converted), or None if it is not one."""
    compact = _compact(vr, text)
    if compact is not None:
        return compact
    if vr == "DA":
        m = _ISO_DA.fullmatch(text)
        return "".join(m.groups()) if m else None
    if vr == "TM":
        return _iso_time(text)
    m = _ISO_DT.fullmatch(text)
    if not m:
        return None
    date = m.group(1).replace("-", "")
    if m.group(2) is None:
        return date
    time = _iso_time(m.group(2))
    return None if time is None else date + time


def _compact(vr: str, text: str) -> str | None:
    pattern = {"DA": _DA, "TM": _TM, "DT": _DT}[vr]
    return text if pattern.fullmatch(text) else None


def _iso_time(text: str) -> str | None:
    m = _ISO_TM.fullmatch(text)
    if not m:
        return None
    hours, minutes, seconds, fraction = m.groups()
    return hours + minutes + (seconds or "") + (fraction or "")


def _check(vr: str, compact: str, text: str) -> None:
    """Raise if the compact value is no real date or time (month 13, 25 o'clock)."""
    date, time = ("", compact) if vr == "TM" else (compact[:8], compact[8:])
    try:
        if vr == "DA" or len(date) == 8:
            dt.date(int(date[:4]), int(date[4:6]), int(date[6:8]))
        elif date:  # DT may stop at the year or the month
            dt.date(int(date[:4]), int(date[4:6] or 1), 1)
        if time:
            whole = time.split(".")[0]
            dt.time(int(whole[:2]), int(whole[2:4] or 0), min(int(whole[4:6] or 0), 59))
    except ValueError:
        raise ValueError(f"{text!r} is no real {_KINDS[vr][2:]}") from None
