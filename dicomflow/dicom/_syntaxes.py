"""Transfer syntaxes: the PS3.6 Table A-1 UIDs with their PS3.5 encoding facts, as data.

The table is package data (``data/transfer-syntaxes.csv``, one row per UID, described in
``data/README.md``), read once into frozen :class:`TransferSyntax` records. Code asks a record
(``ts.is_encapsulated``, ``ts.is_little_endian``, ``ts.can_hold(...)``) instead of keeping its
own sets of UIDs.

>>> ts = transfer_syntax("jpeg2000-lossless")
>>> ts.uid, ts.is_encapsulated, ts.is_lossy
('1.2.840.10008.1.2.4.90', True, False)
>>> transfer_syntax("1.2.840.10008.1.2").is_implicit_vr
True
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from types import MappingProxyType

from ..errors import ConfigError

__all__ = [
    "TRANSFER_SYNTAXES",
    "TransferSyntax",
    "native_syntax",
    "parse_syntaxes",
    "transfer_syntax",
]


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("|") if part.strip())


def _words(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split("|") if part.strip())


@dataclass(frozen=True, slots=True)
class TransferSyntax:
    """One transfer syntax and what its encoding is (one row of the table).

    Attributes
    ----------
    uid, name, keyword : str
        The UID, its PS3.6 name and keyword (``JPEG2000Lossless``).
    short_name : str
        The name the command line and pipeline files use (``jpeg2000-lossless``); empty for
        syntaxes dicomflow neither decodes nor encodes.
    vr : str
        ``explicit``, ``implicit`` or ``n/a`` (not a Data Set encoding).
    byte_order : str
        ``little``, ``big`` or ``n/a``.
    pixel_data_encoding : str
        ``native``, ``encapsulated``, ``referenced`` (JPIP), ``separate-flow`` (RTV) or ``n/a``.
    deflated : bool
        The whole Data Set is deflated (byte offsets in the file mean nothing).
    compression : str
        ``none``, ``lossless``, ``lossy``, ``lossless-or-lossy`` (look at Lossy Image
        Compression) or ``n/a``.
    retired : bool
        Retired from the standard.
    codestream : str
        What an encapsulated frame starts with, for the size check before decoding: ``jpeg``,
        ``jpeg-ls``, ``jpeg2000`` (also HTJ2K), ``rle``, ``deflate``, ``uncompressed``,
        ``jpeg-xl``, ``mpeg2``, ``h264``, ``hevc``; empty for native syntaxes.
    photometric, samples_per_pixel, bits_allocated : tuple
        What PS3.5 section 8.2 allows; empty where it sets no limit (native) or where the table
        does not record one.
    min_bits_stored, max_bits_stored : int or None
        The Bits Stored range PS3.5 section 8.2 allows.
    signed : bool or None
        Whether Pixel Representation 1 is allowed (monochrome only: colour is always unsigned
        in the section 8.2 tables); ``None`` where no codec restricts it.
    lossy_method : str
        The Lossy Image Compression Method (PS3.3 C.7.6.1.1.5.1) of a lossy encoding.
    """

    uid: str
    name: str
    keyword: str
    short_name: str
    vr: str
    byte_order: str
    pixel_data_encoding: str
    deflated: bool
    compression: str
    retired: bool
    codestream: str = ""
    photometric: tuple[str, ...] = ()
    samples_per_pixel: tuple[int, ...] = ()
    bits_allocated: tuple[int, ...] = ()
    min_bits_stored: int | None = None
    max_bits_stored: int | None = None
    signed: bool | None = None
    lossy_method: str = ""

    @property
    def is_native(self) -> bool:
        """Pixel Data stored uncompressed in the Data Set (PS3.5 A.1-A.3, A.5)."""
        return self.pixel_data_encoding == "native"

    @property
    def is_encapsulated(self) -> bool:
        """Frames stored as fragments of encapsulated Pixel Data (PS3.5 A.4)."""
        return self.pixel_data_encoding == "encapsulated"

    @property
    def is_little_endian(self) -> bool:
        return self.byte_order != "big"

    @property
    def is_implicit_vr(self) -> bool:
        return self.vr == "implicit"

    @property
    def is_lossy(self) -> bool:
        """Every use of the syntax loses information (``lossless-or-lossy`` is not)."""
        return self.compression == "lossy"

    @property
    def is_lossless(self) -> bool:
        """Every use keeps the pixel values exactly (native syntaxes included)."""
        return self.compression in ("none", "lossless")

    def can_hold(
        self, photometric: str, samples: int, bits_allocated: int, bits_stored: int, signed: bool
    ) -> str | None:
        """Why PS3.5 section 8.2 does not allow this image in the syntax, or ``None``.

        >>> transfer_syntax("jpeg-baseline").can_hold("MONOCHROME2", 1, 16, 12, False)
        'Bits Allocated 16 (allowed: 8)'
        """
        if self.photometric and photometric not in self.photometric:
            return f"Photometric Interpretation {photometric}"
        if self.samples_per_pixel and samples not in self.samples_per_pixel:
            return f"Samples per Pixel {samples}"
        if self.bits_allocated and bits_allocated not in self.bits_allocated:
            allowed = ", ".join(map(str, self.bits_allocated))
            return f"Bits Allocated {bits_allocated} (allowed: {allowed})"
        low, high = self.min_bits_stored, self.max_bits_stored
        if (low is not None and bits_stored < low) or (high is not None and bits_stored > high):
            return f"Bits Stored {bits_stored} (allowed: {low}-{high})"
        if signed and (
            self.signed is False or (self.signed and not photometric.startswith("MONO"))
        ):
            return "signed samples"
        return None


def _flag(text: str) -> bool | None:
    return {"Y": True, "N": False}.get(text.strip().upper())


def _row(row: Mapping[str, str]) -> TransferSyntax:
    def number(key: str) -> int | None:
        text = (row.get(key) or "").strip()
        return int(text) if text else None

    return TransferSyntax(
        uid=row["uid"].strip(),
        name=row["name"].strip(),
        keyword=row["keyword"].strip(),
        short_name=(row.get("short_name") or "").strip(),
        vr=row["vr"].strip(),
        byte_order=row["byte_order"].strip(),
        pixel_data_encoding=row["pixel_data_encoding"].strip(),
        deflated=_flag(row["dataset_deflated"]) is True,
        compression=row["pixel_compression"].strip(),
        retired=_flag(row["retired"]) is True,
        codestream=(row.get("codestream") or "").strip(),
        photometric=_words(row.get("photometric") or ""),
        samples_per_pixel=_ints(row.get("samples_per_pixel") or ""),
        bits_allocated=_ints(row.get("bits_allocated") or ""),
        min_bits_stored=number("min_bits_stored"),
        max_bits_stored=number("max_bits_stored"),
        signed=_flag(row.get("signed") or ""),
        lossy_method=(row.get("lossy_method") or "").strip(),
    )


def parse_syntaxes(text: str) -> tuple[TransferSyntax, ...]:
    """Records from CSV text in the layout of ``data/transfer-syntaxes.csv`` (header first).

    Extra columns are ignored; optional ones (``short_name`` and those after ``retired``) may
    be missing. A codec for a private syntax describes it this way (see
    :mod:`dicomflow.codecs`).
    """
    return tuple(_row(row) for row in csv.DictReader(io.StringIO(text, newline="")))


def _index(records: Iterable[TransferSyntax]) -> Mapping[str, TransferSyntax]:
    table: dict[str, TransferSyntax] = {}
    for record in records:
        if record.uid in table:
            raise ValueError(f"transfer syntax {record.uid} is listed twice")
        table[record.uid] = record
    return MappingProxyType(table)


def _load() -> Mapping[str, TransferSyntax]:
    text = (resources.files(__package__) / "data" / "transfer-syntaxes.csv").read_text("utf-8")
    return _index(parse_syntaxes(text))


#: Every transfer syntax of PS3.6 Table A-1, by UID (read once, read-only).
TRANSFER_SYNTAXES: Mapping[str, TransferSyntax] = _load()
_BY_NAME = MappingProxyType(
    {
        name.lower(): ts
        for ts in TRANSFER_SYNTAXES.values()
        for name in (ts.short_name, ts.keyword)
        if name
    }
)


def transfer_syntax(uid_or_name: str | TransferSyntax) -> TransferSyntax:
    """The record for a UID, a short name (``"rle"``) or a PS3.6 keyword (``"RLELossless"``).

    Raises
    ------
    ConfigError
        When the table has no such transfer syntax.

    Examples
    --------
    >>> transfer_syntax("rle").name
    'RLE Lossless'
    """
    if isinstance(uid_or_name, TransferSyntax):
        return uid_or_name
    key = str(uid_or_name).strip().rstrip("\x00")
    found = TRANSFER_SYNTAXES.get(key) or _BY_NAME.get(key.lower())
    if found is None:
        raise ConfigError(f"unknown transfer syntax {uid_or_name!r}")
    return found


def native_syntax(implicit_vr: bool, little_endian: bool = True) -> TransferSyntax:
    """The standard native syntax of a Data Set encoding (Implicit VR is little endian only).

    >>> native_syntax(implicit_vr=False, little_endian=False).keyword
    'ExplicitVRBigEndian'
    """
    vr = "implicit" if implicit_vr else "explicit"
    order = "little" if implicit_vr or little_endian else "big"
    found = [
        ts
        for ts in TRANSFER_SYNTAXES.values()
        if ts.is_native and not ts.deflated and ts.vr == vr and ts.byte_order == order
    ]
    found.sort(key=lambda ts: ts.retired)  # Papyrus 3 implicit VR is retired
    return found[0]
