"""Replacement values: dummies per VR (action D) and date shifting (action C on dates)."""

from __future__ import annotations

import datetime as _dt

__all__ = [
    "CLEANED_TEXT",
    "DUMMY_TEXT",
    "FIXED_TEXTS",
    "dummy",
    "shift_date",
    "shift_datetime",
]

#: The dummy of the text, name, code string and AE VRs.
DUMMY_TEXT = "ANONYMOUS"
#: What a cleaned descriptor becomes (action C on free text).
CLEANED_TEXT = "CLEANED"
DUMMY_DATE = "19000101"
DUMMY_TIME = "000000"
DUMMY_DATETIME = "19000101000000"
DUMMY_AGE = "000Y"
DUMMY_URI = "urn:x-dicomflow:removed"

_DUMMIES: dict[str, object] = {
    "AE": DUMMY_TEXT,
    "AS": DUMMY_AGE,
    "CS": DUMMY_TEXT,
    "DA": DUMMY_DATE,
    "DT": DUMMY_DATETIME,
    "TM": DUMMY_TIME,
    "DS": "0",
    "IS": "0",
    "LO": DUMMY_TEXT,
    "LT": DUMMY_TEXT,
    "SH": DUMMY_TEXT,
    "ST": DUMMY_TEXT,
    "UT": DUMMY_TEXT,
    "UC": DUMMY_TEXT,
    "PN": DUMMY_TEXT,
    "UR": DUMMY_URI,
    "FL": 0.0,
    "FD": 0.0,
    "SL": 0,
    "SS": 0,
    "SV": 0,
    "UL": 0,
    "US": 0,
    "UV": 0,
    "AT": 0,
    "OB": b"\0\0",
    "UN": b"\0\0",
    "OW": b"\0\0",
    "OF": b"\0\0\0\0",
    "OL": b"\0\0\0\0",
    "OD": b"\0" * 8,
    "OV": b"\0" * 8,
}

#: Every fixed text the engine writes; the verifier ignores original values found inside them.
FIXED_TEXTS = (
    DUMMY_TEXT,
    CLEANED_TEXT,
    DUMMY_DATE,
    DUMMY_TIME,
    DUMMY_DATETIME,
    DUMMY_AGE,
    DUMMY_URI,
)


def dummy(vr: str) -> object:
    """A fixed, valid, non-empty value for ``vr`` (UIDs are derived elsewhere).

    Examples
    --------
    >>> dummy("PN"), dummy("DA"), dummy("US")
    ('ANONYMOUS', '19000101', 0)
    """
    return _DUMMIES.get(vr.split(" ")[0], b"\0\0")


def _parse_date(text: str) -> _dt.date | None:
    text = text.strip().replace(".", "").replace("-", "")
    if len(text) != 8 or not text.isdigit():
        return None
    try:
        return _dt.date(int(text[:4]), int(text[4:6]), int(text[6:8]))
    except ValueError:
        return None


def _shifted(day: _dt.date, days: int) -> _dt.date | None:
    try:
        return day + _dt.timedelta(days=days)
    except OverflowError:
        return None


def shift_date(value: str, days: int) -> str | None:
    """Shift a DA value by whole days; ``None`` when it is not a readable date.

    Examples
    --------
    >>> shift_date("20240301", -1)
    '20240229'
    """
    day = _parse_date(value)
    if day is None:
        return None
    moved = _shifted(day, days)
    return None if moved is None else moved.strftime("%Y%m%d")


def shift_datetime(value: str, days: int) -> str | None:
    """Shift a DT value by whole days, keeping its precision and dropping any UTC offset.

    Only the date part moves, so the time of day and every interval within a patient are
    kept. A DT given to the year or month is shifted from its first day and cut back to the
    same precision. ``None`` when it is not a readable DT.

    Examples
    --------
    >>> shift_datetime("20240301101500.25+0100", -1)
    '20240229101500.25'
    >>> shift_datetime("2024", -400)
    '2022'
    """
    text = value.strip()
    for sign in "+-":
        cut = text.find(sign, 4)
        if cut != -1:
            text = text[:cut]
    digits = len(text.split(".")[0])
    if digits < 4 or digits % 2 or not text.split(".")[0].isdigit():
        return None
    date_part = text[:8]
    padded = date_part + "0101"[len(date_part) - 4 :] if len(date_part) < 8 else date_part
    day = _parse_date(padded)
    if day is None:
        return None
    moved = _shifted(day, days)
    if moved is None:
        return None
    return moved.strftime("%Y%m%d")[: len(date_part)] + text[len(date_part) :]
