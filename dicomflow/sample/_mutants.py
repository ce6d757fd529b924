"""Hostile variants of real DICOM files: a seeded mutation generator for fuzzing the readers.

Each mutant comes from one seed file and one mutation class, and the same ``seed`` always gives
the same bytes. The classes are the ways files break in archives and the ways an attacker
breaks them on purpose:

``flip``          random bytes changed
``truncate``      the file cut short, inside the header or inside Pixel Data
``huge-length``   an element's length field set near 4 GiB
``undefined``     an element's length set to undefined (0xFFFFFFFF) where that is not allowed
``vr-swap``       an element's VR replaced by another (short and long forms mixed up)
``depth-bomb``    hundreds to thousands of nested undefined-length sequences
``duplicate``     an element repeated, or two elements swapped out of tag order
``poison``        values that break converters: NUL bytes, 1e999, huge integers, bad UIDs,
                  a garbage Specific Character Set, Number of Frames in the billions
``file-meta``     the File Meta group corrupted: group length, transfer syntax, a VR
``deflate``       the data set deflated (Deflated Explicit VR Little Endian), then mutated
                  inside the compressed stream, or replaced by a deflate bomb

The element positions come from dicomflow's own header parser on the unmutated file, so the
mutations hit element boundaries rather than only random offsets.
"""

from __future__ import annotations

import functools
import random
import struct
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from ..dicom import parse_header

__all__ = ["MUTATIONS", "Mutant", "mutants"]


@dataclass(frozen=True)
class Mutant:
    """One mutated file: its bytes, the class of mutation and the file it came from."""

    name: str
    kind: str
    source: str
    data: bytes


_VRS = [v.encode() for v in ("AE", "CS", "DS", "IS", "LO", "OB", "OW", "SQ", "UN", "UT", "UL",
                             "US", "FD", "AT", "SV", "UV", "PN", "DA")]  # fmt: skip


def _elements(data: bytes) -> tuple[list[tuple[int, int, int, bool]], bool]:
    """``(header offset, value offset, length, long form)`` of the top-level elements."""
    try:
        header = parse_header(data, True)
    except Exception:  # noqa: BLE001 - an already odd seed: mutate bytes only
        return [], True
    if header.data_offset is None:  # deflated: offsets are in the inflated data
        return [], header.little
    out = []
    for _, (vr, vpos, length) in header.elements.items():
        long_form = vr is not None and vpos >= 12 and data[vpos - 12 + 4 : vpos - 12 + 6] == vr
        start = vpos - 12 if long_form else vpos - 8
        out.append((start, vpos, length, long_form))
    return sorted(out), header.little


def _flip(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 16)):
        pos = rng.randrange(min(len(out), 4096) if rng.random() < 0.8 else len(out))
        out[pos] = rng.randrange(256)
    return bytes(out)


def _truncate(data: bytes, rng: random.Random) -> bytes:
    cut = (
        rng.randrange(1, len(data))
        if rng.random() < 0.5
        else rng.randrange(1, min(len(data), 2048))
    )
    return data[:cut]


def _length(data: bytes, rng: random.Random, value: int | None) -> bytes:
    elements, little = _elements(data)
    if not elements:
        return _flip(data, rng)
    start, vpos, _, long_form = rng.choice(elements)
    if value is None:
        value = rng.choice([0xFFFFFFF0, 0xFFFFFFFE, 0x7FFFFFFF, len(data) * 3])
    out = bytearray(data)
    if long_form:
        out[vpos - 4 : vpos] = struct.pack("<L" if little else ">L", value & 0xFFFFFFFF)
    elif data[start + 4 : start + 6].isalpha():  # short explicit form: a 16-bit length
        out[vpos - 2 : vpos] = struct.pack("<H" if little else ">H", value & 0xFFFF)
    else:  # implicit VR
        out[vpos - 4 : vpos] = struct.pack("<L" if little else ">L", value & 0xFFFFFFFF)
    return bytes(out)


def _vr_swap(data: bytes, rng: random.Random) -> bytes:
    elements, _ = _elements(data)
    explicit = [e for e in elements if data[e[0] + 4 : e[0] + 6].isalpha()]
    if not explicit:
        return _flip(data, rng)
    out = bytearray(data)
    for start, *_ in rng.sample(explicit, min(len(explicit), rng.randint(1, 3))):
        out[start + 4 : start + 6] = rng.choice(_VRS)
    return bytes(out)


def _nested(depth: int, little: bool) -> bytes:
    e = "<" if little else ">"
    open_ = struct.pack(e + "HH2sHL", 0x0040, 0xA730, b"SQ", 0, 0xFFFFFFFF)
    item = struct.pack(e + "HHL", 0xFFFE, 0xE000, 0xFFFFFFFF)
    ends = struct.pack(e + "HHL", 0xFFFE, 0xE00D, 0) + struct.pack(e + "HHL", 0xFFFE, 0xE0DD, 0)
    return (open_ + item) * depth + ends * depth


def _depth_bomb(data: bytes, rng: random.Random) -> bytes:
    elements, little = _elements(data)
    depth = rng.choice([100, 500, 3000, 20000])
    bomb = _nested(depth, little)
    if rng.random() < 0.5:
        bomb = bomb[: len(bomb) // 2]  # never closed
    if elements:
        at = rng.choice(elements)[0]  # before an element: out of tag order too, on purpose
        return data[:at] + bomb + data[at:]
    return data + bomb


def _duplicate(data: bytes, rng: random.Random) -> bytes:
    elements, _ = _elements(data)
    if len(elements) < 2:
        return _flip(data, rng)
    i = rng.randrange(len(elements) - 1)
    a_start, a_vpos, a_len, _ = elements[i]
    b_start, b_vpos, b_len, _ = elements[i + 1]
    a = data[a_start : a_vpos + a_len]
    b = data[b_start : b_vpos + b_len]
    if rng.random() < 0.5:
        return data[: a_vpos + a_len] + a + data[a_vpos + a_len :]  # the same tag twice
    return data[:a_start] + b + a + data[b_vpos + b_len :]  # two tags out of order


_POISON: list[tuple[int, bytes, bytes]] = [
    (0x00280008, b"IS", b"1e999 "),
    (0x00280008, b"IS", b"9999999999"),
    (0x00280008, b"IS", b"-1"),
    (0x00280010, b"US", b"\xff\xff"),
    (0x00080005, b"CS", b"ISO_IR\x00100"),
    (0x00080005, b"CS", b"\xff\xfe\xfd\xfc"),
    (0x00200013, b"IS", b"99999999999999999999999"),
    (0x00180050, b"DS", b"NaN "),
    (0x00180050, b"DS", b"1e999 "),
    (0x00080020, b"DA", b"20241399"),
    (0x00080018, b"UI", b"1.2.3/4\x00"),
    (0x00080018, b"UI", b"\xe9\xe9.1"),
    (0x00100010, b"PN", b"\x1b$B\x1b(B\x1b\x1b"),
    (0x00100010, b"PN", b"A" * 70000),
    (0x00200032, b"DS", b"1\\2\\3\\4\\5\\6\\7\\nope"),
]


def _poison(data: bytes, rng: random.Random) -> bytes:
    elements, little = _elements(data)
    if not elements or not little:
        return _flip(data, rng)
    tag, vr, value = rng.choice(_POISON)
    if len(value) % 2:
        value += b" "
    if len(value) > 0xFFFF:
        vr = b"UT" if vr != b"UN" else vr
    if vr in (b"UT", b"UN", b"OB"):
        element = struct.pack("<HH2sHL", tag >> 16, tag & 0xFFFF, vr, 0, len(value)) + value
    else:
        element = struct.pack("<HH2sH", tag >> 16, tag & 0xFFFF, vr, len(value)) + value
    # replace the element with that tag, or insert it in tag order
    header = parse_header(data, True)
    found = header.elements.get(tag)
    if found is not None:
        start = next(e for e in elements if e[1] == found[1])
        return data[: start[0]] + element + data[start[1] + start[2] :]
    after = [e for e in elements if _tag_at(data, e[0]) > tag]
    at = after[0][0] if after else len(data)
    return data[:at] + element + data[at:]


def _tag_at(data: bytes, pos: int) -> int:
    group, elem = struct.unpack_from("<HH", data, pos)
    return group << 16 | elem


def _file_meta(data: bytes, rng: random.Random) -> bytes:
    if data[128:132] != b"DICM":
        return _flip(data, rng)
    out = bytearray(data)
    choice = rng.randrange(4)
    if choice == 0:  # group length
        out[140:144] = struct.pack("<L", rng.choice([0, 3, 0xFFFFFFFF, len(data) * 2]))
    elif choice == 1:  # transfer syntax
        at = data.find(b"\x02\x00\x10\x00UI")
        if at > 0:
            n = struct.unpack_from("<H", data, at + 6)[0]
            junk = rng.choice([b"1.2.840.10008.1.2.4.999", b"\xff" * n, b"1.2.840.10008.1.2.1.99"])
            out[at + 8 : at + 8 + n] = junk[:n].ljust(n, b"\0")
    elif choice == 2:  # a VR in the group
        at = data.find(b"UI", 132, 300)
        if at > 0:
            out[at : at + 2] = rng.choice([b"OB", b"SQ", b"\x00\x00", b"UN"])
    else:  # the group cut off
        return bytes(out[: rng.randrange(132, min(len(out), 400))])
    return bytes(out)


#: An empty final deflate block: ends a stream of fully flushed blocks.
_FINAL_BLOCK = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS).flush()


def _deflated(data: bytes) -> bytes:
    """Raw deflate blocks of ``data``, fully flushed: they can be put before any other such."""
    z = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    return z.compress(data) + z.flush(zlib.Z_FULL_FLUSH)


@functools.cache
def _zeros_block() -> bytes:
    """4 MiB of zeros as one self-contained deflate block (about 4 KB): a bomb's brick."""
    return _deflated(b"\0" * 2**22)


def _deflate(data: bytes, rng: random.Random) -> bytes:
    elements, little = _elements(data)
    if not elements or not little or data[128:132] != b"DICM":
        return _flip(data, rng)
    meta_end = 144 + struct.unpack_from("<L", data, 140)[0]
    body = data[meta_end:]
    choice = rng.randrange(3)
    if choice == 2:  # a bomb: a long value of zeros declared, and gigabytes of them deflated
        head = struct.pack("<HH2sHL", 0x0011, 0x0010, b"OB", 0, 0x7FFFFFF0)
        stream = _deflated(head) + _zeros_block() * rng.choice([8, 256]) + _FINAL_BLOCK
    else:
        stream = _deflated(body) + _FINAL_BLOCK
    if choice == 1:  # corrupt inside the compressed stream
        stream = _flip(stream, rng)
    meta = bytearray(data[:meta_end])
    at = meta.find(b"\x02\x00\x10\x00UI")
    if at < 0:
        return _flip(data, rng)
    n = struct.unpack_from("<H", meta, at + 6)[0]
    syntax = b"1.2.840.10008.1.2.1.99"
    new = struct.pack("<HH2sH", 0x0002, 0x0010, b"UI", len(syntax)) + syntax
    meta = meta[:at] + new + meta[at + 8 + n :]
    meta[140:144] = struct.pack("<L", len(meta) - 144)
    return bytes(meta) + stream


MUTATIONS: dict[str, Callable[[bytes, random.Random], bytes]] = {
    "flip": _flip,
    "truncate": _truncate,
    "huge-length": lambda d, r: _length(d, r, None),
    "undefined": lambda d, r: _length(d, r, 0xFFFFFFFF),
    "vr-swap": _vr_swap,
    "depth-bomb": _depth_bomb,
    "duplicate": _duplicate,
    "poison": _poison,
    "file-meta": _file_meta,
    "deflate": _deflate,
}


def mutants(
    seeds: Sequence[tuple[str, bytes]], n: int, *, seed: int = 0, kinds: Sequence[str] = ()
) -> Iterator[Mutant]:
    """``n`` mutants of the ``(name, bytes)`` seeds, the classes taken in turn.

    The same ``seed`` gives the same mutants. ``kinds`` narrows the classes (default: all).
    """
    chosen = list(kinds) or list(MUTATIONS)
    rng = random.Random(seed)
    for i in range(n):
        kind = chosen[i % len(chosen)]
        name, data = seeds[rng.randrange(len(seeds))]
        mutated = MUTATIONS[kind](data, random.Random(rng.getrandbits(64)))
        yield Mutant(f"{i:06d}-{kind}", kind, name, mutated)
