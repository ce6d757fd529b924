"""The UID rule of PS3.5 9.1, as :func:`dicomflow.dicom.uid_problem` applies it."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydicom.uid import UID, generate_uid

from dicomflow.dicom import MAX_UID_LENGTH, safe_component, uid_problem


@pytest.mark.parametrize(
    "uid",
    ["0", "1.2", "1.2.840.10008.1.2.1", "2.25.0", "1.0.3", "9" * 64, "1." + "2" * 62],
)
def test_valid(uid):
    assert uid_problem(uid) is None


@pytest.mark.parametrize(
    ("uid", "reason"),
    [
        ("", "is empty"),
        ("1.2.3/4", "has '/' (digits and dots only)"),
        ("1.2.3_4", "has '_' (digits and dots only)"),
        ("1.2.3:4", "has ':' (digits and dots only)"),
        ("1.2.\u00e9", "has '\u00e9' (digits and dots only)"),
        ("1.2 ", "has ' ' (digits and dots only)"),
        ("1.2\0", "has '\\x00' (digits and dots only)"),
        (".1.2", "starts with a dot"),
        ("1.2.", "ends with a dot"),
        ("1..2", "has an empty component ('..')"),
        ("1.02", "has a leading zero in '02'"),
        ("00", "has a leading zero in '00'"),
        ("1" * 65, "has 65 characters (at most 64)"),
    ],
)
def test_invalid(uid, reason):
    assert uid_problem(uid) == reason
    assert len(f"Affected SOP Instance UID {reason}") <= 64  # fits a DIMSE Error Comment


def test_agrees_with_pydicom_on_generated_uids():
    for _ in range(50):
        uid = generate_uid()
        assert uid_problem(uid) is None and UID(uid).is_valid


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
@given(st.text(alphabet="0123456789.x/", max_size=70))
def test_same_verdict_as_pydicom(value):
    """pydicom's UID.is_valid is the same rule (its regex), used here as a second opinion."""
    assert (uid_problem(value) is None) == (bool(value) and UID(value).is_valid)


@given(st.lists(st.integers(0, 10**12), min_size=1, max_size=8))
def test_a_valid_uid_is_its_own_path_component(parts):
    uid = ".".join(map(str, parts))
    if len(uid) <= MAX_UID_LENGTH:
        assert uid_problem(uid) is None
        assert safe_component(uid) == uid and not uid.startswith(".")


def test_not_strict_lets_legacy_leading_zeros_through():
    assert uid_problem("1.2.03.4", strict=False) is None
    assert uid_problem("1.2.03.4") == "has a leading zero in '03'"
    assert uid_problem("1.2.3/4", strict=False) == "has '/' (digits and dots only)"
    assert uid_problem(".1.2", strict=False) == "starts with a dot"
