"""Types of the compiled core (dicomflow/dicom/_cheader.c)."""

from collections.abc import Callable, Sequence
from typing import Any

def init(
    out_of_data: type[Exception],
    unsupported: type[Exception],
    invalid: type[Exception],
    max_nesting: int,
    /,
) -> None: ...
def walk(
    buf: bytes | bytearray,
    pos: int,
    little: bool,
    implicit: bool,
    out: dict[int, tuple[bytes | None, int, int]] | None,
    top: bool,
    depth: int = 0,
    /,
) -> tuple[int, tuple[int, bytes | None, int, int] | None]: ...
def convert_column(
    kind: int,
    tag: int,
    expected: bytes,
    size: int,
    headers: Sequence[Any],
    fn: Callable[[bytes], Any],
    slow: object,
    /,
) -> list[Any]: ...
def parse_meta(buf: bytes | bytearray, pos: int, /) -> tuple[int, dict[int, bytes]]: ...
def find_forms(
    buf: bytes, forms: list[bytes], start: int, end: int, bulk_min: int, cap: int, /
) -> dict[bytes, list[int] | None]: ...
def element_keys(
    data: bytes, entries: dict[int, tuple[bytes | None, int, int]], shift: int, max_bytes: int, /
) -> list[tuple[int, bytes | None, bool, tuple[bytes | None, bytes] | None, bytes] | None]: ...
