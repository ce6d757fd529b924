"""Clean Structured Content (PS3.15 E.3.4): content items judged by their concept name."""

from __future__ import annotations

from pydicom.dataset import Dataset

from ._errors import DeidentificationError
from ._options import DeidOptions
from ._policy import content_item_code
from ._tables import content_rows

__all__ = ["STRUCTURED_SEQUENCES", "VALUE_ATTRIBUTE", "content_overrides"]

MEASURED_VALUE_SEQUENCE = 0x0040A300
CONCEPT_NAME_CODE_SEQUENCE = 0x0040A043
VALUE_TYPE = 0x0040A040

#: Sequences whose items are content items (Clean Structured Content, PS3.15 E.3.4).
STRUCTURED_SEQUENCES = frozenset({0x0040A730, 0x00400555, 0x00400610, 0x00400612, 0x0040B020})
#: The attribute holding a content item's value, by Value Type.
VALUE_ATTRIBUTE = {
    "TEXT": 0x0040A160,
    "DATETIME": 0x0040A120,
    "DATE": 0x0040A121,
    "TIME": 0x0040A122,
    "PNAME": 0x0040A123,
    "UIDREF": 0x0040A124,
    "COMPOSITE": 0x00081199,
    "IMAGE": 0x00081199,
    "WAVEFORM": 0x00081199,
    "NUM": MEASURED_VALUE_SEQUENCE,
    "CODE": 0x0040A168,
}


def content_overrides(item: Dataset, options: DeidOptions) -> dict[int, str] | None:
    """Table E.3.4-1 code of a content item, as a code for its value attribute.

    Returns ``None`` when the item is removed (``X``), ``{}`` when the table does not list its
    concept name (the item's attributes then follow Table E.1-1), else
    ``{value attribute tag: code}``. Compound codes take their first letter: SR templates, not
    PS3.3 Types, decide what a content item needs.
    """
    try:
        names = item.get(CONCEPT_NAME_CODE_SEQUENCE)
        if names is None or not names.value:
            return {}
        value_type = str(item[VALUE_TYPE].value if VALUE_TYPE in item else "").strip()
        concept = names.value[0]
        key = (
            str(concept.get("CodeValue", "")).strip(),
            str(concept.get("CodingSchemeDesignator", "")).strip(),
        )
    except Exception as exc:
        raise DeidentificationError(f"content item cannot be read: {exc}") from exc
    rows = content_rows().get(key)
    if rows is None:
        return {}
    code = content_item_code(rows, value_type, options)
    if code == "X":
        return None
    target = VALUE_ATTRIBUTE.get(value_type)
    return {target: code} if target is not None else {}
