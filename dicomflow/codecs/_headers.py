"""Codestream headers: the size a frame declares, read before any codec allocates anything."""

from __future__ import annotations

import struct

from ..dicom import TransferSyntax

__all__ = ["codestream_starts", "j2k_header", "jpeg_header"]

#: the first bytes of every frame's codestream, by the table's ``codestream`` column
_STARTS = {
    "jpeg": (b"\xff\xd8",),  # SOI
    "jpeg-ls": (b"\xff\xd8",),
    "jpeg2000": (b"\xff\x4f\xff\x51", b"\x00\x00\x00\x0c"),  # SOC SIZ, or a JP2 signature
}


def codestream_starts(syntax: TransferSyntax) -> tuple[bytes, ...]:
    """What a frame of ``syntax`` starts with (empty: nothing recognisable), to tell the first
    fragment of a frame from the others."""
    return _STARTS.get(syntax.codestream, ())


def jpeg_header(src: bytes) -> dict:
    """Precision, size, components and APP segments of a JPEG or JPEG-LS codestream.

    Returns an empty dict when ``src`` is not a parsable codestream.
    """
    info: dict = {}
    if src[:2] != b"\xff\xd8":
        return info
    pos = 2
    apps = {}
    size = len(src)
    while pos + 4 <= size:
        if src[pos] != 0xFF:
            return {}
        marker = src[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        (length,) = struct.unpack(">H", src[pos + 2 : pos + 4])
        if 0xE0 <= marker <= 0xEF:
            apps[marker] = src[pos + 4 : pos + 2 + length]
        is_sof = (0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC)) or marker == 0xF7
        if is_sof:
            if pos + 10 > size or pos + 10 + 3 * src[pos + 9] > size:
                return {}
            if length != 8 + 3 * src[pos + 9] and marker != 0xF7:
                # T.81 B.2.2: Lf = 8 + 3 x Nf. liblj92 (imagecodecs' lossless JPEG) crashed the
                # process on a frame header that says otherwise: none is a parsable codestream
                return {}
            info["marker"] = marker
            info["precision"] = src[pos + 4]
            info["rows"], info["columns"] = struct.unpack(">HH", src[pos + 5 : pos + 9])
            info["components"] = src[pos + 9]
            info["component_ids"] = [src[pos + 10 + 3 * i] for i in range(info["components"])]
            info["app"] = apps
            return info
        pos += 2 + length
    return {}


def j2k_header(src: bytes) -> dict:
    """Size, components, precision and signedness from a JPEG 2000 SIZ segment."""
    pos = src.find(b"\xff\x4f\xff\x51", 0, 4096)
    if pos < 0 or pos + 42 > len(src):
        return {}
    siz = src[pos + 4 :]
    xsiz, ysiz, xo, yo = struct.unpack(">IIII", siz[4:20])
    (components,) = struct.unpack(">H", siz[36:38])
    ssiz = siz[38]
    return {
        "rows": ysiz - yo,
        "columns": xsiz - xo,
        "components": components,
        "precision": (ssiz & 0x7F) + 1,
        "signed": bool(ssiz & 0x80),
    }
