"""One test per row of Table E.1-1, for the Basic Profile and for each Option column.

The cases are generated from the package's copy of the table: every row with the Basic Profile
alone, plus every row again with each Option whose cell in that row is not empty (the Option
selected alone, so its cell is the code). Each case builds a data set holding the attribute with
a valid value for its VR (VR from pydicom's dictionary), de-identifies it, and checks the effect
of the table's code as PS3.15 Table E.1-1a defines it:

- ``X``: the attribute is gone; ``Z``: present and empty (a sequence without items);
- ``D``: present, non-empty, valid for its VR and different (a sequence keeps items, cleaned);
- ``K``: unchanged (a sequence keeps its items, whose contents are cleaned recursively);
- ``U``: a different ``2.25`` UID, the same wherever the original UID occurs;
- ``C``: cleaned as ``docs/deidentification.md`` documents it per VR.

The data sets carry no SOP Class UID, so the IOD is unknown and a compound code takes its first
(default) letter; `test_engine.py` checks compound codes against real IODs. Documented
exceptions checked here: Patient's Name and Patient ID get the patient pseudonym for ``Z``
(PS3.15 allows a dummy for ``Z``); group 0004 attributes are removed outside a DICOMDIR; Media
Storage SOP Instance UID (0002,0003) is tested in the File Meta Information; the private
attribute rule row uses an attribute that Table E.3.10-1 does not list, so it is removed even
with Retain Safe Private.

`test_nested_row` repeats every case with the attribute two sequence items deep and checks the
result equals the top-level one.

Skipped: 26 rows whose tags are newer than pydicom 3.0.2's data dictionary (no VR to build a
value from), i.e. 49 of the 1,293 ``test_row`` cases and the same 49 ``test_nested_row`` cases;
``test_nested_row`` also skips the 2 File Meta cases. `test_skip_count` keeps these numbers true.
"""

from __future__ import annotations

import datetime as dt

import pytest
from pydicom import config
from pydicom.datadict import DicomDictionary, dictionary_VR
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.valuerep import validate_value

from dicomflow.anonymize import OPTIONS, Deidentifier, DeidOptions, ProfileRow, profile_rows

from .conftest import SECRET

COLUMN_FIELD = {s.column: s.field for s in OPTIONS if s.column}
ITEM_UID = "1.2.3.4.5.6.7.8.9"
UID_IN_ITEM = 0x0040A124  # Table E.1-1: U in every column
TEXT = {"LO", "LT", "SH", "ST", "UT", "UC", "PN", "UR"}
BINARY = {"OB", "OW", "OF", "OD", "OL", "OV", "UN"}
SHIFT = (-3650, -1)  # never 0, so a shifted date always changes
CONTAINERS = (0x00082218, 0x00540220)  # Anatomic Region > View Code: kept, not in the table

VALUES: dict[str, object] = {
    "AE": "STATION_7",
    "AS": "042Y",
    "CS": "VALUE_7",
    "DA": "20210314",
    "DT": "20210314101112",
    "TM": "101112",
    "DS": "12.5",
    "IS": "42",
    "LO": "Secret Text 7",
    "LT": "Secret long text 7",
    "SH": "Secret 7",
    "ST": "Secret short text 7",
    "UT": "Secret unlimited text 7",
    "UC": "Secret UC 7",
    "PN": "Doe^John",
    "UI": "1.2.826.0.1.3680043.2.1125.7",
    "UR": "http://example.org/secret",
    "FL": 7.5,
    "FD": 7.5,
    "SL": 7,
    "SS": 7,
    "UL": 7,
    "US": 7,
    "SV": 7,
    "UV": 7,
    "AT": 0x00100010,
    "OB": b"\x01\x02\x03\x04",
    "OW": b"\x01\x02\x03\x04",
    "OF": b"\x01\x02\x03\x04",
    "OD": b"\x01\x02\x03\x04\x05\x06\x07\x08",
    "OL": b"\x01\x02\x03\x04",
    "OV": b"\x01\x02\x03\x04\x05\x06\x07\x08",
    "UN": b"\x01\x02\x03\x04",
}


def _row_tag(row: ProfileRow) -> int | None:
    """The tag a case uses for a row; ``None`` when pydicom's dictionary lacks it."""
    if row.kind == "private_rule":
        return 0x00191010
    if row.kind == "mask":
        return {"(60xx,3000)": 0x60023000, "(60xx,4000)": 0x60024000}.get(row.tag, 0x50022500)
    return row.value if row.value in DicomDictionary else None


def _cases() -> list:
    cases = []
    for row in profile_rows():
        columns = ["basic", *row.options]
        for column in columns:
            marks = ()
            if _row_tag(row) is None:
                marks = pytest.mark.skip(reason=f"{row.tag} is not in pydicom 3.0.2's dictionary")
            cases.append(pytest.param(row, column, id=f"{row.tag}-{column}", marks=marks))
    return cases


CASES = _cases()
_ENGINES: dict[str, Deidentifier] = {}


def _engine(column: str) -> Deidentifier:
    if column not in _ENGINES:
        fields = {} if column == "basic" else {COLUMN_FIELD[column]: True}
        _ENGINES[column] = Deidentifier(SECRET, DeidOptions(date_shift_days=SHIFT, **fields))
    return _ENGINES[column]


def _vr(tag: int) -> str:
    if tag == 0x00191010:
        return "LO"  # the private attribute of the private rule row
    return dictionary_VR(tag).split(" ")[0]


def _value(vr: str) -> object:
    if vr == "SQ":
        item = Dataset()
        item.add(DataElement(UID_IN_ITEM, "UI", ITEM_UID))
        item.CodeMeaning = "Secret meaning"
        return Sequence([item])
    return VALUES[vr]


def _holder(row: ProfileRow, tag: int, vr: str) -> Dataset:
    """A data set holding the row's attribute (and, for the private rule, its creator)."""
    ds = Dataset()
    if row.kind == "private_rule":
        ds.add(DataElement(0x00190010, "LO", "ACME PRIVATE 1.0"))
    ds.add(DataElement(tag, vr, _value(vr)))
    if vr == "UI":  # the same UID again, elsewhere, to check U is consistent
        item = Dataset()
        item.add(DataElement(UID_IN_ITEM, "UI", VALUES["UI"]))
        ds.ContentSequence = Sequence([item])
    return ds


def _expected(row: ProfileRow, column: str, tag: int) -> str:
    code = row.basic if column == "basic" else row.options[column]
    if tag >> 16 == 0x0004:
        return "X"  # outside a DICOMDIR no group 0004 attribute stays (PS3.15 E.1.1)
    return code.split("/")[0]  # no SOP Class: unknown IOD, default letter


def _date(text: str) -> dt.date:
    return dt.datetime.strptime(text[:8], "%Y%m%d").date()


def _check_shift(before: str, after: str) -> None:
    days = (_date(after) - _date(before)).days
    assert SHIFT[0] <= days <= SHIFT[1], (before, after)
    assert after[8:] == before[8:]  # time of day and precision kept


def _check(code: str, row: ProfileRow, column: str, tag: int, vr: str, out: Dataset) -> None:
    original = _value(vr)
    if code == "X":
        assert tag not in out
        return
    assert tag in out, f"{row.tag} missing for {code}"
    elem = out[tag]
    if code == "K":
        if vr == "SQ":
            assert len(elem.value) == 1
            assert elem.value[0][UID_IN_ITEM].value != ITEM_UID  # contents still cleaned
        else:
            assert elem.value == original
        return
    if code == "Z":
        if tag in (0x00100010, 0x00100020):  # patient pseudonym, a dummy allowed for Z
            assert elem.value and str(elem.value) != str(original)
        elif vr == "SQ":
            assert len(elem.value) == 0
        else:
            assert elem.is_empty
        return
    if code == "D":
        assert not elem.is_empty
        if vr == "SQ":
            assert len(elem.value) >= 1
            assert elem.value[0][UID_IN_ITEM].value != ITEM_UID
            return
        assert elem.value != original
        validate_value(elem.VR, elem.value, config.RAISE)
        return
    if code == "U":
        assert elem.VR == "UI" and elem.value != original
        assert elem.value.startswith("2.25.")
        validate_value("UI", elem.value, config.RAISE)
        assert out.ContentSequence[0][UID_IN_ITEM].value == elem.value
        return
    assert code == "C", code
    _check_clean(row, column, tag, vr, elem, original, out)


def _check_clean(row, column, tag, vr, elem, original, out) -> None:
    """C as documented in docs/deidentification.md ("Cleaning")."""
    group = tag >> 16
    if vr == "SQ":
        assert len(elem.value) == 1
        assert elem.value[0][UID_IN_ITEM].value != ITEM_UID
    elif 0x6000 <= group <= 0x601E and tag & 0xFFFF == 0x3000:
        assert elem.value == bytes(len(original))  # overlay bits blanked
    elif vr == "DA" or vr == "DT":
        _check_shift(original, str(elem.value))
    elif vr in ("TM", "CS"):
        assert elem.value == original
    elif vr == "AE":
        assert elem.value != original and elem.value.startswith("AE") and len(elem.value) <= 16
    elif vr in TEXT:
        assert elem.value == "CLEANED"
    else:
        raise AssertionError(f"unexpected C on {vr} for {row.tag}")


@pytest.mark.parametrize(("row", "column"), CASES)
def test_row(row: ProfileRow, column: str) -> None:
    tag = _row_tag(row)
    vr = _vr(tag)
    code = _expected(row, column, tag)
    engine = _engine(column)
    if tag == 0x00020003:  # the File Meta Information is regenerated, not walked
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPInstanceUID = VALUES["UI"]
        out, _ = engine.deidentify(ds)
        new = out.file_meta.MediaStorageSOPInstanceUID
        assert (new == VALUES["UI"]) if code == "K" else new.startswith("2.25.")
        return
    ds = _holder(row, tag, vr)
    out, counts = engine.deidentify(ds)
    if code == "C" and vr in BINARY and not (0x6000 <= tag >> 16 <= 0x601E):
        code = row.basic.split("/")[0]  # binary values cannot be cleaned: Basic action
    if row.kind == "private_rule":
        code = "X"  # C keeps only Table E.3.10-1 attributes; this one is not listed
    if code == "C" and tag == 0x00080201:
        assert tag not in out  # Timezone Offset From UTC: cleaned by removal
        return
    _check(code, row, column, tag, vr, out)
    assert counts.total >= 1
    if row.kind == "private_rule":
        assert 0x00190010 not in out  # the creator goes with its last attribute


@pytest.mark.parametrize(("row", "column"), CASES)
def test_nested_row(row: ProfileRow, column: str) -> None:
    tag = _row_tag(row)
    if tag == 0x00020003:
        pytest.skip("File Meta Information only occurs at the top level")
    vr = _vr(tag)
    engine = _engine(column)
    top, _ = engine.deidentify(_holder(row, tag, vr))
    inner = _holder(row, tag, vr)
    middle = Dataset()
    middle.add(DataElement(CONTAINERS[1], "SQ", Sequence([inner])))
    outer = Dataset()
    outer.add(DataElement(CONTAINERS[0], "SQ", Sequence([middle])))
    out, _ = engine.deidentify(outer)
    nested = out[CONTAINERS[0]].value[0][CONTAINERS[1]].value[0]
    if tag == 0x00100010:  # nested Patient's Name is plain Z: the pseudonym is top-level only
        code = _expected(row, column, tag)
        assert (tag not in nested) if code == "X" else nested[tag].is_empty
        return
    assert (tag in nested) == (tag in top)
    if tag in top:
        assert nested[tag] == top[tag]


def test_skip_count() -> None:
    unknown = [r for r in profile_rows() if _row_tag(r) is None]
    assert len(unknown) == 26
    assert len(CASES) == 1293
    assert sum(1 for case in CASES if case.marks) == 49
