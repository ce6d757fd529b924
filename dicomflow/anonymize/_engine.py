"""The de-identification engine: PS3.15 Annex E actions applied to a pydicom Dataset."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass

from pydicom import config
from pydicom.datadict import DicomDictionary
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileDataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence

from ._errors import DeidentificationError
from ._keys import Crosswalk, Keyring
from ._options import DeidOptions
from ._policy import CURVE_GROUPS, KEEP_REFS, OVERLAY_GROUPS, TEXT_VRS, Policy, policy_for, resolve
from ._record import check_pixels, file_meta, record_method
from ._structured import STRUCTURED_SEQUENCES, content_overrides
from ._tables import IodTypes, iod_for_sop_class, iod_types, safe_private
from ._values import CLEANED_TEXT, dummy, shift_date, shift_datetime

__all__ = ["ActionCounts", "Deidentifier"]

PATIENT_NAME = 0x00100010
PATIENT_ID = 0x00100020
STUDY_UID = 0x0020000D
TIMEZONE_OFFSET = 0x00080201
MEASURED_VALUE_SEQUENCE = 0x0040A300

_ITEM_TAG_BYTES = (b"\xfe\xff\x00\xe0", b"\xff\xfe\xe0\x00")


@dataclass(frozen=True)
class ActionCounts:
    """How many attributes (at every nesting level) each action was applied to.

    The compound codes are counted under the action they resolved to; a kept ``X/Z/U*``
    sequence counts as ``K``. The File Meta Information is not counted.
    """

    X: int = 0
    Z: int = 0
    D: int = 0
    K: int = 0
    C: int = 0
    U: int = 0

    def as_dict(self) -> dict[str, int]:
        """``{"X": ..., "Z": ..., ...}``."""
        return asdict(self)

    @property
    def total(self) -> int:
        """All attributes handled."""
        return sum(asdict(self).values())


class _Run:
    """The state of one `Deidentifier.deidentify` call."""

    __slots__ = ("counts", "crosswalk", "patient_key", "present", "shift", "types")

    def __init__(self, types: IodTypes | None, present: frozenset[str], patient_key: str) -> None:
        self.types = types
        self.present = present
        self.patient_key = patient_key
        self.shift: int | None = None
        self.crosswalk: Crosswalk | None = None
        self.counts = dict.fromkeys("XZDKCU", 0)


def _patient_key(ds: Dataset) -> str:
    for keyword, prefix in (("PatientID", ""), ("PatientName", "name:")):
        value = ds.get(keyword)
        if value is not None and str(value).strip():
            return prefix + str(value).strip()
    study = ds.get("StudyInstanceUID")
    return "study:" + str(study) if study else ""


def _values(elem: DataElement) -> list:
    value = elem.value
    if value is None or value == "":
        return []
    if isinstance(value, MultiValue | list | tuple):
        return list(value)
    return [value]


def _same(value: object) -> object:
    return value


def _element(tag: int, vr: str, value: object) -> DataElement:
    return DataElement(tag, vr, value, validation_mode=config.IGNORE)


class Deidentifier:
    """De-identifies pydicom Datasets by PS3.15 Annex E (Basic Profile plus Options).

    Parameters
    ----------
    secret : bytes
        Project secret (>= 16 bytes) keying every derived UID, pseudonym and date shift. It is
        never shown by ``repr`` and never written into outputs.
    options : DeidOptions or iterable of str, optional
        The Options (default: Basic Profile only).
    lookup : mapping, optional
        ``keyword -> {original: replacement}`` overriding derived values (see `load_lookup`).

    Examples
    --------
    >>> from pydicom import Dataset
    >>> ds = Dataset()
    >>> ds.PatientName, ds.PatientID = "Doe^Jane", "12345"
    >>> ds.StudyInstanceUID = "1.2.3.4"
    >>> out, counts = Deidentifier(b"k" * 32).deidentify(ds)
    >>> out.PatientIdentityRemoved, str(out.PatientID) != "12345", ds.PatientID
    ('YES', True, '12345')
    >>> out.StudyInstanceUID.startswith("2.25.")
    True
    """

    def __init__(
        self,
        secret: bytes,
        options: DeidOptions | Iterable[str] | None = None,
        *,
        lookup: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        if options is None:
            options = DeidOptions()
        elif not isinstance(options, DeidOptions):
            options = DeidOptions.from_names(options)
        self._options = options
        self._keys = Keyring(secret, lookup, options.date_shift_days)
        self._policy: Policy = policy_for(options)
        self._safe = safe_private() if options.retain_safe_private else {}

    @property
    def options(self) -> DeidOptions:
        """The options in force."""
        return self._options

    def __repr__(self) -> str:
        return f"Deidentifier(options={self._options.names!r}, secret=<hidden>)"

    def __getstate__(self) -> tuple[Keyring, DeidOptions]:
        return (self._keys, self._options)

    def __setstate__(self, state: tuple[Keyring, DeidOptions]) -> None:
        self._keys, self._options = state
        self._policy = policy_for(self._options)
        self._safe = safe_private() if self._options.retain_safe_private else {}

    # -- public -----------------------------------------------------------------------------

    def deidentify(
        self, ds: Dataset, *, crosswalk: Crosswalk | None = None
    ) -> tuple[FileDataset, ActionCounts]:
        """Return a de-identified copy of ``ds`` and the count of each action applied.

        ``ds`` is not modified. The copy has new File Meta Information and a zero preamble.

        Parameters
        ----------
        ds : Dataset
            The instance (a `pydicom.FileDataset` or any Dataset).
        crosswalk : Crosswalk, optional
            Receives ``(keyword, original, replacement)`` for pseudonyms, UIDs, AE titles,
            looked-up values and the patient's date shift.

        Raises
        ------
        DeidentificationError
            The instance cannot be de-identified with certainty (burned-in text, unreadable
            sequence, uninterpretable UN sequence that would have to be kept).
        """
        check_pixels(ds, self._options)
        meta = getattr(ds, "file_meta", None)
        try:
            sop_class = ds.get("SOPClassUID")
            if not sop_class and meta is not None:
                sop_class = meta.get("MediaStorageSOPClassUID")
            patient_key = _patient_key(ds)
        except Exception as exc:
            raise DeidentificationError(f"identifying attributes cannot be read: {exc}") from exc
        types = iod_types(iod_for_sop_class(str(sop_class))) if sop_class else None
        present = types.present_modules(set(ds.keys())) if types is not None else frozenset()
        run = _Run(types, present, patient_key)
        run.crosswalk = crosswalk
        body = self._dataset(ds, run, (), None, False)
        record_method(body, self._options)
        instance_uid = None
        if meta is not None and meta.get("MediaStorageSOPInstanceUID"):
            instance_uid = str(meta.MediaStorageSOPInstanceUID)
            if not self._options.retain_uids:  # Table E.1-1: (0002,0003) U, Retain UIDs K
                instance_uid = self._uid(instance_uid, run)
        out = FileDataset(
            "", body, preamble=b"\0" * 128, file_meta=file_meta(ds, body, instance_uid)
        )
        implicit, little = ds.original_encoding
        out.set_original_encoding(implicit, little, ds.original_character_set)
        return out, ActionCounts(**run.counts)

    # -- derived values ---------------------------------------------------------------------

    def _uid(self, original: str, run: _Run) -> str:
        new = self._keys.uid(original)
        if run.crosswalk is not None and new != original:
            run.crosswalk.add("UID", original, new)
        return new

    def _pseudonym(self, key: str) -> str:
        """The patient pseudonym of a patient key (looked up, else derived)."""
        if key.startswith("name:"):
            looked = self._keys.looked_up("PatientName", key[5:])
        else:
            looked = self._keys.looked_up("PatientID", key)
        return looked if looked is not None else self._keys.pseudonym(key)

    def _shift(self, run: _Run) -> int:
        if run.shift is None:
            run.shift = self._keys.shift_days(run.patient_key)
            if run.crosswalk is not None:
                run.crosswalk.add("DateShiftDays", run.patient_key, str(run.shift))
        return run.shift

    def _looked_up(self, tag: int, value: object, run: _Run) -> str | None:
        if not self._keys.lookup or isinstance(value, bytes):
            return None
        entry = DicomDictionary.get(tag)
        if entry is None:
            return None
        new = self._keys.looked_up(entry[4], str(value))
        if new is not None and run.crosswalk is not None:
            run.crosswalk.add(entry[4], str(value), new)
        return new

    # -- the walk -----------------------------------------------------------------------------

    def _get(self, src: Dataset, tag: int) -> DataElement:
        try:
            return src[tag]
        except Exception as exc:
            raise DeidentificationError(
                f"attribute ({tag >> 16:04X},{tag & 0xFFFF:04X}) cannot be read: {exc}"
            ) from exc

    def _dataset(
        self,
        src: Dataset,
        run: _Run,
        path: tuple[int, ...],
        overrides: Mapping[int, str] | None,
        dummies: bool,
    ) -> Dataset:
        out = Dataset()
        implicit, little = src.original_encoding
        out.set_original_encoding(implicit, little, src.original_character_set)
        codes = self._policy.codes
        private: list[int] = []
        for tag in list(src.keys()):
            if tag >> 16 & 1:
                private.append(tag)
                continue
            if dummies:
                code = "D"
            else:
                found = overrides.get(tag) if overrides else None
                code = found or codes.get(tag) or self._policy.code(tag)
                if len(code) > 1 or code == "T":
                    code = resolve(code, tag, path, run.types, run.present)
            self._apply(src, tag, code, out, run, path, dummies)
        if private:
            self._private(src, private, out, run, path, dummies)
        return out

    def _apply(
        self,
        src: Dataset,
        tag: int,
        code: str,
        out: Dataset,
        run: _Run,
        path: tuple[int, ...],
        dummies: bool = False,
    ) -> None:
        counts = run.counts
        if code == "X":
            counts["X"] += 1
            return
        if code == "K":
            raw = src.get_item(tag)
            if isinstance(raw, RawDataElement) and raw.length != 0xFFFFFFFF:
                vr = raw.VR
                if vr is None:  # implicit VR: the dictionary says what it is
                    entry = DicomDictionary.get(tag)
                    vr = entry[0] if entry is not None else None
                if vr is not None and vr != "SQ" and vr != "UN":
                    limit = self._policy.max_bytes.get(tag)
                    if limit is not None and raw.length > limit:
                        raise DeidentificationError(
                            f"({tag >> 16:04X},{tag & 0xFFFF:04X}) holds {raw.length} bytes, "
                            f"more than its VM allows ({limit}): the file is likely corrupt and "
                            "the element may hide other attributes"
                        )
                    out[tag] = raw  # immutable: shared, written back byte for byte
                    counts["K"] += 1
                    return
        elem = self._get(src, tag)
        vr = elem.VR
        if vr == "SQ":
            self._sequence(elem, code, out, run, path, dummies)
            return
        if code in ("K", KEEP_REFS):
            if vr == "UN" and isinstance(elem.value, bytes):
                if elem.is_undefined_length or elem.value[:4] in _ITEM_TAG_BYTES:
                    raise DeidentificationError(
                        f"({tag >> 16:04X},{tag & 0xFFFF:04X}) is a sequence of unknown VR (UN) "
                        "that would have to be kept; it cannot be interpreted"
                    )
            value = elem.value
            if isinstance(value, MultiValue):  # a new list: the caller's stays untouched
                value = MultiValue(_same, value)
            out[tag] = DataElement(
                tag, vr, value, already_converted=True, validation_mode=config.IGNORE
            )
            counts["K"] += 1
            return
        if code == "Z":
            new = self._replacement(tag, elem, run, path, empty=True)
            out[tag] = _element(tag, vr, new)
            counts["Z"] += 1
            return
        if code == "D" or (code == "U" and vr != "UI"):
            out[tag] = _element(tag, vr, self._replacement(tag, elem, run, path, empty=False))
            counts["D"] += 1
            return
        if code == "U":
            new_uids = [self._uid(str(v), run) for v in _values(elem)]
            out[tag] = _element(tag, vr, new_uids if len(new_uids) != 1 else new_uids[0])
            counts["U"] += 1
            return
        self._clean(src, tag, elem, out, run, path)

    def _replacement(
        self, tag: int, elem: DataElement, run: _Run, path: tuple[int, ...], empty: bool
    ) -> object:
        """Value for Z (``empty``) or D: pseudonym, looked-up value, derived UID or dummy."""
        values = _values(elem)
        if tag == PATIENT_ID and (values or not empty):
            original = str(values[0]).strip() if values else ""
            new = self._pseudonym(original or run.patient_key)
            if run.crosswalk is not None and original:
                run.crosswalk.add("PatientID", original, new)
            return new
        if tag == PATIENT_NAME and not path:
            original = str(values[0]).strip() if values else ""
            looked = self._keys.looked_up("PatientName", original) if original else None
            new = looked if looked is not None else self._pseudonym(run.patient_key)
            if run.crosswalk is not None and original:
                run.crosswalk.add("PatientName", original, new)
            return new
        if values:
            looked = self._looked_up(tag, values[0], run)
            if looked is not None:
                return looked
        if empty:
            return None
        if elem.VR == "UI":
            uids = [self._uid(str(v), run) for v in values] or ["2.25.0"]
            return uids if len(uids) > 1 else uids[0]
        return dummy(elem.VR)

    def _clean(
        self,
        src: Dataset,
        tag: int,
        elem: DataElement,
        out: Dataset,
        run: _Run,
        path: tuple[int, ...],
    ) -> None:
        """Action C by what the value is; see docs/deidentification.md."""
        vr, group = elem.VR, tag >> 16
        values = _values(elem)
        new: object
        if group in OVERLAY_GROUPS and tag & 0xFFFF == 0x3000:
            new = bytes(len(elem.value or b""))  # overlay bits blanked, geometry kept
        elif group in CURVE_GROUPS and vr not in TEXT_VRS:
            new = elem.value
        elif tag == TIMEZONE_OFFSET:
            run.counts["C"] += 1  # cleaned by removal: the shift drops UTC offsets too
            return
        elif vr in ("DA", "DT"):
            shift = self._shift(run)
            move = shift_date if vr == "DA" else shift_datetime
            moved = [move(str(v), shift) for v in values]
            dates = [m if m is not None else dummy(vr) for m in moved]
            new = dates if len(dates) != 1 else dates[0]
        elif vr in ("TM", "CS"):
            new = list(values) if len(values) != 1 else values[0]
        elif vr == "AE":
            titles = [self._keys.ae_title(str(v)) for v in values]
            if run.crosswalk is not None:
                for old, title in zip(values, titles, strict=True):
                    run.crosswalk.add("AE", str(old), title)
            new = titles if len(titles) != 1 else titles[0]
        elif vr == "UI":
            uids = [self._uid(str(v), run) for v in values]
            new = uids if len(uids) != 1 else uids[0]
        elif vr in TEXT_VRS:
            looked = self._looked_up(tag, values[0], run) if values else None
            new = looked if looked is not None else (CLEANED_TEXT if values else None)
        else:
            basic = self._policy.fallback.get(tag, "X")
            code = resolve(basic, tag, path, run.types, run.present)
            self._apply(src, tag, code if code != "C" else "X", out, run, path)
            return
        out[tag] = _element(tag, vr, new)
        run.counts["C"] += 1

    def _sequence(
        self,
        elem: DataElement,
        code: str,
        out: Dataset,
        run: _Run,
        path: tuple[int, ...],
        dummies: bool,
    ) -> None:
        tag = elem.tag
        if code == "Z":
            out[tag] = _element(tag, "SQ", Sequence())
            run.counts["Z"] += 1
            return
        inner = (*path, tag)
        keyword = DicomDictionary.get(tag, ("", "", "", "", ""))[4]
        if code == "D" and (keyword.endswith("CodeSequence") or tag == MEASURED_VALUE_SEQUENCE):
            dummies = True  # a code or measurement whose meaning may identify: all dummies
        structured = (
            self._options.clean_structured_content and tag in STRUCTURED_SEQUENCES and not dummies
        )
        items = []
        for item in elem.value or ():
            overrides = None
            if structured:
                overrides = content_overrides(item, self._options)
                if overrides is None:
                    run.counts["X"] += 1
                    continue
            items.append(self._dataset(item, run, inner, overrides, dummies))
        out[tag] = _element(tag, "SQ", Sequence(items))
        run.counts["K" if code == KEEP_REFS else code if code in "KCDU" else "K"] += 1

    def _private(
        self,
        src: Dataset,
        tags: list[int],
        out: Dataset,
        run: _Run,
        path: tuple[int, ...],
        dummies: bool,
    ) -> None:
        """Private attributes: removed, except Table E.3.10-1 ones with Retain Safe Private."""
        if not self._safe or dummies:
            run.counts["X"] += len(tags)
            return
        creators: dict[tuple[int, int], str] = {}
        for tag in tags:
            if 0x10 <= tag & 0xFFFF <= 0xFF:
                value = self._get(src, tag).value
                if isinstance(value, bytes):
                    value = value.decode("latin-1")
                creators[(tag >> 16, tag & 0xFF)] = str(value or "").strip()
        kept: list[int] = []
        blocks: set[tuple[int, int]] = set()
        for tag in tags:
            group, elem = tag >> 16, tag & 0xFFFF
            if elem < 0x1000:
                continue
            creator = creators.get((group, elem >> 8))
            if creator is not None and (group, creator, elem & 0xFF) in self._safe:
                kept.append(tag)
                blocks.add((group, elem >> 8))
            else:
                run.counts["X"] += 1
        for tag in tags:
            group, elem = tag >> 16, tag & 0xFFFF
            if elem < 0x1000 and (group, elem) not in blocks:
                run.counts["X"] += 1
        for group, block in sorted(blocks):
            tag = group << 16 | block
            out[tag] = _element(tag, "LO", creators[(group, block)])
            run.counts["K"] += 1
        for tag in kept:
            self._apply(src, tag, "K", out, run, path)
