"""The de-identification engine: PS3.15 Annex E actions applied to a pydicom Dataset."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from dataclasses import replace as _replace
from pathlib import Path
from typing import Any, cast

from pydicom import config
from pydicom.datadict import DicomDictionary
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileDataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag

from ..dicom import DeidentifiedDataset, Fallback
from ..dicom import Writer as _SequenceWriter
from ..errors import ConfigError
from ._burned import BURNED_IN_TEXT_ACTIONS, PixelReport, clean_pixels, risk_reasons
from ._errors import DeidentificationError
from ._keys import Crosswalk, Keyring
from ._ocr import TextDetector
from ._options import DeidOptions
from ._pixels import PixelRules
from ._policy import CURVE_GROUPS, KEEP_REFS, OVERLAY_GROUPS, TEXT_VRS, Policy, policy_for, resolve
from ._recipe import DATE_VRS, PSEUDONYM_VRS, Recipe
from ._recipe_plan import Hit, RecipePlan
from ._record import check_pixels, output_file_meta, record_method
from ._scrub import Scrubber, identifying_values
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
    sequence counts as ``K``. The File Meta Information is not counted. Recipe rules count
    as the action they resemble: keep ``K``, remove ``X``, empty ``Z``, replace ``D``,
    pseudonymise ``U``, shift ``C``. ``retained`` lists, with their number of occurrences,
    the attributes a recipe kept although the profile does not keep them.
    """

    X: int = 0
    Z: int = 0
    D: int = 0
    K: int = 0
    C: int = 0
    U: int = 0
    retained: tuple[tuple[str, int], ...] = ()
    #: attributes the profile keeps in which an identifying value of the instance was found
    #: and masked (see :mod:`._scrub`), with the occurrences masked
    masked: tuple[tuple[str, int], ...] = ()

    def as_dict(self) -> dict[str, int]:
        """``{"X": ..., "Z": ..., ...}`` (the action codes; not ``retained``)."""
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name not in ("retained", "masked")
        }

    @property
    def total(self) -> int:
        """All attributes handled."""
        return sum(self.as_dict().values())


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


def _value(ds: Dataset, tag: int) -> object:
    elem = ds.get(tag)  # by tag: pydicom's keyword lookup is slower
    return elem.value if elem is not None else None


def _patient_key(ds: Dataset) -> str:
    for tag, prefix in ((PATIENT_ID, ""), (PATIENT_NAME, "name:")):
        value = _value(ds, tag)
        if value is not None and str(value).strip():
            return prefix + str(value).strip()
    study = _value(ds, STUDY_UID)
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


def _raw(raw: RawDataElement, value: bytes) -> RawDataElement:
    """``raw`` with another (already encoded) value."""
    return RawDataElement(raw.tag, raw.VR, len(value), value, raw.value_tell,
                          raw.is_implicit_VR, raw.is_little_endian, raw.is_raw,
                          raw.is_buffered)  # fmt: skip


def _store(out: Dataset, tag: int, elem: DataElement | RawDataElement) -> None:
    """``out[tag] = elem`` without pydicom's checks, for public non-sequence elements (those
    checks only matter for private tags, pixel data and sequences)."""
    if tag >> 16 & 1 or elem.VR == "SQ" or tag >> 16 == 0x7FE0:
        out[tag] = elem
    else:
        out._dict[BaseTag(tag)] = elem


def _element(tag: int, vr: str, value: object) -> DataElement:
    return DataElement(tag, vr, value, validation_mode=config.IGNORE)


#: Patient Module attributes the profile removes (X) that PS3.3 makes Type 2C when the patient
#: is an animal (Patient Species Description or Code Sequence present): Responsible Person and
#: Responsible Organization.
_ANIMAL_TYPE_2C = (0x00102297, 0x00102299)


def _keep_animal_type_2c(ds: Dataset, body: Dataset) -> None:
    """Put back, empty, the Type 2C attributes of an animal patient the original had: removed,
    the output broke its IOD (dciodvfy: "Missing attribute Type 2C ... ResponsibleOrganization");
    empty, it says nothing."""
    if 0x00102201 not in body and 0x00102202 not in body:  # species description / code
        return
    for tag in _ANIMAL_TYPE_2C:
        if tag in ds and tag not in body:
            body.add_new(tag, ds[tag].VR, None)


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
    pixel_rules : PixelRules or path, optional
        With Clean Pixel Data, the table of regions to blank (default: the one shipped with
        dicomflow, ``PixelRules.load()``).
    recipe : Recipe, optional
        Per-attribute rules above the Options (see `Recipe` for the precedence); its
        ``date_shift_days``, when set, replaces the options' range.
    date_shift_days : (int, int), optional
        The caller's per-patient shift range: wins over the recipe's and the options' (the
        one place this precedence is decided; the recipe is kept as given).
    allow_identifying : bool
        Let the recipe keep attributes the profile does not keep (recorded in each output's
        De-identification Method and in ``ActionCounts.retained``); without it, or the
        rule's own allowance, such a recipe raises `ConfigError`.
    text_detector : TextDetector, optional
        With Clean Pixel Data, how images that may show text are searched by OCR.
    burned_in_text : {"blank", "quarantine"}
        With Clean Pixel Data, what to do with text OCR finds: blank it (default) or fail the
        instance.

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
        pixel_rules: PixelRules | str | Path | None = None,
        recipe: Recipe | None = None,
        allow_identifying: bool = False,
        text_detector: TextDetector | None = None,
        burned_in_text: str = "blank",
        date_shift_days: tuple[int, int] | None = None,
    ) -> None:
        if options is None:
            options = DeidOptions()
        elif not isinstance(options, DeidOptions):
            options = DeidOptions.from_names(options)
        if date_shift_days is not None:  # the caller's, then the recipe's, then the options'
            options = _replace(options, date_shift_days=date_shift_days)
        elif recipe is not None and recipe.date_shift_days is not None:
            options = _replace(options, date_shift_days=recipe.date_shift_days)
        self._options = options
        self._recipe = recipe
        self._allow_identifying = bool(allow_identifying)
        self._plan = self._compile()
        self._keys = Keyring(secret, lookup, options.date_shift_days)
        self._policy: Policy = policy_for(options)
        self._safe = safe_private() if options.retain_safe_private else {}
        self._sequences: dict[tuple, tuple[RawDataElement, tuple]] = {}
        if burned_in_text not in BURNED_IN_TEXT_ACTIONS:
            raise ConfigError(
                f"burned_in_text must be one of {BURNED_IN_TEXT_ACTIONS}, not {burned_in_text!r}"
            )
        self._ocr = (text_detector or TextDetector(), burned_in_text)
        if pixel_rules is None or isinstance(pixel_rules, PixelRules):
            self._pixel_rules = pixel_rules
        else:
            self._pixel_rules = PixelRules.load(pixel_rules)

    @property
    def options(self) -> DeidOptions:
        """The options in force."""
        return self._options

    @property
    def recipe(self) -> Recipe | None:
        """The recipe in force, if any."""
        return self._recipe

    @property
    def allow_identifying(self) -> bool:
        """Whether the recipe may keep attributes the profile does not keep."""
        return self._allow_identifying

    def _compile(self) -> RecipePlan | None:
        if not self._recipe:
            return None
        return RecipePlan(self._recipe, self._options, allow_identifying=self._allow_identifying)

    def __repr__(self) -> str:
        return f"Deidentifier(options={self._options.names!r}, secret=<hidden>)"

    @property
    def pixel_rules(self) -> PixelRules:
        """The pixel rule table used with Clean Pixel Data."""
        if self._pixel_rules is None:
            self._pixel_rules = PixelRules.load()
        return self._pixel_rules

    def __getstate__(self) -> tuple:
        return (self._keys, self._options, self._pixel_rules, self._recipe,
                self._allow_identifying, self._ocr)  # fmt: skip

    def __setstate__(self, state: tuple) -> None:
        self._keys, self._options, self._pixel_rules, self._recipe, allow, self._ocr = state
        self._allow_identifying = allow
        self._plan = self._compile()
        self._sequences = {}
        self._policy = policy_for(self._options)
        self._safe = safe_private() if self._options.retain_safe_private else {}

    # -- public -----------------------------------------------------------------------------

    def deidentify(
        self,
        ds: Dataset,
        *,
        crosswalk: Crosswalk | None = None,
        pixel_report: PixelReport | None = None,
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
        pixel_report : PixelReport, optional
            With Clean Pixel Data, receives what was blanked and what OCR still reads.

        Raises
        ------
        DeidentificationError
            The instance cannot be de-identified with certainty (burned-in text without Clean
            Pixel Data, or found by OCR under the quarantine policy; pixels that cannot be
            decoded for cleaning; Tesseract missing (`TextDetectionError`); unreadable
            sequence; uninterpretable UN sequence that would have to be kept).
        """
        reasons = self._pixel_plan(ds)
        meta = getattr(ds, "file_meta", None)
        try:
            sop_class = _value(ds, 0x00080016)
            if not sop_class and meta is not None:
                sop_class = _value(meta, 0x00020002)
            patient_key = _patient_key(ds)
        except Exception as exc:
            raise DeidentificationError(f"identifying attributes cannot be read: {exc}") from exc
        types = iod_types(iod_for_sop_class(str(sop_class))) if sop_class else None
        present = types.present_modules(set(ds.keys())) if types is not None else frozenset()
        run = _Run(types, present, patient_key)
        run.crosswalk = crosswalk
        body = self._dataset(ds, run, (), None, False)
        scrubber = Scrubber(identifying_values(ds, self._kept_on_purpose))
        scrubber.scrub(body, self._kept_on_purpose)  # names typed into kept attributes
        _keep_animal_type_2c(ds, body)
        instance_uid = None
        if meta is not None and meta.get("MediaStorageSOPInstanceUID"):
            instance_uid = str(meta.MediaStorageSOPInstanceUID)
            if not self._options.retain_uids:  # Table E.1-1: (0002,0003) U, Retain UIDs K
                instance_uid = self._uid(instance_uid, run)
        out = DeidentifiedDataset(
            "", body, preamble=b"\0" * 128, file_meta=output_file_meta(ds, body, instance_uid)
        )
        implicit, little = ds.original_encoding
        out.set_original_encoding(implicit, little, ds.original_character_set)
        cleaned = False
        if reasons is not None:
            detector, action = self._ocr
            cleaned = clean_pixels(
                ds, out, rules=self.pixel_rules, reasons=reasons, detector=detector,
                action=action, report=pixel_report,
            )  # fmt: skip
        codes = {code: run.counts[code] for code in "XZDKCU"}
        retained = tuple(
            sorted((k[9:], v) for k, v in run.counts.items() if k.startswith("retained."))
        )
        notes = []
        if self._plan is not None:
            notes = [self._plan.summary] + [f"kept identifying {name}" for name, _ in retained]
        notes += [f"masked identifying text in {name}" for name in sorted(scrubber.masked)]
        record_method(out, self._options, pixels_cleaned=cleaned, notes=notes)
        masked = tuple(sorted(scrubber.masked.items()))
        return out, ActionCounts(**codes, retained=retained, masked=masked)

    def _kept_on_purpose(self, tag: int) -> bool:
        """Whether a recipe keeps this public attribute (its values are wanted as they are)."""
        if self._plan is None:
            return False
        hit = self._plan.public(tag)
        return hit is not None and hit.rule.action == "keep"

    def uid(self, original: str) -> str:
        """The UID this engine gives the UID ``original`` wherever it occurs (itself with the
        Retain UIDs Option, a lookup table's ``UID`` replacement where it has one): how a
        de-identified lake finds what it holds of an original.

        Examples
        --------
        >>> engine = Deidentifier(b"k" * 32)
        >>> engine.uid("1.2.3").startswith("2.25."), engine.uid("1.2.3") == engine.uid("1.2.3")
        (True, True)
        """
        if self._options.retain_uids:
            return original
        return self._keys.uid(original)

    def _pixel_plan(self, ds: Dataset) -> list[str] | None:
        """``None``: the pixels stay as they are; else why OCR searches them (empty: only
        the pixel rules apply). Fails closed without Clean Pixel Data; see `check_pixels`."""
        check_pixels(ds, self._options)
        if not self._options.clean_pixel_data:
            return None
        if not any(tag in ds for tag in (0x7FE00010, 0x7FE00008, 0x7FE00009)):
            return None
        return risk_reasons(ds)

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
        out._parent_encoding = src._parent_encoding  # the character set it inherits
        codes = self._policy.codes
        max_bytes = self._policy.max_bytes
        counts = run.counts
        plan = self._plan
        elements, kept = src._dict, out._dict
        private: list[int] = []
        for tag in list(elements):
            if tag >> 16 & 1:
                private.append(tag)
                continue
            if dummies:
                code = "D"
            else:
                key = int(tag)  # plain ints: BaseTag equality is Python code, slow in dict lookups
                if plan is not None:
                    hit = plan.public(key)
                    if hit is not None:
                        self._rule(src, tag, hit, out, run, path)
                        continue
                found = overrides.get(key) if overrides else None
                code = found or codes.get(key) or self._policy.code(key)
                if len(code) > 1 or code == "T":
                    code = resolve(code, key, path, run.types, run.present)
                if code == "X":  # the two commonest actions, inline
                    counts["X"] += 1
                    continue
                if code == "K":
                    raw = elements[tag]
                    if (
                        isinstance(raw, RawDataElement)
                        and raw.value is not None  # None: deferred, get_item reads it
                        and raw.VR is not None
                        and raw.VR not in ("SQ", "UN")
                        and raw.length != 0xFFFFFFFF
                        and raw.length <= max_bytes.get(key, 0xFFFFFFFF)
                        and tag >> 16 != 0x7FE0
                    ):
                        kept[tag] = raw  # immutable: shared, written back byte for byte
                        counts["K"] += 1
                        continue
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
                    entry = DicomDictionary.get(int(tag))
                    vr = entry[0] if entry is not None else None
                if vr is not None and vr != "SQ" and vr != "UN":
                    limit = self._policy.max_bytes.get(int(tag))
                    if limit is not None and raw.length > limit:
                        raise DeidentificationError(
                            f"({tag >> 16:04X},{tag & 0xFFFF:04X}) holds {raw.length} bytes, "
                            f"more than its VM allows ({limit}): the file is likely corrupt and "
                            "the element may hide other attributes"
                        )
                    _store(out, tag, raw)  # immutable: shared, written back byte for byte
                    counts["K"] += 1
                    return
        if code in ("Z", "U") and self._raw_replaced(src, tag, code, out, run):
            return
        key = self._sequence_key(src, tag, code, run, path, dummies)
        if key is not None and self._cached_sequence(key, tag, out, run):
            return
        elem = self._get(src, tag)
        vr = elem.VR
        if vr == "SQ":
            before = dict(run.counts)
            self._sequence(elem, code, out, run, path, dummies)
            if key is not None:
                self._cache_sequence(key, src, tag, out, run, before)
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
            _store(
                out,
                tag,
                DataElement(tag, vr, value, already_converted=True, validation_mode=config.IGNORE),
            )
            counts["K"] += 1
            return
        if code == "Z":
            new = self._replacement(tag, elem, run, path, empty=True)
            _store(out, tag, _element(tag, vr, new))
            counts["Z"] += 1
            return
        if code == "D" or (code == "U" and vr != "UI"):
            _store(
                out, tag, _element(tag, vr, self._replacement(tag, elem, run, path, empty=False))
            )
            counts["D"] += 1
            return
        if code == "U":
            new_uids = [self._uid(str(v), run) for v in _values(elem)]
            _store(out, tag, _element(tag, vr, new_uids if len(new_uids) != 1 else new_uids[0]))
            counts["U"] += 1
            return
        self._clean(src, tag, elem, out, run, path)

    def _raw_replaced(self, src: Dataset, tag: int, code: str, out: Dataset, run: _Run) -> bool:
        """Z or U on a plain raw element, done on its bytes (no value conversion); False when
        the element needs the general path (sequences, pseudonyms, lookups, odd encodings)."""
        raw = src.get_item(tag)
        if not isinstance(raw, RawDataElement) or raw.length == 0xFFFFFFFF or tag >> 16 & 1:
            return False
        vr = raw.VR
        if vr is None:
            entry = DicomDictionary.get(tag)
            vr = entry[0] if entry is not None else None
        if vr is None or vr in ("SQ", "UN") or " " in vr:
            return False
        if code == "Z":
            if tag in (PATIENT_ID, PATIENT_NAME) or self._keys.lookup:
                return False
            _store(out, tag, _raw(raw, b""))
            run.counts["Z"] += 1
            return True
        if vr != "UI" or not isinstance(raw.value, bytes):
            return False
        try:
            text = raw.value.decode("ascii")
        except UnicodeDecodeError:
            return False
        originals = [v.strip("\0 ") for v in text.split("\\")]
        if not any(originals):
            return False
        new = "\\".join(self._uid(v, run) for v in originals).encode("ascii")
        if len(new) % 2:
            new += b"\0"
        _store(out, tag, _raw(raw, new))
        run.counts["U"] += 1
        return True

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
        _store(out, tag, _element(tag, vr, new))
        run.counts["C"] += 1

    # -- sequences seen before ----------------------------------------------------------------
    #
    # Instances of a series repeat the same sequences byte for byte (procedure and protocol
    # codes, anatomy). A sequence whose cleaning only kept or removed attributes (no derived
    # value, so nothing depends on the patient, the secret or a crosswalk) is encoded once and
    # reused, as a raw element, for identical bytes in the same context. The bytes written are
    # the same either way.

    def _sequence_key(
        self, src: Dataset, tag: int, code: str, run: _Run, path: tuple[int, ...], dummies: bool
    ) -> tuple | None:
        raw = src._dict.get(cast(BaseTag, tag))  # the source's own key object: fast lookup
        if (
            dummies
            or run.crosswalk is not None
            or not isinstance(raw, RawDataElement)
            or raw.value is None
            or raw.VR not in ("SQ", None)
            or len(raw.value) > 4096
        ):
            return None
        if raw.VR is None:
            entry = DicomDictionary.get(int(tag))
            if entry is None or entry[0] != "SQ":
                return None
        charset = src._character_set
        return (
            int(tag), path, code, raw.value, raw.is_implicit_VR, raw.is_little_endian,
            charset if isinstance(charset, str) else tuple(charset),
            run.types.ciod if run.types is not None else None, run.present,
        )  # fmt: skip

    def _cached_sequence(self, key: tuple, tag: int, out: Dataset, run: _Run) -> bool:
        found = self._sequences.get(key)
        if found is None:
            return False
        raw, delta = found
        out[tag] = raw
        for action, count in delta:
            run.counts[action] += count
        return True

    def _cache_sequence(
        self, key: tuple, src: Dataset, tag: int, out: Dataset, run: _Run, before: dict
    ) -> None:
        delta = tuple(
            (a, run.counts[a] - before.get(a, 0))
            for a in run.counts
            if run.counts[a] != before.get(a, 0)
        )
        if any(action not in ("K", "X") for action, _ in delta):
            return  # a derived value inside: depends on more than the bytes
        implicit, little = key[4], key[5]
        try:
            data = _SequenceWriter(implicit, little).sequence(out[tag], src._character_set)
        except Fallback:
            return
        header = 12 if not implicit else 8
        value = data[header:]
        raw = RawDataElement(
            BaseTag(tag), "SQ", len(value), value, 0, implicit, little, True, False
        )
        if len(self._sequences) >= 4096:
            self._sequences.clear()
        self._sequences[key] = (raw, delta)
        out[tag] = raw

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
        inner = (*path, int(tag))
        keyword = DicomDictionary.get(int(tag), ("", "", "", "", ""))[4]
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
        """Private attributes: removed, except Table E.3.10-1 ones with Retain Safe Private
        and those a recipe rule names by creator."""
        plan = self._plan if self._plan is not None and self._plan.has_private else None
        if (not self._safe and plan is None) or dummies:
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
        ruled: list[tuple[int, Hit]] = []
        blocks: set[tuple[int, int]] = set()
        for tag in tags:
            group, elem = tag >> 16, tag & 0xFFFF
            if elem < 0x1000:
                continue
            creator = creators.get((group, elem >> 8))
            hit = plan.private(group, creator, elem & 0xFF) if plan is not None else None
            if hit is not None:
                if hit.rule.action == "remove":
                    run.counts["X"] += 1
                    continue
                ruled.append((tag, hit))
                if creator is not None:
                    blocks.add((group, elem >> 8))
            elif creator is not None and (group, creator, elem & 0xFF) in self._safe:
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
        for tag, hit in ruled:
            self._rule(src, tag, hit, out, run, path)

    # -- recipe rules ---------------------------------------------------------------------------

    def _rule(
        self, src: Dataset, tag: int, hit: Hit, out: Dataset, run: _Run, path: tuple[int, ...]
    ) -> None:
        """Apply the recipe rule that decides this attribute (see `Recipe`)."""
        action, counts = hit.rule.action, run.counts
        if action == "remove":
            counts["X"] += 1
            return
        if action == "keep":
            self._apply(src, tag, "K", out, run, path)
            if hit.identifying:
                name = "retained." + hit.label
                counts[name] = counts.get(name, 0) + 1
            return
        elem = self._get(src, tag)
        vr = elem.VR
        if action == "empty":
            _store(out, tag, _element(tag, vr, Sequence() if vr == "SQ" else None))
            counts["Z"] += 1
            return
        if vr == "SQ":
            raise DeidentificationError(f"{hit.label} is a sequence: {action} cannot apply to it")
        new: object
        if action == "replace":
            new = _typed(hit.rule.value, vr, hit.label)
            counts["D"] += 1
        elif action == "pseudonymise":
            new = self._pseudonymised(tag, elem, run, path, hit.label)
            counts["U"] += 1
        else:  # shift
            if vr not in DATE_VRS:
                raise DeidentificationError(f"{hit.label} is {vr}: shift applies to DA and DT")
            days = self._shift(run)
            move = shift_date if vr == "DA" else shift_datetime
            moved = [move(str(v), days) for v in _values(elem)]
            dates = [m if m is not None else dummy(vr) for m in moved]
            new = dates if len(dates) != 1 else dates[0]
            counts["C"] += 1
        _store(out, tag, _element(tag, vr, new))

    def _pseudonymised(
        self, tag: int, elem: DataElement, run: _Run, path: tuple[int, ...], name: str
    ) -> object:
        """Keyed replacement of every value: the engine's UIDs, the patient pseudonym for
        Patient ID and the top-level Patient's Name, else ``H`` + 15 base32 characters."""
        vr = elem.VR
        if vr == "UI":
            uids = [self._uid(str(v), run) for v in _values(elem)]
            return uids if len(uids) != 1 else uids[0]
        if tag == PATIENT_ID or (tag == PATIENT_NAME and not path):
            return self._replacement(tag, elem, run, path, empty=False)
        if vr not in PSEUDONYM_VRS and vr != "UN":
            raise DeidentificationError(f"{name} is {vr}: pseudonymise applies to UIDs and text")
        entry = DicomDictionary.get(int(tag))
        keyword = entry[4] if entry is not None else name
        if vr == "UN":  # a private attribute of unknown VR: its bytes read as text
            raw = elem.value if isinstance(elem.value, bytes) else b""
            texts = raw.decode("latin-1").split("\\")
        else:
            texts = [str(v) for v in _values(elem)]
        tokens = []
        for text in texts:
            original = text.strip("\0 ")
            if not original:
                tokens.append(text)
                continue
            new = self._keys.looked_up(keyword, original) if entry is not None else None
            new = new if new is not None else self._keys.hashed(original)
            if run.crosswalk is not None:
                run.crosswalk.add(keyword, original, new)
            tokens.append(new)
        if vr == "UN":
            data = "\\".join(tokens).encode("latin-1")
            return data + b" " * (len(data) % 2)
        return tokens if len(tokens) != 1 else tokens[0]


_INTS = frozenset({"US", "SS", "UL", "SL", "SV", "UV"})


def _typed(value: object, vr: str, name: str) -> object:
    """A recipe's replacement in the Python type of the element's VR (the VR of a private
    attribute is known only here); ``DeidentificationError`` when it does not fit."""
    items: list[Any] = list(value) if isinstance(value, tuple) else [value]
    try:
        if vr in _INTS:
            out: list[object] = [int(v) for v in items]
        elif vr in ("FL", "FD"):
            out = [float(v) for v in items]
        elif vr in ("UN", "OB"):
            data = "\\".join(str(v) for v in items).encode("ascii")
            return data + b" " * (len(data) % 2)
        elif vr in ("SQ", "AT", "OW", "OF", "OD", "OL", "OV"):
            raise ValueError(f"no text or number can be written as {vr}")
        else:
            out = [str(v) for v in items]
    except (TypeError, ValueError, UnicodeEncodeError) as exc:
        raise DeidentificationError(
            f"the recipe's value for {name} does not fit {vr}: {exc}"
        ) from None
    return out if len(out) != 1 else out[0]
