"""De-identification on the encoded bytes: the engine's actions without a pydicom Dataset.

`Deidentifier.deidentify` works on a pydicom `Dataset`: parsing the file into one and writing
the result back cost more than the actions themselves. This module applies the same actions
to the encoded object directly. It walks the element stream once into a light tree (tag, VR,
where the value is, the items of each sequence), collects the identifying values the scrubber
searches for, then writes the output element by element: a kept element is its input bytes
(header and value, Pixel Data included, never decoded), a removed one is skipped, and a
replaced one is a new header and value. Every decision is the engine's own (the same
`Policy`, `resolve`, `Keyring` and `Scrubber`), and every value the engine writes is encoded
as pydicom writes it, so the output is the same Part 10 object byte for byte
(``tests/anonymize/test_fastpath.py`` compares both paths on the corpus).

Anything this path does not prove it handles returns ``None`` and the caller uses the engine:
options and settings that need the whole Dataset (a recipe, a lookup table, a crosswalk, Clean
Pixel Data, Clean Structured Content, Retain Safe Private with private attributes present),
big endian, deflated, private or unknown transfer syntaxes, character sets other than the
default, Latin-1 and UTF-8, elements out of order or repeated, values of unknown VR (UN) in
public attributes, multi-valued identifying attributes, and any value whose conversion it does
not reproduce exactly. Errors (burned-in text without Clean Pixel Data, a malformed element)
are the engine's to report: such an instance falls back too, and the engine raises.
"""

from __future__ import annotations

import copy
import functools
import re
import struct
from dataclasses import dataclass
from functools import cache
from typing import Any

from pydicom.datadict import DicomDictionary, dictionary_VR
from pydicom.uid import UID

from .._version import __version__
from ..dicom import LONG_VRS, checked_uid, file_meta_bytes
from ..errors import FileMetaError
from ._engine import (
    MEASURED_VALUE_SEQUENCE,
    PATIENT_ID,
    PATIENT_NAME,
    STUDY_UID,
    TIMEZONE_OFFSET,
    ActionCounts,
    Deidentifier,
)
from ._options import BASIC_PROFILE_CODE
from ._policy import CURVE_GROUPS, KEEP_REFS, OVERLAY_GROUPS, TEXT_VRS, resolve
from ._record import BURNED_IN_MODALITIES, _burned_in_iod
from ._scrub import _IDENTIFYING_TAGS, SEARCHED_VRS, Scrubber, _name_forms, _searchable
from ._structured import STRUCTURED_SEQUENCES
from ._tables import iod_for_sop_class, iod_types, method_codes
from ._values import CLEANED_TEXT, shift_date, shift_datetime

__all__ = ["FastDeidentifier", "FastResult"]

_EXPLICIT = struct.Struct("<HH2sH").unpack_from
_IMPLICIT = struct.Struct("<HHL").unpack_from
_U32 = struct.Struct("<L").unpack_from
_PACK_IMPLICIT = struct.Struct("<HHL").pack
_PACK_SHORT = struct.Struct("<HH2sH").pack
_PACK_LONG = struct.Struct("<HH2sHL").pack
_UNDEFINED = 0xFFFFFFFF
_LONG = frozenset(v.decode() for v in LONG_VRS)
_SHORT = frozenset(
    ("AE", "AS", "AT", "CS", "DA", "DS", "DT", "FD", "FL", "IS", "LO", "LT", "PN", "SH", "SL",
     "SS", "ST", "TM", "UI", "UL", "US")
)  # fmt: skip
_VRS = {v.encode(): v for v in _LONG | _SHORT}
_MAX_DEPTH = 32
_PIXEL_DATA = 0x7FE00010
_CHARSET = 0x00080005
_SOP_CLASS = 0x00080016
_SOP_INSTANCE = 0x00080018
#: Text VRs decoded with the character set (the others as ISO 8859-1, as pydicom does).
_CHARSET_VRS = frozenset({"SH", "LO", "ST", "LT", "UT", "UC", "PN"})
#: Text VRs pydicom reads as one value (no backslash splitting).
_SINGLE_VRS = frozenset({"ST", "LT", "UT", "UR"})
#: Character sets whose decoding is one Python codec without code extensions.
_CODECS = {"": "latin_1", "ISO_IR 6": "latin_1", "ISO_IR 100": "latin_1", "ISO_IR 192": "utf_8"}
#: Dummy values (action D) as pydicom encodes them, by VR (see ``_values.dummy``).
_DUMMY_BYTES = {
    "AE": b"ANONYMOUS ", "AS": b"000Y", "CS": b"ANONYMOUS ", "DA": b"19000101",
    "DT": b"19000101000000", "TM": b"000000", "DS": b"0 ", "IS": b"0 ", "LO": b"ANONYMOUS ",
    "LT": b"ANONYMOUS ", "SH": b"ANONYMOUS ", "ST": b"ANONYMOUS ", "UT": b"ANONYMOUS ",
    "UC": b"ANONYMOUS ", "PN": b"ANONYMOUS ", "UR": b"urn:x-dicomflow:removed ",
    "FL": b"\0" * 4, "FD": b"\0" * 8, "SL": b"\0" * 4, "SS": b"\0\0", "SV": b"\0" * 8,
    "UL": b"\0" * 4, "US": b"\0\0", "UV": b"\0" * 8, "AT": b"\0" * 4, "OB": b"\0\0",
    "UN": b"\0\0", "OW": b"\0\0", "OF": b"\0" * 4, "OL": b"\0" * 4, "OD": b"\0" * 8,
    "OV": b"\0" * 8,
}  # fmt: skip
_ANIMAL_TYPE_2C = (0x00102297, 0x00102299)


class _Fallback(Exception):
    """Not proven to match the engine: the caller de-identifies through the Dataset."""


@dataclass(frozen=True, slots=True)
class FastResult:
    """A de-identified object: its Part 10 bytes and what the engine reports for it."""

    data: bytes
    counts: ActionCounts
    #: ``top_values(data, tags)``, from the elements ``data`` was joined from
    top: Any = None


# A node of the tree: (tag, VR or None, element start, value start, value length, end, items);
# ``items`` is None for a value, a list of item node lists for a sequence.
_Node = tuple[int, "str | None", int, int, int, int, "list[list[Any]] | None"]


@cache
def _dictionary_vr(tag: int) -> str | None:
    try:
        return str(dictionary_VR(tag))
    except KeyError:
        return None


@cache
def _syntax(uid: str) -> tuple[bool, bool] | None:
    """(implicit VR, compressed) of a transfer syntax this path writes; None otherwise."""
    syntax = UID(uid)
    if syntax.is_private or not syntax.is_transfer_syntax or syntax.is_deflated:
        return None
    if not syntax.is_little_endian:
        return None
    return syntax.is_implicit_VR, syntax.is_compressed


class _Walker:
    """Reads the element stream of one data set into nodes (explicit or implicit VR LE)."""

    __slots__ = ("buf", "implicit")

    def __init__(self, buf: bytes, implicit: bool) -> None:
        self.buf = buf
        self.implicit = implicit

    def level(self, pos: int, end: int, delimited: bool, depth: int) -> tuple[list, int]:
        """The nodes from ``pos`` to ``end`` (or to an Item Delimitation Item)."""
        buf, implicit = self.buf, self.implicit
        nodes: list = []
        last = -1
        vrs = _VRS
        while True:
            if pos >= end:
                if delimited or pos != end:
                    raise _Fallback
                return nodes, pos
            if pos + 8 > end:
                raise _Fallback
            if implicit:
                group, elem, length = _IMPLICIT(buf, pos)
                vpos = pos + 8
                vr = None
            else:
                group, elem, vr_bytes, length = _EXPLICIT(buf, pos)
                vr = vrs.get(vr_bytes)
                if vr is None:
                    if group != 0xFFFE:
                        raise _Fallback
                    length = _U32(buf, pos + 4)[0]
                    vpos = pos + 8
                elif vr in _LONG:
                    length = _U32(buf, pos + 8)[0]
                    vpos = pos + 12
                else:
                    vpos = pos + 8
            if group == 0xFFFE:
                if delimited and elem == 0xE00D and length == 0:
                    return nodes, vpos
                raise _Fallback
            tag = group << 16 | elem
            if tag <= last:
                raise _Fallback  # out of order or repeated: pydicom keeps one, sorted
            if tag == _CHARSET and depth:
                raise _Fallback  # an item's own character set
            last = tag
            if implicit:
                vr = _dictionary_vr(tag) if not group & 1 else None
            if length == _UNDEFINED:
                if vr == "SQ" or (implicit and vr is None and self._item_follows(vpos)):
                    items, after = self.items(vpos, None, depth + 1)
                    nodes.append((tag, "SQ", pos, vpos, after - 8 - vpos, after, items))
                    pos = after
                    continue
                if tag != _PIXEL_DATA or depth:
                    raise _Fallback
                after = self._fragments(vpos, end)
                nodes.append((tag, vr, pos, vpos, after - 8 - vpos, after, None))
                pos = after
                continue
            after = vpos + length
            if after > end:
                raise _Fallback
            if vr == "SQ":
                items, _ = self.items(vpos, after, depth + 1)
                nodes.append((tag, vr, pos, vpos, length, after, items))
            else:
                nodes.append((tag, vr, pos, vpos, length, after, None))
            pos = after

    def _item_follows(self, pos: int) -> bool:
        return self.buf[pos : pos + 4] == b"\xfe\xff\x00\xe0"

    def items(self, pos: int, end: int | None, depth: int) -> tuple[list[list], int]:
        """The items of a sequence; ``end`` None: undefined length (up to its delimiter)."""
        if depth > _MAX_DEPTH:
            raise _Fallback
        buf = self.buf
        items: list[list] = []
        limit = len(buf) if end is None else end
        while True:
            if end is not None and pos == end:
                return items, pos
            if pos + 8 > limit:
                raise _Fallback
            group, elem, length = _IMPLICIT(buf, pos)
            pos += 8
            if group != 0xFFFE:
                raise _Fallback
            if elem == 0xE0DD and end is None and length == 0:
                return items, pos
            if elem != 0xE000:
                raise _Fallback
            if length == _UNDEFINED:
                nodes, pos = self.level(pos, limit, True, depth)
            else:
                nodes, pos = self.level(pos, pos + length, False, depth)
            items.append(nodes)

    def _fragments(self, pos: int, end: int) -> int:
        """Step over encapsulated Pixel Data items; the offset after its delimiter."""
        buf = self.buf
        while True:
            if pos + 8 > end:
                raise _Fallback
            group, elem, length = _IMPLICIT(buf, pos)
            pos += 8
            if group != 0xFFFE:
                raise _Fallback
            if elem == 0xE0DD:
                if length:
                    raise _Fallback
                return pos
            if elem != 0xE000 or length == _UNDEFINED or pos + length > end:
                raise _Fallback
            pos += length


def _strip(text: str) -> str:
    return text.rstrip(" \0")


def _mask_bytes(match: re.Match[bytes]) -> bytes:
    return b"X" * len(match.group(0))


# the values `_identifying` reads, by their bytes: the instances of a series repeat them


@functools.lru_cache(maxsize=4096)
def _name_texts(raw: bytes, codec: str) -> tuple[str, ...] | None:
    """The forms of the names in a PN value (``_name_forms``); None: not for this path."""
    raw = raw.rstrip(b"\0 ")
    if not raw:
        return ()
    if b"=" in raw:
        return None
    try:
        decoded = raw.decode(codec)
    except UnicodeDecodeError:
        return None
    forms: set[str] = set()
    for text in decoded.split("\\"):
        text = text.strip(" \0")
        if text:
            forms.update(_name_forms(text))
    return tuple(forms)


@functools.lru_cache(maxsize=4096)
def _identifying_texts(raw: bytes, codec: str, single: bool) -> tuple[str, ...] | None:
    """The values of an identifying attribute's value; None: not for this path."""
    try:
        decoded = raw.decode(codec)
    except UnicodeDecodeError:
        return None
    parts = [decoded] if single else decoded.split("\\")
    return tuple(t for t in (p.strip(" \0") for p in parts) if t)


class _Run:
    __slots__ = (
        "counts", "memo", "patient_key", "present", "quiet", "scrubber", "shift", "types"
    )  # fmt: skip

    def __init__(self) -> None:
        self.counts = dict.fromkeys("XZDKCU", 0)
        self.quiet = 0  # inside an identifying sequence: the scrubber leaves it as it is
        self.shift: int | None = None
        self.patient_key = ""
        self.types: Any = None
        self.present: frozenset[str] = frozenset()
        self.scrubber: Scrubber | None = None
        #: a kept text's bytes -> (masked bytes, occurrences), for the scrubber's patterns
        self.memo: dict[bytes, tuple[bytes, int]] = {}


class FastDeidentifier:
    """`Deidentifier.deidentify` followed by `encode_part10`, on the encoded bytes.

    ``deidentify(data)`` returns a `FastResult` whose bytes are the ones the engine's output
    encodes to, or ``None`` when this path does not handle the instance or the settings (the
    caller then uses the engine, which also reports any error).
    """

    def __init__(self, engine: Deidentifier) -> None:
        self.engine = engine
        options = engine.options
        self.usable = (
            engine._plan is None and not engine._keys.lookup and not options.clean_pixel_data
        )
        self._policy = engine._policy
        self._keys = engine._keys
        self._retain_uids = options.retain_uids
        self._safe = bool(engine._safe)
        self._structured = options.clean_structured_content
        self._uids: dict[str, str] = {}
        self._pseudonyms: dict[str, str] = {}
        self._scrubbers: dict[frozenset[str], tuple[Scrubber, dict]] = {}
        self._records: dict[bool, tuple[bytes, bytes, bytes]] = {}
        codes = [BASIC_PROFILE_CODE] + [s.code_value for s in options.selected]
        self._method_texts = [f"dicomflow {__version__} PS3.15 Annex E"] + [
            method_codes()[c].meaning for c in codes
        ]
        if options.retain_longitudinal_full_dates:
            flag = "UNMODIFIED"
        elif options.retain_longitudinal_modified_dates:
            flag = "MODIFIED"
        else:
            flag = "REMOVED"
        self._flag = flag
        self._method_items = [self._code_item(c) for c in codes]

    @staticmethod
    def _code_item(code_value: str) -> list[tuple[int, str, str]]:
        row = method_codes()[code_value]
        return [(0x00080100, "SH", row.code_value), (0x00080102, "SH", row.scheme),
                (0x00080104, "LO", row.meaning)]  # fmt: skip

    # -- entry -------------------------------------------------------------------------------

    def deidentify(self, data: bytes) -> FastResult | None:
        """The de-identified Part 10 object of ``data``, or ``None`` (use the engine)."""
        if not self.usable:
            return None
        job = copy.copy(self)  # the state of this call is the copy's: calls may be concurrent
        try:
            return job._deidentify(data)
        except (_Fallback, struct.error):  # struct: an element runs past the end
            return None

    def __copy__(self) -> FastDeidentifier:
        job = object.__new__(FastDeidentifier)
        job.__dict__.update(self.__dict__)  # the tables and caches are shared
        return job

    def __reduce__(self) -> tuple:
        return (FastDeidentifier, (self.engine,))

    def _deidentify(self, data: bytes) -> FastResult:
        meta, start = _read_meta(data)
        ts = meta.get(0x00020010)
        if ts is None:
            raise _Fallback
        syntax = _syntax(ts)
        if syntax is None:
            raise _Fallback
        implicit, compressed = syntax
        if not implicit and data[start + 4 : start + 6] not in _VRS:
            raise _Fallback  # pydicom reads such a data set as implicit VR
        walker = _Walker(data, implicit)
        top, _ = walker.level(start, len(data), False, 0)
        values = {node[0]: node for node in top}
        if top and top[0][0] < 0x00030000:
            raise _Fallback  # Command or File Meta elements in the data set (sorted: first)
        self._codec = self._charset(data, values)
        run = _Run()
        self._check_pixels(data, values)
        sop_class = self._single(data, values.get(_SOP_CLASS)) or meta.get(0x00020002)
        types = iod_types(iod_for_sop_class(sop_class)) if sop_class else None
        run.types = types
        run.present = types.present_modules(set(values)) if types is not None else frozenset()
        run.patient_key = self._patient_key(data, values)
        self._converted = self._read_before(data, values)
        found: set[str] = set()
        self._identifying(data, top, found)
        run.scrubber, run.memo = self._scrubber(frozenset(found))
        self._data, self._implicit, self._compressed = data, implicit, compressed
        out = self._level(top, run, (), False, top_level=True)
        if 0x00102201 in out or 0x00102202 in out:  # see _engine._keep_animal_type_2c
            for tag in _ANIMAL_TYPE_2C:
                if tag in values and tag not in out:
                    node = values[tag]
                    out[tag] = self._header(tag, node[1], 0)
        self._record(out, run)
        for tag in (_SOP_CLASS, _SOP_INSTANCE):
            # the engine reads these two from its output (the File Meta is made from them),
            # which converts them: they are written again from their value, padding included
            if tag in out:
                out[tag] = self._rewritten_uid(tag, out[tag])
        sop_instance = self._output_uid(out, _SOP_INSTANCE)
        if not sop_instance:
            media = meta.get(0x00020003)
            if not media:
                raise _Fallback
            sop_instance = media if self._retain_uids else self._uid(media)
        out_class = self._output_uid(out, _SOP_CLASS) or meta.get(0x00020002)
        if not out_class:
            raise _Fallback
        try:
            head = file_meta_bytes(
                checked_uid(out_class, "SOP Class UID"),
                checked_uid(sop_instance, "SOP Instance UID"),
                checked_uid(ts, "Transfer Syntax UID"),
            )
        except FileMetaError:
            raise _Fallback from None
        body = b"".join(out[tag] for tag in sorted(out))
        counts = run.counts
        scrubber = run.scrubber
        masked = tuple(sorted(scrubber.masked.items())) if scrubber is not None else ()
        result = ActionCounts(
            X=counts["X"], Z=counts["Z"], D=counts["D"], K=counts["K"], C=counts["C"],
            U=counts["U"], masked=masked,
        )  # fmt: skip
        return FastResult(head + body, result, functools.partial(_top_values, out, implicit))

    # -- the instance -------------------------------------------------------------------------

    def _charset(self, data: bytes, values: dict) -> str:
        node = values.get(_CHARSET)
        if node is None:
            return "latin_1"
        if node[6] is not None:
            raise _Fallback
        raw = data[node[3] : node[3] + node[4]]
        try:
            text = raw.decode("ascii")
        except UnicodeDecodeError:
            raise _Fallback from None
        codec = _CODECS.get(_strip(text))
        if codec is None:
            raise _Fallback
        code = self._code(_CHARSET, ())
        if code != "K":
            raise _Fallback  # the output's character set would differ from the input's
        return codec

    def _raw(self, data: bytes, node: Any) -> bytes:
        return data[node[3] : node[3] + node[4]]

    def _single(self, data: bytes, node: Any) -> str:
        """A one-valued ASCII text as pydicom reads it (trailing padding removed)."""
        if node is None:
            return ""
        if node[6] is not None or node[1] == "UN":
            raise _Fallback
        raw = data[node[3] : node[3] + node[4]]
        if b"\\" in raw:
            raise _Fallback
        try:
            return _strip(raw.decode("ascii"))
        except UnicodeDecodeError:
            raise _Fallback from None

    def _check_pixels(self, data: bytes, values: dict) -> None:
        """Where the engine's `check_pixels` would refuse the instance: it reports it."""
        if not any(tag in values for tag in (0x7FE00010, 0x7FE00008, 0x7FE00009)):
            return
        burned = self._single(data, values.get(0x00280301)).strip().upper()
        modality = self._single(data, values.get(0x00080060)).strip().upper()
        sop_class = self._single(data, values.get(_SOP_CLASS)).strip().upper()
        if (
            burned == "YES"
            or modality in BURNED_IN_MODALITIES
            or _burned_in_iod(iod_for_sop_class(sop_class))
        ):
            raise _Fallback

    def _text(self, data: bytes, node: Any) -> str:
        """A one-valued text in the data set's character set, as pydicom reads it."""
        if node is None:
            return ""
        if node[6] is not None or node[1] == "UN":
            raise _Fallback
        raw = data[node[3] : node[3] + node[4]]
        if b"\\" in raw or b"=" in raw:
            raise _Fallback
        try:
            return raw.rstrip(b"\0 ").decode(self._codec).rstrip("\0 ")
        except UnicodeDecodeError:
            raise _Fallback from None

    def _patient_key(self, data: bytes, values: dict) -> str:
        patient_id = self._text(data, values.get(PATIENT_ID)).strip()
        if patient_id:
            return patient_id
        name = self._text(data, values.get(PATIENT_NAME)).strip()
        if name:
            return "name:" + name
        study = self._single(data, values.get(STUDY_UID))
        return "study:" + study if study else ""

    def _read_before(self, data: bytes, values: dict) -> frozenset[int]:
        """Where the top-level elements are that the engine reads before its walk (the
        burned-in check, the SOP Class, the patient key): pydicom converts them in place, so
        the engine writes them again from their value when it keeps them (`_kept`)."""
        tags = [_SOP_CLASS, PATIENT_ID]
        if any(tag in values for tag in (0x7FE00010, 0x7FE00008, 0x7FE00009)):
            tags += [0x00280301, 0x00080060]
        if not self._text(data, values.get(PATIENT_ID)).strip():
            tags.append(PATIENT_NAME)
            if not self._text(data, values.get(PATIENT_NAME)).strip():
                tags.append(STUDY_UID)
        return frozenset(values[t][2] for t in tags if t in values)

    def _identifying(self, data: bytes, nodes: list, found: set[str]) -> None:
        """`identifying_values` on the tree: every name, and the identifying attributes."""
        codec = self._codec
        for tag, vr, _start, vpos, length, _end, items in nodes:
            if items is not None:
                for item in items:
                    self._identifying(data, item, found)
                continue
            if vr == "UN" and not tag >> 16 & 1:
                raise _Fallback  # pydicom reads it by the dictionary's VR
            if vr == "PN":
                texts = _name_texts(data[vpos : vpos + length], codec)
            elif tag in _IDENTIFYING_TAGS:
                texts = _identifying_texts(
                    data[vpos : vpos + length],
                    codec if vr in _CHARSET_VRS else "latin_1",
                    vr in _SINGLE_VRS,
                )
            else:
                continue
            if texts is None:
                raise _Fallback
            found.update(texts)

    # -- the walk -----------------------------------------------------------------------------

    def _code(self, tag: int, path: tuple[int, ...], run: _Run | None = None) -> str:
        policy = self._policy
        code = policy.codes.get(tag) or policy.code(tag)
        if len(code) > 1 or code == "T":
            if run is None:
                raise _Fallback
            code = resolve(code, tag, path, run.types, run.present)
        return code

    def _level(
        self, nodes: list, run: _Run, path: tuple[int, ...], dummies: bool, top_level: bool
    ) -> dict[int, bytes]:
        out: dict[int, bytes] = {}
        counts = run.counts
        policy = self._policy
        codes = policy.codes
        max_bytes = policy.max_bytes
        data = self._data
        converted = self._converted
        for node in nodes:
            tag = node[0]
            if tag < 0x00030000:
                raise _Fallback  # Command or File Meta elements in a data set
            if tag >> 16 & 1:
                if self._safe and not dummies:
                    raise _Fallback
                counts["X"] += 1
                continue
            if tag == _CHARSET and not top_level:
                raise _Fallback
            if dummies:
                code = "D"
            else:
                code = codes.get(tag) or policy.code(tag)
                if len(code) > 1 or code == "T":
                    code = resolve(code, tag, path, run.types, run.present)
                if code == "X":
                    counts["X"] += 1
                    continue
                if code == "K" and node[6] is None:
                    vr = node[1]
                    if (
                        vr is not None
                        and vr != "UN"
                        and " " not in vr
                        and node[4] != _UNDEFINED
                        and node[5] - node[3] == node[4]
                        and tag >> 16 != 0x7FE0
                    ):
                        if node[4] > max_bytes.get(tag, 0xFFFFFFFF):
                            raise _Fallback  # the engine refuses it
                        if vr in SEARCHED_VRS or (top_level and node[2] in converted):
                            out[tag] = self._kept(data, node, run)
                        else:  # nothing to mask: the element's bytes as they are
                            out[tag] = data[node[2] : node[5]]
                        counts["K"] += 1
                        continue
            self._apply(node, code, out, run, path, dummies)
        return out

    def _kept(self, data: bytes, node: Any, run: _Run) -> bytes:
        """A kept element's bytes, identifying text typed into it masked."""
        tag, vr, start, vpos, length, end, _ = node
        if start in self._converted:  # written from the value pydicom converted it to
            return self._string(tag, vr, self._values(node), run)
        element = data[start:end]
        scrubber = run.scrubber
        if (
            vr in SEARCHED_VRS
            and scrubber is not None
            and scrubber._bytes is not None
            and tag not in _IDENTIFYING_TAGS
            and not run.quiet
        ):
            value = data[vpos:end]
            memo = run.memo  # the instances of a series keep the same short texts, mostly
            found = memo.get(value)
            if found is None:
                found = scrubber._bytes.subn(_mask_bytes, value)
                if len(value) <= 128:
                    if len(memo) >= 512:
                        memo.clear()
                    memo[value] = found
            new, n = found
            if n:
                scrubber._count(tag, n)
                return data[start:vpos] + new
        return element

    def _header(self, tag: int, vr: str | None, length: int) -> bytes:
        if self._implicit:
            return _PACK_IMPLICIT(tag >> 16, tag & 0xFFFF, length)
        if vr is None or " " in vr:
            raise _Fallback
        if vr in _LONG:
            return _PACK_LONG(tag >> 16, tag & 0xFFFF, vr.encode(), 0, length)
        if length > 0xFFFF:
            raise _Fallback
        return _PACK_SHORT(tag >> 16, tag & 0xFFFF, vr.encode(), length)

    def _element(self, tag: int, vr: str | None, value: bytes) -> bytes:
        return self._header(tag, vr, len(value)) + value

    def _string(
        self, tag: int, vr: str | None, value: str | list[str] | None, run: _Run | None
    ) -> bytes:
        """A text value the engine writes (a DataElement), masked as the scrubber masks it."""
        if vr is None:
            raise _Fallback
        if isinstance(value, list):
            if run is not None and self._scrubs(tag, vr, run):
                masked = []
                for v in value:
                    text, n = run.scrubber._mask(v)  # type: ignore[union-attr]
                    if n:
                        run.scrubber._count(tag, n)  # type: ignore[union-attr]
                    masked.append(text)
                value = masked
            text = "\\".join(value)
        elif value is None:
            text = ""
        else:
            text = value
            if run is not None and text and self._scrubs(tag, vr, run):
                text, n = run.scrubber._mask(text)  # type: ignore[union-attr]
                if n:
                    run.scrubber._count(tag, n)  # type: ignore[union-attr]
        if not text.isascii():
            raise _Fallback
        raw = text.encode("ascii")
        if len(raw) % 2:
            raw += b"\0" if vr == "UI" else b" "
        return self._element(tag, vr, raw)

    @staticmethod
    def _scrubs(tag: int, vr: str, run: _Run) -> bool:
        return (
            vr in SEARCHED_VRS
            and tag not in _IDENTIFYING_TAGS
            and not run.quiet
            and run.scrubber is not None
            and bool(run.scrubber)
        )

    def _apply(
        self,
        node: Any,
        code: str,
        out: dict[int, bytes],
        run: _Run,
        path: tuple[int, ...],
        dummies: bool,
    ) -> None:
        counts = run.counts
        tag, vr, start, vpos, length, end, items = node
        if code == "X":
            counts["X"] += 1
            return
        if vr == "UN" or vr is None:
            raise _Fallback
        if items is not None or vr == "SQ":
            if items is None:
                raise _Fallback
            self._sequence(node, code, out, run, path, dummies)
            return
        if end - vpos != length:
            if tag != _PIXEL_DATA or code != "K":
                raise _Fallback
        if code == "K":
            if tag >> 16 == 0x7FE0:
                self._pixels(node, out)
            else:
                limit = self._policy.max_bytes.get(tag)
                if limit is not None and length > limit:
                    raise _Fallback
                out[tag] = self._kept(self._data, node, run)
            counts["K"] += 1
            return
        if code == KEEP_REFS:
            raise _Fallback
        if code == "Z":
            out[tag] = self._replacement(node, run, path, empty=True)
            counts["Z"] += 1
            return
        if code == "D" or (code == "U" and vr != "UI"):
            out[tag] = self._replacement(node, run, path, empty=False)
            counts["D"] += 1
            return
        if code == "U":
            uids = self._uid_values(node)
            if not any(uids):
                if self._raw(self._data, node).strip(b"\0 "):
                    raise _Fallback
                out[tag] = self._element(tag, vr, b"")
            else:
                out[tag] = self._string(tag, vr, [self._uid(v) for v in uids], None)
            counts["U"] += 1
            return
        if code == "C":
            self._clean(node, out, run, path)
            return
        raise _Fallback

    def _pixels(self, node: Any, out: dict[int, bytes]) -> None:
        tag, vr, start, vpos, length, end, _ = node
        undefined = end - vpos != length
        if tag == _PIXEL_DATA and undefined != self._compressed:
            raise _Fallback  # the writer changes the length encoding: left to it
        if tag != _PIXEL_DATA and undefined:
            raise _Fallback
        if length % 2:
            raise _Fallback
        out[tag] = self._data[start:end]

    def _uid_values(self, node: Any) -> list[str]:
        raw = self._raw(self._data, node)
        try:
            text = raw.decode("ascii")
        except UnicodeDecodeError:
            raise _Fallback from None
        return [v.strip("\0 ") for v in text.split("\\")]

    def _uid(self, original: str) -> str:
        found = self._uids.get(original)
        if found is None:
            if len(self._uids) > 100_000:
                self._uids.clear()
            found = self._uids[original] = self._keys.uid(original)
        return found

    def _values(self, node: Any) -> list[str]:
        """pydicom's converted value as a list (``_engine._values``), for plain ASCII text."""
        vr = node[1]
        raw = self._raw(self._data, node)
        try:
            text = raw.decode("ascii")
        except UnicodeDecodeError:
            raise _Fallback from None
        if vr in _SINGLE_VRS or vr in ("ST", "LT", "UT"):
            text = text.rstrip("\0 ")
            return [text] if text else []
        if vr in ("SH", "LO", "UC", "PN"):
            if vr == "PN":
                text = text.rstrip(" \0")
                if "=" in text:
                    raise _Fallback
            parts = text.split("\\")
            parts = [p.rstrip("\0 ") for p in parts]
        elif vr == "AE":
            parts = [p.strip() for p in text.split("\\")]
        elif vr == "UI":
            parts = text.rstrip("\0 ").rstrip(" \0").split("\\")
        elif vr in ("CS", "DA", "DT", "TM", "AS"):
            parts = text.rstrip(" \0").split("\\")
        else:
            raise _Fallback
        if len(parts) == 1 and parts[0] == "":
            return []
        return parts

    def _replacement(self, node: Any, run: _Run, path: tuple[int, ...], empty: bool) -> bytes:
        """Z (``empty``) or D, as `Deidentifier._replacement` and its encoding."""
        tag, vr = node[0], node[1]
        if tag == PATIENT_ID:
            values = self._values(node)
            if values or not empty:
                original = values[0].strip() if values else ""
                return self._string(tag, vr, self._pseudonym(original or run.patient_key), run)
        if tag == PATIENT_NAME and not path:
            return self._string(tag, vr, self._pseudonym(run.patient_key), run)
        if empty:
            return self._header(tag, vr, 0)
        if vr == "UI":
            values = self._values(node)
            uids = [self._uid(v) for v in values] or ["2.25.0"]
            return self._string(tag, vr, uids, None)
        if vr in SEARCHED_VRS:
            return self._string(tag, vr, "ANONYMOUS", run)
        dummy = _DUMMY_BYTES.get(vr)
        if dummy is None:
            raise _Fallback
        return self._element(tag, vr, dummy)

    def _pseudonym(self, key: str) -> str:
        found = self._pseudonyms.get(key)
        if found is None:
            if len(self._pseudonyms) > 10_000:
                self._pseudonyms.clear()
            found = self._pseudonyms[key] = self._keys.pseudonym(key)
        return found

    def _scrubber(self, values: frozenset[str]) -> tuple[Scrubber, dict]:
        """A scrubber for these values, and what its byte patterns made of the kept texts
        seen so far: the instances of a series share both, and compiling the patterns costs
        more than the search (a search, more than a look-up)."""
        compiled = self._scrubbers.get(values)
        if compiled is None:  # the values identifying_values keeps
            if len(self._scrubbers) > 256:
                self._scrubbers.clear()
            kept = {v.strip() for v in values if _searchable(v.strip())}
            compiled = self._scrubbers[values] = (Scrubber(kept), {})
        scrubber = Scrubber(set())
        scrubber._text, scrubber._bytes = compiled[0]._text, compiled[0]._bytes
        return scrubber, compiled[1]

    def _shift(self, run: _Run) -> int:
        if run.shift is None:
            run.shift = self._keys.shift_days(run.patient_key)
        return run.shift

    def _clean(self, node: Any, out: dict[int, bytes], run: _Run, path: tuple[int, ...]) -> None:
        """Action C, as `Deidentifier._clean`."""
        tag, vr = node[0], node[1]
        group = tag >> 16
        if group in OVERLAY_GROUPS or group in CURVE_GROUPS:
            raise _Fallback
        if tag == TIMEZONE_OFFSET:
            run.counts["C"] += 1
            return
        new: str | list[str] | None
        if vr in ("DA", "DT"):
            shift = self._shift(run)
            move = shift_date if vr == "DA" else shift_datetime
            dates = []
            for v in self._values(node):
                moved = move(v, shift)
                dates.append(moved if moved is not None else ("19000101" if vr == "DA"
                                                              else "19000101000000"))  # fmt: skip
            new = dates if len(dates) != 1 else dates[0]
        elif vr in ("TM", "CS"):
            values = self._values(node)
            new = values if len(values) != 1 else values[0]
        elif vr == "AE":
            titles = [self._keys.ae_title(v) for v in self._values(node)]
            new = titles if len(titles) != 1 else titles[0]
        elif vr == "UI":
            uids = [self._uid(v) for v in self._values(node)]
            new = uids if len(uids) != 1 else uids[0]
        elif vr in TEXT_VRS:
            new = CLEANED_TEXT if self._values(node) else None
        else:
            basic = self._policy.fallback.get(tag, "X")
            code = resolve(basic, tag, path, run.types, run.present)
            self._apply(node, code if code != "C" else "X", out, run, path, False)
            return
        out[tag] = self._string(tag, vr, new, run)
        run.counts["C"] += 1

    def _sequence(
        self,
        node: Any,
        code: str,
        out: dict[int, bytes],
        run: _Run,
        path: tuple[int, ...],
        dummies: bool,
    ) -> None:
        tag, items = node[0], node[6]
        counts = run.counts
        if code == "Z":
            out[tag] = self._header(tag, "SQ", 0)
            counts["Z"] += 1
            return
        inner = (*path, tag)
        entry = DicomDictionary.get(tag)
        keyword = entry[4] if entry is not None else ""
        if code == "D" and (keyword.endswith("CodeSequence") or tag == MEASURED_VALUE_SEQUENCE):
            dummies = True
        if self._structured and tag in STRUCTURED_SEQUENCES and not dummies:
            raise _Fallback
        parts = []
        quiet = tag in _IDENTIFYING_TAGS  # the scrubber does not search inside these
        run.quiet += quiet
        for item in items:
            body = self._level(item, run, inner, dummies, False)
            content = b"".join(body.values())  # items keep their (sorted) input order
            parts.append(_PACK_IMPLICIT(0xFFFE, 0xE000, len(content)))
            parts.append(content)
        run.quiet -= quiet
        value = b"".join(parts)
        out[tag] = self._header(tag, "SQ", len(value)) + value
        counts["K" if code == KEEP_REFS else code if code in "KCDU" else "K"] += 1

    # -- around the walk ------------------------------------------------------------------------

    def _rewritten_uid(self, tag: int, element: bytes) -> bytes:
        if not self._implicit and element[4:6] != b"UI":
            raise _Fallback
        try:
            text = element[8:].decode("ascii")
        except UnicodeDecodeError:
            raise _Fallback from None
        values = text.rstrip("\0 ").rstrip(" \0").split("\\")
        return self._string(tag, "UI", [] if values == [""] else values, None)

    def _output_uid(self, out: dict[int, bytes], tag: int) -> str:
        element = out.get(tag)
        if element is None:
            return ""
        value = element[8:]  # a UI element's header is 8 bytes in either encoding
        try:
            text = value.decode("ascii")
        except UnicodeDecodeError:
            raise _Fallback from None
        if "\\" in text:
            raise _Fallback
        return _strip(text)

    def _record(self, out: dict[int, bytes], run: _Run) -> None:
        """`record_method` (no pixels cleaned, no recipe): the method, its codes, the flag."""
        scrubber = run.scrubber
        notes = []
        if scrubber is not None:
            for name in sorted(scrubber.masked):
                note = f"masked identifying text in {name}"
                notes.append(note if len(note) <= 64 else note[:63] + "~")
        previous: list[str] = []
        old = out.get(0x00120063)
        if old is not None:  # the method texts are appended to those already there
            try:
                text = old[8:].decode("ascii")  # an LO header is 8 bytes in either encoding
            except UnicodeDecodeError:
                raise _Fallback from None
            values = [v.rstrip("\0 ") for v in text.split("\\")]
            if values != [""]:
                previous = values
        out[0x00120063] = self._string(
            0x00120063, "LO", previous + self._method_texts + notes, None
        )
        removed, items, flag = self._constants()
        out[0x00120062] = removed
        old = out.get(0x00120064)
        value = old[8 if self._implicit else 12 :] + items if old is not None else items
        out[0x00120064] = self._header(0x00120064, "SQ", len(value)) + value
        out[0x00280303] = flag

    def _constants(self) -> tuple[bytes, bytes, bytes]:
        """Patient Identity Removed, the method code items and the longitudinal flag, encoded
        (the same in every output of one encoding)."""
        found = self._records.get(self._implicit)
        if found is None:
            parts = []
            for item in self._method_items:
                content = b"".join(self._string(t, vr, v, None) for t, vr, v in item)
                parts.append(_PACK_IMPLICIT(0xFFFE, 0xE000, len(content)))
                parts.append(content)
            found = self._records[self._implicit] = (
                self._string(0x00120062, "CS", "YES", None),
                b"".join(parts),
                self._string(0x00280303, "CS", self._flag, None),
            )
        return found


def _top_values(
    out: dict[int, bytes], implicit: bool, tags: frozenset[int]
) -> dict[int, tuple[bytes | None, bytes]]:
    """What `top_values` reads for ``tags`` from the output joined from ``out`` (its File
    Meta comes from `file_meta_bytes`, its elements are sorted and each has a VR this path
    knows: that function's walk would find just these; it leaves undefined lengths out)."""
    found: dict[int, tuple[bytes | None, bytes]] = {}
    for tag in tags:
        element = out.get(tag)
        if element is None:
            continue
        if implicit:
            vr, length, value = None, _U32(element, 4)[0], element[8:]
        elif element[4:6] in LONG_VRS:
            vr, length, value = element[4:6], _U32(element, 8)[0], element[12:]
        else:
            vr, length, value = element[4:6], 0, element[8:]
        if length != _UNDEFINED:
            found[tag] = (vr, value)
    return found


def _read_meta(data: bytes) -> tuple[dict[int, str], int]:
    """The File Meta UIDs pydicom reads (trailing padding removed), and where the data set
    starts. Anything but a plain group 0002 after a preamble falls back."""
    if len(data) < 144 or data[128:132] != b"DICM":
        raise _Fallback
    pos, n = 132, len(data)
    group, elem, vr, length = _EXPLICIT(data, pos)
    if group != 2 or elem != 0 or vr != b"UL" or length != 4:
        raise _Fallback
    end = pos + 12 + _U32(data, pos + 8)[0]
    pos += 12
    meta: dict[int, str] = {}
    while pos < end:
        if pos + 8 > n:
            raise _Fallback
        group, elem, vr, length = _EXPLICIT(data, pos)
        if group != 2:
            raise _Fallback
        if vr in LONG_VRS:
            length = _U32(data, pos + 8)[0]
            vpos = pos + 12
        elif vr in _VRS:
            vpos = pos + 8
        else:
            raise _Fallback
        if vr == b"UI":
            try:
                meta[0x00020000 | elem] = data[vpos : vpos + length].decode("ascii").rstrip("\0 ")
            except UnicodeDecodeError:
                raise _Fallback from None
        pos = vpos + length
    if pos != end or pos + 8 > n or data[pos : pos + 2] == b"\x02\x00":
        raise _Fallback
    return meta, pos
