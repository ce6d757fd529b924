"""The encoders of :mod:`dicomflow.pipeline.transcode`: what each target may hold, one function
per codec package and syntax, listed fastest first, and how one is picked for an image."""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydicom.uid import (
    JPEG2000,
    UID,
    HTJ2KLossless,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

from ..errors import ConfigError, TranscodeError

# What each target may hold: the PS3.5 section 8.2 tables, narrowed to what the encoders here
# store exactly (8 or 16 bits allocated). Each row: photometric interpretations, signed samples
# allowed, bits allocated, the smallest bits stored (the largest is bits allocated).
_Profile = tuple[tuple[str, ...], bool, tuple[int, ...], int]
_GREY: _Profile = (("MONOCHROME1", "MONOCHROME2"), True, (8, 16), 1)
_PALETTE: _Profile = (("PALETTE COLOR",), False, (8, 16), 1)
_RGB: _Profile = (("RGB",), False, (8, 16), 1)
_YBR: _Profile = (("YBR_FULL",), False, (8, 16), 1)
_YBR8: _Profile = (("YBR_FULL",), False, (8,), 1)


def _jls(profiles: list[_Profile]) -> list[_Profile]:
    return [(p, signed, allocated, 2) for p, signed, allocated, _ in profiles]  # 2 bits at least


_PROFILES: dict[UID, list[_Profile]] = {
    RLELossless: [_GREY, _PALETTE, _RGB, _YBR8],
    JPEGLSLossless: _jls([_GREY, _PALETTE, _RGB, _YBR8]),
    JPEGLSNearLossless: _jls([_GREY, _RGB, _YBR8]),
    JPEG2000Lossless: [_GREY, _PALETTE, _RGB, _YBR],
    HTJ2KLossless: [_GREY, _PALETTE, _RGB, _YBR],
    JPEG2000: [_GREY, _RGB, _YBR],
    JPEGBaseline8Bit: [(_GREY[0], False, (8,), 8), (("RGB", "YBR_FULL"), False, (8,), 8)],
}


# -- what a frame is ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Format:
    """The Image Pixel description of decoded frames."""

    rows: int
    columns: int
    samples: int
    bits_allocated: int
    bits_stored: int
    signed: bool
    photometric: str

    def frame_bytes(self) -> int:
        return (self.rows * self.columns * self.samples * self.bits_allocated + 7) // 8

    def describe(self) -> str:
        sign = "signed" if self.signed else "unsigned"
        return (
            f"{self.photometric}, {self.samples} sample(s), Bits Allocated {self.bits_allocated}, "
            f"Bits Stored {self.bits_stored}, {sign}"
        )


def _check_profile(target: UID, fmt: _Format) -> None:
    for photometrics, signed, allocated, least in _PROFILES.get(target, ()):
        if (
            fmt.photometric in photometrics
            and (signed or not fmt.signed)
            and fmt.bits_allocated in allocated
            and least <= fmt.bits_stored <= fmt.bits_allocated
        ):
            return
    raise TranscodeError(f"{target.name} cannot hold this image ({fmt.describe()})")


def _check_range(frame: np.ndarray, fmt: _Format) -> None:
    """Codecs that store Bits Stored bits need the values to fit in them."""
    if fmt.bits_stored >= 8 * frame.dtype.itemsize:
        return
    lo, hi = (-(1 << (fmt.bits_stored - 1)), (1 << (fmt.bits_stored - 1)) - 1)
    if not fmt.signed:
        lo, hi = 0, (1 << fmt.bits_stored) - 1
    if frame.size and (int(frame.min()) < lo or int(frame.max()) > hi):
        raise TranscodeError(
            f"pixel values {int(frame.min())}..{int(frame.max())} do not fit in Bits Stored "
            f"{fmt.bits_stored}; the image cannot be stored losslessly at that precision"
        )


# -- encoders: one function per codec package, listed per syntax fastest first ------------------

Encode = Callable[[np.ndarray, _Format, dict[str, Any]], bytes]


@dataclass(frozen=True)
class _Encoder:
    name: str
    encode: Encode
    ready: Callable[[], bool]
    accepts: Callable[[_Format], bool] = lambda fmt: True


def _has(module: str) -> Callable[[], bool]:
    def ready() -> bool:
        import importlib.util

        return importlib.util.find_spec(module) is not None

    return ready


def _rle_imagecodecs(frame: np.ndarray, fmt: _Format, options: dict[str, Any]) -> bytes:
    """RLE Lossless (PS3.5 Annex G): per sample, byte planes most significant first, each a
    PackBits segment with every row encoded on its own."""
    import imagecodecs

    nbytes = frame.dtype.itemsize
    little = frame.astype(frame.dtype.newbyteorder("<"), copy=False)
    planes = np.ascontiguousarray(little).view(np.uint8)
    planes = planes.reshape(fmt.rows, fmt.columns, fmt.samples, nbytes)[..., ::-1]
    planes = planes.reshape(fmt.rows, fmt.columns, -1).transpose(2, 0, 1).copy()
    segments = []
    for plane in planes:  # sample by sample, most significant byte first
        segment = imagecodecs.packbits_encode(plane, axis=-1)
        segments.append(segment + b"\x00" if len(segment) % 2 else segment)
    offsets, position = [], 64
    for segment in segments:
        offsets.append(position)
        position += len(segment)
    header = struct.pack("<16L", len(segments), *offsets, *[0] * (15 - len(segments)))
    return b"".join([header, *segments])


def _jls_imagecodecs(frame: np.ndarray, fmt: _Format, options: dict[str, Any]) -> bytes:
    import imagecodecs

    unsigned = frame.view(frame.dtype.str.replace("i", "u"))  # JPEG-LS codes unsigned samples
    return bytes(imagecodecs.jpegls_encode(unsigned, level=options.get("near")))


def _j2k_imagecodecs(frame: np.ndarray, fmt: _Format, options: dict[str, Any]) -> bytes:
    import imagecodecs

    _check_range(frame, fmt)
    return bytes(
        imagecodecs.jpeg2k_encode(
            frame,
            level=0,
            codecformat="J2K",
            reversible=True,
            mct=False,
            bitspersample=fmt.bits_stored,
            numthreads=1,
        )
    )


def _htj2k_imagecodecs(frame: np.ndarray, fmt: _Format, options: dict[str, Any]) -> bytes:
    import imagecodecs

    return bytes(imagecodecs.htj2k_encode(frame, reversible=True, rgb=False))


def _jpeg_imagecodecs(frame: np.ndarray, fmt: _Format, options: dict[str, Any]) -> bytes:
    import imagecodecs

    if fmt.photometric == "YBR_FULL":
        from pydicom.pixels.processing import convert_color_space

        frame = convert_color_space(frame, "YBR_FULL", "RGB")
    subsampling = "422" if fmt.samples == 3 else None
    return bytes(imagecodecs.jpeg8_encode(frame, level=options["quality"], subsampling=subsampling))


def _via_pydicom(target: UID, plugin: str) -> _Encoder:
    """One of pydicom's own encoder plugins, for the one frame."""

    def encode(frame: np.ndarray, fmt: _Format, options: dict[str, Any]) -> bytes:
        from pydicom.pixels import get_encoder

        extra: dict[str, Any] = {}
        if "ratio" in options:
            extra["j2k_cr"] = [options["ratio"]]
        if "near" in options:
            extra["jls_error"] = options["near"]
        return bytes(
            get_encoder(target).encode(
                frame,
                encoding_plugin=plugin,
                rows=fmt.rows,
                columns=fmt.columns,
                samples_per_pixel=fmt.samples,
                bits_allocated=fmt.bits_allocated,
                bits_stored=fmt.bits_stored,
                pixel_representation=int(fmt.signed),
                photometric_interpretation=fmt.photometric,
                planar_configuration=0,
                number_of_frames=1,
                **extra,
            )
        )

    def ready() -> bool:
        from pydicom.pixels import get_encoder

        return plugin in get_encoder(target).available_plugins

    return _Encoder(plugin, encode, ready)


def _full_precision(fmt: _Format) -> bool:
    return fmt.bits_stored == fmt.bits_allocated


# Fastest first. The codec call alone on a 512x512 int16 CT frame, one core, best of 12:
# RLE imagecodecs (PackBits, assembled here) 0.61 ms, gdcm 1.16, pylibjpeg-rle 5.5, pydicom's
# numpy encoder 78; JPEG-LS imagecodecs 4.7, pyjpegls 5.9; JPEG 2000 imagecodecs 27.9,
# pylibjpeg-openjpeg 28.5 (both OpenJPEG; imagecodecs releases the GIL); HTJ2K imagecodecs
# (OpenJPH) 1.9. ``benchmarks/bench_transcode.py --codecs`` times each through this module.
_ENCODERS: dict[UID, list[_Encoder]] = {
    RLELossless: [
        _Encoder("imagecodecs", _rle_imagecodecs, _has("imagecodecs")),
        _via_pydicom(RLELossless, "gdcm"),
        _via_pydicom(RLELossless, "pylibjpeg"),
        _via_pydicom(RLELossless, "pydicom"),
    ],
    JPEGLSLossless: [
        # imagecodecs codes at the container's precision; pyjpegls at Bits Stored
        _Encoder("imagecodecs", _jls_imagecodecs, _has("imagecodecs"), _full_precision),
        _via_pydicom(JPEGLSLossless, "pyjpegls"),
    ],
    JPEGLSNearLossless: [
        _Encoder("imagecodecs", _jls_imagecodecs, _has("imagecodecs"), _full_precision),
        _via_pydicom(JPEGLSNearLossless, "pyjpegls"),
    ],
    JPEG2000Lossless: [
        _Encoder("imagecodecs", _j2k_imagecodecs, _has("imagecodecs")),
        _via_pydicom(JPEG2000Lossless, "pylibjpeg"),
    ],
    JPEG2000: [_via_pydicom(JPEG2000, "pylibjpeg")],
    HTJ2KLossless: [_Encoder("imagecodecs", _htj2k_imagecodecs, _has("imagecodecs"))],
    JPEGBaseline8Bit: [_Encoder("imagecodecs", _jpeg_imagecodecs, _has("imagecodecs"))],
}


def _pick_encoder(target: UID, fmt: _Format, name: str | None) -> _Encoder:
    candidates = [e for e in _ENCODERS[target] if name in (None, e.name)]
    if name is not None and not candidates:
        known = [e.name for e in _ENCODERS[target] if e.ready()]
        raise ConfigError(f"no encoder {name!r} for {target.name}; known: {known}")
    ready = [e for e in candidates if e.ready()]
    for encoder in ready:
        if encoder.accepts(fmt):
            return encoder
    if ready:
        tried = ", ".join(e.name for e in ready)
        raise TranscodeError(f"{tried} cannot encode this image ({fmt.describe()})")
    wanted = " or ".join(e.name for e in candidates)
    raise TranscodeError(f"no encoder for {target.name} is installed: install {wanted}")
