"""What happens around the attribute walk: the burned-in check, the record of what was done,
and the regenerated File Meta Information."""

from __future__ import annotations

from collections.abc import Iterable

from pydicom import config
from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import UID

from .._version import __version__
from ..dicom import file_meta, native_syntax
from ._errors import DeidentificationError
from ._options import BASIC_PROFILE_CODE, DeidOptions
from ._tables import iod_for_sop_class, method_codes

__all__ = ["INSERTED_TEXTS", "check_pixels", "output_file_meta", "record_method"]

#: Values the engine inserts into every output (besides the CID 7050 codes).
INSERTED_TEXTS = (
    "YES", "UNMODIFIED", "MODIFIED", "REMOVED", "DCM", "PS3.15 Annex E",
    "masked identifying text in",
)  # fmt: skip


_PIXEL_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)
#: Modalities whose images often carry burned-in text.
BURNED_IN_MODALITIES = frozenset({"US", "OT", "XC", "SC"})


def _burned_in_iod(ciod: str | None) -> bool:
    if ciod is None:
        return False
    return (
        "Secondary Capture" in ciod
        or ciod.startswith("Ultrasound")
        or ciod in ("VL Photographic Image", "Video Photographic Image")
    )


def _text(ds: Dataset, keyword: str) -> str:
    try:
        tag = tag_for_keyword(keyword)
        elem = ds.get(tag) if tag is not None else None  # by tag: the keyword path is slower
        value = elem.value if elem is not None else None
    except Exception:  # noqa: BLE001 - an unreadable value is reported by the walk
        return ""
    if value is None:
        return ""
    return str(value).strip().upper()


def check_pixels(ds: Dataset, options: DeidOptions) -> list[str]:
    """Why the pixel data may show identifying text (empty: no reason to think so).

    Returns
    -------
    list of str
        The reasons: Burned In Annotation ``YES``, a modality or SOP Class that often carries
        burned-in text (US, SC, OT, XC, secondary and screen captures, VL photographs).

    Raises
    ------
    DeidentificationError
        There is a reason and Clean Pixel Data is not chosen (the instance is quarantined).
    """
    if not any(tag in ds for tag in _PIXEL_TAGS):
        return []
    reasons = []
    if _text(ds, "BurnedInAnnotation") == "YES":
        reasons.append("Burned In Annotation is YES")
    modality = _text(ds, "Modality")
    if modality in BURNED_IN_MODALITIES:
        reasons.append(f"modality {modality} often carries burned-in text")
    sop_class = _text(ds, "SOPClassUID")
    ciod = iod_for_sop_class(sop_class)
    if _burned_in_iod(ciod):
        reasons.append(f"{ciod} instances often carry burned-in text")
    if reasons and not options.clean_pixel_data:
        raise DeidentificationError(
            f"pixel data may show identifying text ({'; '.join(reasons)}); not de-identified. "
            "Choose the clean-pixel-data option to blank it, or leave the instance out"
        )
    return reasons


def _set(ds: Dataset, tag: int, vr: str, value: object) -> None:
    """Set a value the engine itself writes (known valid: pydicom's checks are skipped)."""
    ds[tag] = DataElement(tag, vr, value, validation_mode=config.IGNORE)


def _code_item(code_value: str) -> Dataset:
    row = method_codes()[code_value]
    item = Dataset()
    _set(item, 0x00080100, "SH", row.code_value)
    _set(item, 0x00080102, "SH", row.scheme)
    _set(item, 0x00080104, "LO", row.meaning)
    return item


def _clip(text: str, limit: int = 64) -> str:
    """A value that fits LO (64 characters)."""
    return text if len(text) <= limit else text[: limit - 1] + "~"


def record_method(
    out: Dataset,
    options: DeidOptions,
    *,
    pixels_cleaned: bool = False,
    notes: Iterable[str] = (),
) -> None:
    """Add Patient Identity Removed, the method text and codes, and the longitudinal flag.

    The method text and code items are appended to any already present (PS3.15 E.1.1).
    Clean Pixel Data is recorded only for an instance whose pixels a rule blanked
    (``pixels_cleaned``); its Burned In Annotation then becomes ``NO``. ``notes`` are further
    De-identification Method values (the recipe, the identifying attributes it kept), cut to
    64 characters each.
    """
    codes = [BASIC_PROFILE_CODE] + [
        s.code_value for s in options.selected if s.name != "clean-pixel-data" or pixels_cleaned
    ]
    _set(out, 0x00120062, "CS", "YES")  # Patient Identity Removed
    texts = [f"dicomflow {__version__} PS3.15 Annex E"]
    texts += [method_codes()[c].meaning for c in codes]
    texts += [_clip(note) for note in notes]
    old = out.get(0x00120063)
    if old is not None and old.value:
        previous = list(old.value) if old.VM > 1 else [old.value]
        texts = [str(t) for t in previous] + texts
    _set(out, 0x00120063, "LO", texts)  # De-identification Method
    previous_items = out.get(0x00120064)
    items = list(previous_items.value) if previous_items is not None else []
    _set(out, 0x00120064, "SQ", Sequence(items + [_code_item(c) for c in codes]))
    if options.retain_longitudinal_full_dates:
        flag = "UNMODIFIED"
    elif options.retain_longitudinal_modified_dates:
        flag = "MODIFIED"
    else:
        flag = "REMOVED"
    _set(out, 0x00280303, "CS", flag)  # Longitudinal Temporal Information Modified
    if pixels_cleaned:
        _set(out, 0x00280301, "CS", "NO")  # Burned In Annotation


def _transfer_syntax(src: Dataset) -> UID:
    meta = getattr(src, "file_meta", None)
    if meta is not None and "TransferSyntaxUID" in meta:
        return UID(meta.TransferSyntaxUID)
    implicit, little = src.original_encoding
    return UID(native_syntax(bool(implicit), little is not False).uid)


def output_file_meta(src: Dataset, out: Dataset, instance_uid: str | None) -> FileMetaDataset:
    """New File Meta Information describing dicomflow, for the de-identified ``out``.

    Parameters
    ----------
    src : Dataset
        The original (for its transfer syntax and Media Storage SOP Class).
    out : Dataset
        The de-identified data set.
    instance_uid : str or None
        Media Storage SOP Instance UID to write (already replaced by the caller).
    """
    old = getattr(src, "file_meta", None)
    sop_class = _value(out, 0x00080016) or (_value(old, 0x00020002) if old else None)
    uid = _value(out, 0x00080018) or instance_uid
    return file_meta(
        str(sop_class) if sop_class else None, str(uid) if uid else None, _transfer_syntax(src)
    )


def _value(ds: Dataset, tag: int) -> object:
    elem = ds.get(tag)
    return elem.value if elem is not None else None
