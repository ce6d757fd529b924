"""Decoding one frame: codec backends per transfer syntax, then pydicom's conventions.

Every backend returns the array pydicom's ``pixel_array`` gives for that frame (same dtype,
shape and values, YBR converted to RGB), so the choice of backend never changes the result.
Backends are plain functions ``(bytes, PixelFormat) -> ndarray`` listed per transfer syntax, fastest
first (measured in ``benchmarks/bench_pixels.py``); a backend whose package is missing is skipped
and :func:`available_backends` says which are usable and why not. ``pydicom`` is always last:
it wraps the single frame as encapsulated data and calls pydicom's own decoder.
"""

from __future__ import annotations

import importlib.util
import struct
import zlib
from collections.abc import Callable
from functools import cache
from typing import Any

import numpy as np

from ._errors import PixelDataError, PixelSizeError
from ._format import DEFLATED_IMAGE_FRAME, PixelFormat

__all__ = [
    "available_backends",
    "backends_for",
    "decode_encapsulated",
    "decode_native",
    "to_rgb",
]

#: A backend decodes one frame and says which colour space its output is in.
Backend = Callable[[bytes, PixelFormat], tuple[np.ndarray, str]]

RLE = "1.2.840.10008.1.2.5"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
JPEG_EXTENDED = "1.2.840.10008.1.2.4.51"
JPEG_LOSSLESS = ("1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70")
JPEG_LS = ("1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81")
J2K = ("1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91")
HTJ2K = ("1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.202", "1.2.840.10008.1.2.4.203")
_YBR = ("YBR_FULL", "YBR_FULL_422")


# -- codestream headers: declared sizes are checked before a codec allocates anything --------
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
            if pos + 10 > size:
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


def _check_size(info: dict, fmt: PixelFormat) -> None:
    if not info:
        return
    if (info["rows"], info["columns"]) != (fmt.rows, fmt.columns) or info[
        "components"
    ] != fmt.samples_per_pixel:
        raise PixelSizeError(
            f"codestream is {info['rows']} x {info['columns']} x {info['components']} but the "
            f"header declares {fmt.rows} x {fmt.columns} x {fmt.samples_per_pixel}"
        )


# -- shared post-processing, mirroring pydicom 3's decoders --------------------------------
def _unused_bits(arr: np.ndarray, fmt: PixelFormat) -> np.ndarray:
    shift = fmt.bits_allocated - fmt.bits_stored
    if shift and fmt.pixel_keyword == "PixelData" and fmt.bits_allocated > 1:
        np.left_shift(arr, shift, out=arr)
        np.right_shift(arr, shift, out=arr)
    return arr


def _shift(arr: np.ndarray, precision: int) -> np.ndarray:
    shift = 8 * arr.dtype.itemsize - precision
    if shift > 0:
        np.left_shift(arr, shift, out=arr)
        np.right_shift(arr, shift, out=arr)
    return arr


def to_rgb(arr: np.ndarray, photometric: str) -> np.ndarray:
    """Convert YBR_FULL / YBR_FULL_422 samples to RGB as pydicom does (other spaces pass)."""
    if photometric in _YBR and arr.ndim == 3:
        from pydicom.pixels.processing import convert_color_space

        return convert_color_space(arr, "YBR_FULL", "RGB")
    return arr


def _as_dataset_dtype(arr: np.ndarray, fmt: PixelFormat) -> np.ndarray:
    """Reinterpret decoded samples with the data set's signedness, then cast to its dtype."""
    kind = "i" if fmt.pixel_representation else "u"
    arr = arr.view(np.dtype(f"{kind}{arr.dtype.itemsize}"))
    return arr.astype(fmt.dtype, copy=arr.dtype != fmt.dtype or not arr.flags.writeable)


# -- native ---------------------------------------------------------------------------------
def decode_native(
    data: bytes | bytearray | np.ndarray,
    fmt: PixelFormat,
    *,
    bit_offset: int = 0,
    swap_ow: bool = False,
    as_rgb: bool = True,
) -> np.ndarray:
    """Decode one natively encoded frame (the exact bytes of the frame, or around it)."""
    arr, photometric = _native(data, fmt, bit_offset, swap_ow)
    return to_rgb(arr, photometric) if as_rgb else arr


def _native(
    data: bytes | bytearray | np.ndarray, fmt: PixelFormat, bit_offset: int, swap_ow: bool
) -> tuple[np.ndarray, str]:
    if swap_ow:
        raw = np.frombuffer(data[: len(data) // 2 * 2], "<u2").byteswap().view("u1")
        data = raw[bit_offset // 8 :].tobytes()
        bit_offset = 0
    if fmt.bits_allocated == 1:
        bits = np.unpackbits(np.frombuffer(data, "u1"), bitorder="little")
        arr = bits[bit_offset : bit_offset + fmt.frame_pixels]
        return arr.reshape(fmt.frame_shape), fmt.photometric_interpretation
    stored = np.dtype(fmt.dtype).newbyteorder("<" if fmt.is_little_endian else ">")
    count = fmt.frame_bits // fmt.bits_allocated
    arr = np.frombuffer(data, stored, count=count)
    if arr.dtype != fmt.dtype or not arr.flags.writeable:
        arr = arr.astype(fmt.dtype)  # byte swap, or a private copy to work in place
    photometric = fmt.photometric_interpretation
    if photometric == "YBR_FULL_422" and fmt.samples_per_pixel == 3:
        full = np.empty(count // 2 * 3, fmt.dtype)
        full[0::6], full[3::6] = arr[0::4], arr[1::4]
        full[1::6], full[4::6] = arr[2::4], arr[2::4]
        full[2::6], full[5::6] = arr[3::4], arr[3::4]
        arr = full
        photometric = "YBR_FULL"
    arr = _unused_bits(arr, fmt)
    return _reshape(arr, fmt, planar=fmt.planar_configuration == 1), photometric


def _reshape(arr: np.ndarray, fmt: PixelFormat, *, planar: bool) -> np.ndarray:
    if fmt.samples_per_pixel == 1:
        return arr.reshape(fmt.rows, fmt.columns)
    if planar:
        return arr.reshape(fmt.samples_per_pixel, fmt.rows, fmt.columns).transpose(1, 2, 0)
    return arr.reshape(fmt.rows, fmt.columns, fmt.samples_per_pixel)


# -- RLE ------------------------------------------------------------------------------------
def _rle_check(src: bytes, fmt: PixelFormat) -> int:
    """Check the RLE header against the declared size; return bytes per sample."""
    if len(src) < 64:
        raise PixelDataError("RLE frame shorter than its 64-byte header")
    (segments,) = struct.unpack("<I", src[:4])
    nbytes = max(fmt.bits_allocated // 8, 1)  # Bits Allocated 1: one segment of packed bits
    expected = fmt.samples_per_pixel * nbytes
    if segments != expected:
        raise PixelDataError(f"RLE frame has {segments} segments, expected {expected}")
    # a 2-byte run decodes to at most 128 bytes: a forged Rows x Columns cannot fit
    per_segment = fmt.rows * fmt.columns
    if fmt.bits_allocated == 1:
        per_segment = (per_segment + 7) // 8
    if per_segment * expected > 64 * len(src) + 128 * expected:
        raise PixelSizeError(
            f"{len(src)} bytes of RLE cannot decode to {fmt.rows} x {fmt.columns} pixels"
        )
    return nbytes


def _rle_finish(raw: bytes | bytearray, fmt: PixelFormat) -> tuple[np.ndarray, str]:
    if fmt.bits_allocated == 1:
        bits = np.unpackbits(np.frombuffer(raw, "u1"), bitorder="little")
        return bits[: fmt.frame_pixels].reshape(fmt.frame_shape), fmt.photometric_interpretation
    dtype = np.dtype(fmt.dtype).newbyteorder("<")
    arr = np.frombuffer(raw, dtype, count=fmt.frame_pixels).astype(fmt.dtype)
    arr = _unused_bits(arr, fmt)
    return _reshape(arr, fmt, planar=True), fmt.photometric_interpretation


def _rle_imagecodecs(src: bytes, fmt: PixelFormat) -> tuple[np.ndarray, str]:
    import imagecodecs

    _rle_check(src, fmt)
    dtype = "u1" if fmt.bits_allocated == 1 else np.dtype(fmt.dtype).newbyteorder("<")
    return _rle_finish(imagecodecs.dicomrle_decode(src, dtype), fmt)


def _rle_pylibjpeg(src: bytes, fmt: PixelFormat) -> tuple[np.ndarray, str]:
    from rle.rle import decode_frame

    nbytes = _rle_check(src, fmt)
    if fmt.bits_allocated == 1:  # decode the packed segment as 8-bit samples
        packed_columns = (fmt.rows * fmt.columns + 7) // 8
        return _rle_finish(bytes(decode_frame(src, packed_columns, 8, "<")), fmt)
    return _rle_finish(bytes(decode_frame(src, fmt.rows * fmt.columns, 8 * nbytes, "<")), fmt)


# -- JPEG (10918) ---------------------------------------------------------------------------
def _jpeg_imagecodecs(src: bytes, fmt: PixelFormat) -> tuple[np.ndarray, str]:
    import imagecodecs

    info = jpeg_header(src)
    if not info:
        raise PixelDataError("no JPEG start-of-frame marker")
    _check_size(info, fmt)
    if fmt.samples_per_pixel != 1:
        raise PixelDataError("colour JPEG is left to pydicom's decoder")  # colour handling
    if info["marker"] == 0xC3 and info["precision"] > 8:
        decoded = imagecodecs.ljpeg_decode(src)
    else:
        decoded = imagecodecs.jpeg8_decode(src)
    arr = _as_dataset_dtype(np.asarray(decoded).reshape(fmt.rows, fmt.columns), fmt)
    return _unused_bits(arr, fmt), fmt.photometric_interpretation


def _jpeg8_imagecodecs(src: bytes, fmt: PixelFormat) -> tuple[np.ndarray, str]:
    """8-bit grey JPEG only: where libjpeg-turbo gives IJG libjpeg's values exactly."""
    info = jpeg_header(src)
    if info and (info["precision"] != 8 or info["marker"] == 0xC3):
        raise PixelDataError(f"{info['precision']}-bit JPEG is left to pydicom's own plugin")
    return _jpeg_imagecodecs(src, fmt)


@cache
def _pydicom_jpeg_is_ijg() -> bool:
    """Whether pydicom decodes lossy JPEG with an IJG libjpeg (GDCM's, or Pillow's
    libjpeg-turbo) rather than pylibjpeg-libjpeg, whose inverse DCT rounds differently.

    pydicom tries its plugins in registration order (gdcm, pylibjpeg, pillow) and uses the
    first installed one.
    """
    from pydicom.pixels import get_decoder

    decoder = get_decoder(JPEG_BASELINE)
    order = list(getattr(decoder, "_available", None) or ("gdcm", "pylibjpeg", "pillow"))
    installed = [name for name in order if name in decoder.available_plugins]
    return bool(installed) and installed[0] in ("gdcm", "pillow")


def _jpeg_libjpeg(src: bytes, fmt: PixelFormat) -> tuple[np.ndarray, str]:
    import libjpeg

    info = jpeg_header(src)
    if not info:
        raise PixelDataError("no JPEG start-of-frame marker")
    _check_size(info, fmt)
    if fmt.samples_per_pixel != 1:
        raise PixelDataError("colour JPEG is left to pydicom's decoder")
    decoded = libjpeg.decode(src, colour_transform=0)
    arr = _as_dataset_dtype(np.asarray(decoded).reshape(fmt.rows, fmt.columns), fmt)
    return _unused_bits(arr, fmt), fmt.photometric_interpretation


# -- JPEG-LS --------------------------------------------------------------------------------
def _jls_finish(arr: np.ndarray, info: dict, fmt: PixelFormat) -> tuple[np.ndarray, str]:
    arr = _as_dataset_dtype(arr.reshape(fmt.frame_shape), fmt)
    if fmt.pixel_representation == 1:
        arr = _shift(arr, info.get("precision", fmt.bits_stored))
    photometric = fmt.photometric_interpretation
    if fmt.samples_per_pixel == 3:
        if info.get("component_ids") in ([82, 71, 66], [114, 103, 98]):
            photometric = "RGB"
        elif any(v.startswith(b"JFIF") for v in info.get("app", {}).values()):
            if "YBR" not in photometric:
                photometric = "YBR_FULL"
    return arr, photometric


def _jls_imagecodecs(src: bytes, fmt: PixelFormat) -> tuple[np.ndarray, str]:
    import imagecodecs

    info = jpeg_header(src)
    _check_size(info, fmt)
    return _jls_finish(np.asarray(imagecodecs.jpegls_decode(src)), info, fmt)


def _jls_pyjpegls(src: bytes, fmt: PixelFormat) -> tuple[np.ndarray, str]:
    import jpeg_ls

    info = jpeg_header(src)
    _check_size(info, fmt)
    buffer, meta = jpeg_ls.decode_buffer(src)
    dtype = np.dtype("u1" if meta["bits_per_sample"] <= 8 else "<u2")
    arr = np.frombuffer(buffer, dtype)
    if meta["components"] > 1 and meta["interleave_mode"] == 0:  # colour-by-plane
        arr = arr.reshape(meta["components"], fmt.rows, fmt.columns).transpose(1, 2, 0)
    return _jls_finish(np.ascontiguousarray(arr), info, fmt)


# -- JPEG 2000 / HTJ2K ----------------------------------------------------------------------
def _j2k_finish(arr: np.ndarray, info: dict, fmt: PixelFormat) -> tuple[np.ndarray, str]:
    arr = _as_dataset_dtype(np.ascontiguousarray(arr).reshape(fmt.frame_shape), fmt)
    photometric = fmt.photometric_interpretation
    if photometric in ("MONOCHROME1", "MONOCHROME2"):
        if info.get("signed", bool(fmt.pixel_representation)) != bool(fmt.pixel_representation):
            arr = _shift(arr, info.get("precision", fmt.bits_stored))
    if photometric in ("YBR_ICT", "YBR_RCT"):
        photometric = "RGB"  # the codec inverts the component transform
    return arr, photometric


def _j2k_imagecodecs(src: bytes, fmt: PixelFormat) -> tuple[np.ndarray, str]:
    import imagecodecs

    info = j2k_header(src)
    if not info:
        raise PixelDataError("no JPEG 2000 SIZ marker")
    _check_size(info, fmt)
    return _j2k_finish(imagecodecs.jpeg2k_decode(src), info, fmt)


# -- Deflated Image Frame Compression -------------------------------------------------------
def _deflate_zlib(src: bytes, fmt: PixelFormat) -> tuple[np.ndarray, str]:
    need = (fmt.frame_bits + 7) // 8
    inflater = zlib.decompressobj(-15)
    data = inflater.decompress(src, need)  # never inflates more than one frame
    if len(data) < need:
        raise PixelDataError(f"deflated frame inflates to {len(data)} bytes, need {need}")
    return _native(data, fmt, 0, False)


# -- pydicom: the reference, and the fallback for whatever the fast paths leave -----------
def _pydicom(src: bytes, fmt: PixelFormat) -> tuple[np.ndarray, str]:
    from pydicom.pixels import get_decoder

    if len(src) % 2:
        src += b"\x00"
    wrapped = b"".join(
        (
            b"\xfe\xff\x00\xe0\x00\x00\x00\x00",
            b"\xfe\xff\x00\xe0",
            struct.pack("<I", len(src)),
            src,
            b"\xfe\xff\xdd\xe0\x00\x00\x00\x00",
        )
    )
    opts: dict[str, Any] = {
        "rows": fmt.rows,
        "columns": fmt.columns,
        "samples_per_pixel": fmt.samples_per_pixel,
        "bits_allocated": fmt.bits_allocated,
        "bits_stored": fmt.bits_stored,
        "pixel_representation": fmt.pixel_representation,
        "photometric_interpretation": fmt.photometric_interpretation,
        "number_of_frames": 1,
        "as_rgb": False,
    }
    if fmt.samples_per_pixel > 1:
        opts["planar_configuration"] = fmt.planar_configuration
    try:
        decoder = get_decoder(fmt.transfer_syntax_uid)
    except NotImplementedError as exc:
        raise PixelDataError(str(exc)) from None
    arr, props = decoder.as_array(wrapped, index=0, validate=False, **opts)
    return arr, str(props.get("photometric_interpretation", fmt.photometric_interpretation))


# -- registry -------------------------------------------------------------------------------
_PACKAGES = {
    "imagecodecs": "imagecodecs",
    "pylibjpeg-rle": "rle",
    "pylibjpeg-libjpeg": "libjpeg",
    "pyjpegls": "jpeg_ls",
    "zlib": "zlib",
    "pydicom": "pydicom",
}

_BACKENDS: dict[str, tuple[tuple[str, Backend], ...]] = {
    RLE: (("imagecodecs", _rle_imagecodecs), ("pylibjpeg-rle", _rle_pylibjpeg)),
    # lossy JPEG: decoders may differ by one grey level (their inverse DCTs round differently),
    # so pydicom's own plugin order (gdcm, pylibjpeg, pillow: whichever is installed) comes
    # first; backend="imagecodecs" (libjpeg-turbo) is the fast choice within one grey level
    JPEG_BASELINE: (("imagecodecs", _jpeg_imagecodecs), ("pylibjpeg-libjpeg", _jpeg_libjpeg)),
    JPEG_EXTENDED: (("imagecodecs", _jpeg_imagecodecs), ("pylibjpeg-libjpeg", _jpeg_libjpeg)),
    **{
        ts: (("imagecodecs", _jpeg_imagecodecs), ("pylibjpeg-libjpeg", _jpeg_libjpeg))
        for ts in JPEG_LOSSLESS
    },
    **{ts: (("imagecodecs", _jls_imagecodecs), ("pyjpegls", _jls_pyjpegls)) for ts in JPEG_LS},
    **{ts: (("imagecodecs", _j2k_imagecodecs),) for ts in J2K},
    # OpenJPEG for HTJ2K too: lossy HTJ2K decoded by OpenJPH differs from pydicom's OpenJPEG
    **{ts: (("imagecodecs", _j2k_imagecodecs),) for ts in HTJ2K},
    DEFLATED_IMAGE_FRAME: (("zlib", _deflate_zlib),),
}


@cache
def _installed(name: str) -> bool:
    module = _PACKAGES[name]
    return module == "zlib" or importlib.util.find_spec(module) is not None


def backends_for(
    tsuid: str, backend: str | None = None, *, exact: bool = True
) -> tuple[tuple[str, Backend], ...]:
    """The backends tried for a transfer syntax, in order.

    Parameters
    ----------
    tsuid : str
        Transfer Syntax UID of encapsulated pixel data.
    backend : str, optional
        Use only this backend (``"imagecodecs"``, ``"pylibjpeg-rle"``, ``"pyjpegls"``,
        ``"pydicom"``...); an explicit choice is never silently replaced.
    exact : bool
        Lossy JPEG only: ``True`` gives values equal to ``pixel_array`` whatever plugins are
        installed: pydicom's own plugin first, except 8-bit grey frames when that plugin is an
        IJG libjpeg (gdcm, Pillow), which libjpeg-turbo decodes identically and faster;
        ``False`` tries the fastest decoder first (libjpeg-turbo, within one grey level of any
        other conforming decoder).
        Every other syntax is decoded exactly by every backend.
    """
    chain = tuple(b for b in _BACKENDS.get(tsuid, ()) if _installed(b[0]))
    if tsuid in (JPEG_BASELINE, JPEG_EXTENDED):
        if not exact:
            chain = (*chain, ("pydicom", _pydicom))
        elif _installed("imagecodecs") and _pydicom_jpeg_is_ijg():
            # 8-bit: libjpeg-turbo (GIL released) equals IJG libjpeg bit for bit (its accurate
            # integer IDCT and upsampling are libjpeg 6b's; checked over the corpus in tests)
            chain = (("imagecodecs", _jpeg8_imagecodecs), ("pydicom", _pydicom), *chain)
        else:
            chain = (("pydicom", _pydicom), *chain)
    elif tsuid != DEFLATED_IMAGE_FRAME:
        chain += (("pydicom", _pydicom),)
    if backend is None:
        return chain
    chosen = tuple(b for b in chain if b[0] == backend)
    if not chosen:
        names = ", ".join(name for name, _ in chain) or "none"
        raise PixelDataError(f"backend {backend!r} cannot decode {tsuid}; available here: {names}")
    return chosen


def available_backends() -> dict[str, dict[str, str]]:
    """For each transfer syntax, each backend and whether it is usable (``"ok"`` or why not).

    Examples
    --------
    >>> available_backends()["1.2.840.10008.1.2.5"]["pydicom"]
    'ok'
    """
    report: dict[str, dict[str, str]] = {}
    for tsuid, chain in _BACKENDS.items():
        entry = {
            name: "ok" if _installed(name) else f"package {_PACKAGES[name]!r} is not installed"
            for name, _ in chain
        }
        if tsuid != DEFLATED_IMAGE_FRAME:
            entry = (
                {"pydicom": "ok", **entry}
                if tsuid in (JPEG_BASELINE, JPEG_EXTENDED)
                else {**entry, "pydicom": "ok"}
            )
        report[tsuid] = entry
    return report


def decode_encapsulated(
    src: bytes,
    fmt: PixelFormat,
    backend: str | None = None,
    *,
    as_rgb: bool = True,
    exact: bool = True,
) -> np.ndarray:
    """Decode one encapsulated frame (its fragments joined) with the first backend that works.

    Raises
    ------
    PixelDataError
        When every backend fails; the message lists each backend's reason.
    """
    failures = []
    for name, func in backends_for(fmt.transfer_syntax_uid, backend, exact=exact):
        try:
            arr, photometric = func(src, fmt)
        except PixelSizeError:
            raise  # a property of the data, not of the backend: no other backend may allocate
        except Exception as exc:  # a codec's own error type is not ours to know
            failures.append(f"{name}: {exc}")
            continue
        if arr.shape != fmt.frame_shape:
            failures.append(f"{name}: decoded shape {arr.shape}, expected {fmt.frame_shape}")
            continue
        return to_rgb(arr, photometric) if as_rgb else arr
    raise PixelDataError("cannot decode: " + "; ".join(failures))
