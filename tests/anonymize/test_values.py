"""Property tests of the value helpers and the public surface."""

from __future__ import annotations

import datetime as dt

from hypothesis import given
from hypothesis import strategies as st
from pydicom import config
from pydicom.valuerep import validate_value

import dicomflow.anonymize as deid
from dicomflow.anonymize import Keyring, combine, shift_date, shift_datetime

from .conftest import SECRET

DATES = st.dates(min_value=dt.date(1900, 1, 1), max_value=dt.date(2099, 12, 31))
SHIFTS = st.integers(min_value=-3650, max_value=3650)


def _text(day: dt.date) -> str:
    return day.strftime("%Y%m%d")


@given(DATES, DATES, SHIFTS)
def test_shift_keeps_intervals(a: dt.date, b: dt.date, days: int) -> None:
    moved_a, moved_b = shift_date(_text(a), days), shift_date(_text(b), days)
    parse = dt.datetime.strptime
    interval = parse(moved_b, "%Y%m%d") - parse(moved_a, "%Y%m%d")
    assert interval.days == (b - a).days


@given(DATES, SHIFTS, st.sampled_from(["", "10", "1015", "101530", "101530.123456"]))
def test_shift_datetime_keeps_time_and_precision(day: dt.date, days: int, time: str) -> None:
    moved = shift_datetime(_text(day) + time + "+0100", days)
    assert moved is not None and moved.endswith(time) and "+" not in moved
    assert dt.datetime.strptime(moved[:8], "%Y%m%d").date() - day == dt.timedelta(days=days)


@given(st.text(min_size=1, max_size=64))
def test_derived_uids_are_valid_and_stable(original: str) -> None:
    keys = Keyring(SECRET)
    uid = keys.uid(original)
    if original.strip("\0 ") and not original.startswith("1.2.840.10008."):
        assert uid.startswith("2.25.") and len(uid) <= 64
        validate_value("UI", uid, config.RAISE)
        assert uid == Keyring(SECRET).uid(original)


def test_safer_code_wins_between_options() -> None:
    assert combine("X", ["K", "C"]) == "C"
    assert combine("X", ["K", "K"]) == "K"
    assert combine("D", []) == "D"


def test_public_names() -> None:
    assert sorted(deid.__all__) == sorted(
        [
            "OPTIONS",
            "ActionCounts",
            "AttributeAction",
            "Crosswalk",
            "DeidOptions",
            "DeidentificationError",
            "Deidentifier",
            "Deidentify",
            "Finding",
            "FolderFinding",
            "FolderReport",
            "OptionSpec",
            "PixelRule",
            "PixelRules",
            "explain",
            "load_lookup",
            "merge_crosswalk",
            "read_crosswalk",
            "verify",
            "verify_folders",
            # recipes: per-attribute rules, and converters from CTP and deid
            "Conversion",
            "Recipe",
            "RecipeRule",
            "Unmapped",
            "convert_ctp",
            "convert_deid",
            "parse_target",
            # Clean Pixel Data's OCR (burned-in text)
            "BURNED_IN_TEXT_ACTIONS",
            "PixelReport",
            "TextBox",
            "TextDetector",
            "decoded_frames",
            "display_frame",
            "find_text",
            "risk_reasons",
            # the engine's building blocks, the seams its unit tests use
            "Keyring",
            "ProfileRow",
            "action_codes",
            "check_apart",
            "combine",
            "iod_for_sop_class",
            "method_codes",
            "output_root_above",
            "parse_tag",
            "profile_rows",
            "read_secret",
            "safe_private",
            "shift_date",
            "shift_datetime",
        ]
    )
    assert all(hasattr(deid, name) for name in deid.__all__)
