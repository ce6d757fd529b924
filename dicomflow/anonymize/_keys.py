"""Keyed, deterministic replacements: UIDs, patient pseudonyms, date shifts, AE titles.

Every replacement is an HMAC-SHA256 of the project secret and the original value (never
Python's ``hash()``), so the same input gives the same output in every batch, process and
machine, and nobody without the secret can recompute or reverse it. A lookup table given by the
caller overrides the derived value.
"""

from __future__ import annotations

import base64
import csv
import hmac
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import MappingProxyType

from pydicom.datadict import tag_for_keyword

from ..errors import ConfigError

__all__ = ["Crosswalk", "Keyring", "load_lookup"]

#: Prefix of the registered DICOM UIDs (SOP Classes, Transfer Syntaxes, ...): never replaced.
DICOM_UID_ROOT = "1.2.840.10008."
MIN_SECRET_BYTES = 16


def _freeze(lookup: Mapping[str, Mapping[str, str]] | None) -> Mapping[str, Mapping[str, str]]:
    if not lookup:
        return MappingProxyType({})
    frozen = {}
    for keyword, table in lookup.items():
        if keyword != "UID" and tag_for_keyword(keyword) is None:
            raise ConfigError(f"lookup keyword {keyword!r} is not a DICOM keyword (or 'UID')")
        frozen[keyword] = MappingProxyType({str(k).strip(): str(v) for k, v in table.items()})
    return MappingProxyType(frozen)


class Keyring:
    """Derives every replacement value from the secret.

    Parameters
    ----------
    secret : bytes
        The project secret (at least 16 bytes). It is kept only in memory and never shown by
        ``repr`` or written into outputs.
    lookup : mapping of str to mapping of str to str, optional
        ``keyword -> {original value: replacement}``; the keyword ``UID`` applies to every UID.
    date_shift_days : tuple of int
        Inclusive range of the per-patient date shift.
    """

    __slots__ = ("_secret", "date_shift_days", "lookup")

    def __init__(
        self,
        secret: bytes,
        lookup: Mapping[str, Mapping[str, str]] | None = None,
        date_shift_days: tuple[int, int] = (-3650, 0),
    ) -> None:
        if not isinstance(secret, bytes | bytearray):
            raise ConfigError("the de-identification secret must be bytes")
        if len(secret) < MIN_SECRET_BYTES:
            raise ConfigError(f"the de-identification secret must be >= {MIN_SECRET_BYTES} bytes")
        self._secret = bytes(secret)
        self.lookup = _freeze(lookup)
        self.date_shift_days = date_shift_days

    def __repr__(self) -> str:
        return "Keyring(secret=<hidden>)"

    def __getstate__(self) -> tuple[bytes, Mapping[str, Mapping[str, str]], tuple[int, int]]:
        return (self._secret, {k: dict(v) for k, v in self.lookup.items()}, self.date_shift_days)

    def __setstate__(self, state: tuple[bytes, dict, tuple[int, int]]) -> None:
        secret, lookup, days = state
        self._secret = secret
        self.lookup = _freeze(lookup)
        self.date_shift_days = days

    def digest(self, domain: str, value: str) -> bytes:
        """HMAC-SHA256 of ``domain``, a NUL, and ``value`` (UTF-8)."""
        message = domain.encode("ascii") + b"\0" + value.encode("utf-8", "surrogateescape")
        return hmac.digest(self._secret, message, "sha256")

    def looked_up(self, keyword: str, original: str) -> str | None:
        """The caller's replacement for ``original`` of ``keyword``, if the lookup has one."""
        table = self.lookup.get(keyword)
        if table is None:
            return None
        return table.get(original.strip())

    def uid(self, original: str) -> str:
        """``2.25.<128-bit integer>`` from the keyed hash of the UID; registered UIDs unchanged."""
        original = original.strip("\0 ")
        if not original or original.startswith(DICOM_UID_ROOT):
            return original
        table = self.lookup.get("UID")
        if table is not None and original in table:
            return table[original]
        return "2.25." + str(int.from_bytes(self.digest("uid", original)[:16], "big"))

    def _code(self, domain: str, value: str, length: int) -> str:
        return base64.b32encode(self.digest(domain, value)).decode("ascii")[:length]

    def pseudonym(self, patient_key: str) -> str:
        """Patient pseudonym ``ANON<12 base32 characters>`` (fits LO, SH and PN)."""
        return "ANON" + self._code("patient", patient_key, 12)

    def shift_days(self, patient_key: str) -> int:
        """Per-patient date shift, uniform over the inclusive range."""
        low, high = self.date_shift_days
        span = high - low + 1
        return low + int.from_bytes(self.digest("shift", patient_key)[:8], "big") % span

    def hashed(self, original: str) -> str:
        """A keyed token ``H<15 base32 characters>`` for a value a recipe pseudonymises; it
        fits every text VR (16 characters: SH, CS and AE included)."""
        return "H" + self._code("recipe", original.strip(), 15)

    def ae_title(self, original: str) -> str:
        """A consistent AE-title pseudonym ``AE<10 base32 characters>``."""
        return "AE" + self._code("ae", original.strip(), 10)


class Crosswalk:
    """Collects ``(keyword, original, replacement)`` pairs while de-identifying.

    Pass one to `Deidentifier.deidentify` to learn which pseudonym, UID and date shift each
    original value got. It holds identifying values: keep it apart from the shared output
    (writing it anywhere is the caller's job). Its ``repr`` shows only the count.

    Examples
    --------
    >>> cw = Crosswalk()
    >>> cw.add("PatientID", "12345", "ANONABC")
    >>> len(cw), list(cw)
    (1, [('PatientID', '12345', 'ANONABC')])
    """

    def __init__(self) -> None:
        self._pairs: dict[tuple[str, str], str] = {}

    def add(self, keyword: str, original: str, replacement: str) -> None:
        """Record that ``original`` of ``keyword`` became ``replacement``."""
        self._pairs.setdefault((keyword, original), replacement)

    def __iter__(self) -> Iterator[tuple[str, str, str]]:
        for (keyword, original), replacement in self._pairs.items():
            yield keyword, original, replacement

    def __len__(self) -> int:
        return len(self._pairs)

    def __repr__(self) -> str:
        return f"Crosswalk({len(self)} pairs)"

    def update(self, other: Crosswalk) -> None:
        """Add every pair of ``other`` (e.g. collected in a worker process)."""
        for keyword, original, replacement in other:
            self.add(keyword, original, replacement)

    def to_arrow(self):  # -> pyarrow.Table; imported lazily
        """The pairs as a ``pyarrow.Table`` with columns keyword, original, replacement."""
        import pyarrow as pa

        rows = list(self)
        return pa.table(
            {
                "keyword": [r[0] for r in rows],
                "original": [r[1] for r in rows],
                "replacement": [r[2] for r in rows],
            }
        )


def load_lookup(path: str | Path) -> dict[str, dict[str, str]]:
    """Read a lookup table from CSV or Parquet.

    Two layouts are accepted: columns ``keyword, original, replacement`` (one row per value),
    or exactly two columns whose first header is a DICOM keyword, e.g. ``PatientID,subject``.

    Raises
    ------
    ConfigError
        Any other layout, or a keyword that is not a DICOM keyword.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"the lookup table {str(path)!r} does not exist (or is not a file)")
    if path.suffix.lower() in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        header = table.column_names
        rows = [[str(v) for v in r] for r in zip(*(table[c].to_pylist() for c in header))]
    else:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = next(reader, [])
            rows = [r for r in reader if r]
    header = [h.strip() for h in header]
    out: dict[str, dict[str, str]] = {}
    if {"keyword", "original", "replacement"} <= set(header):
        k, o, r = (header.index(c) for c in ("keyword", "original", "replacement"))
        for row in rows:
            out.setdefault(row[k].strip(), {})[row[o].strip()] = row[r].strip()
    elif len(header) == 2:
        out[header[0]] = {row[0].strip(): row[1].strip() for row in rows}
    else:
        raise ConfigError(
            f"{path}: a lookup table needs columns keyword,original,replacement or two columns "
            f"headed by a DICOM keyword, got {header}"
        )
    _freeze(out)  # validates the keywords
    return out
