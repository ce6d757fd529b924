"""pydicom's own decoders and encoder plugins: the reference, and the fallback for whatever the
faster codecs leave.

The decoder wraps the single frame as encapsulated data and calls pydicom's decoder for the
syntax, one decoding plugin at a time in pydicom's order (gdcm, pylibjpeg, pillow for JPEG...),
except the plugins of :data:`NEVER_CALLED`: a plugin that can abort the interpreter on a
malformed frame would, as the last fallback of a frame every other decoder refused, kill the
process (and a resumed run, on the same file). Where pydicom itself would decode lossy JPEG with
gdcm, Pillow takes its place: both are IJG libjpeg arithmetic (Pillow's libjpeg-turbo), with
identical values on every lossy JPEG of the corpus (``tests/pixels/test_frames.py`` checks
against pydicom's ``pixel_array``); pylibjpeg's libjpeg can differ by a few grey levels.
Each encoder is one pydicom encoding plugin called for one frame (encoders only ever see frames
dicomflow decoded).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from functools import cache
from types import MappingProxyType
from typing import Any

import numpy as np

from ..errors import PixelDataError
from . import _jpegls, _rle
from ._format import PixelFormat
from ._guard import codec_failed
from ._registry import Decoder, Encoder
from ._samples import storable

__all__ = ["NEVER_CALLED", "decode", "decoding_plugins", "jpeg_plugin"]

RLE = "1.2.840.10008.1.2.5"
LOSSY_JPEG = ("1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51")
JPEG_LS = ("1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81")
J2K_LOSSLESS = "1.2.840.10008.1.2.4.90"
J2K = "1.2.840.10008.1.2.4.91"
#: the encapsulated syntaxes pydicom 3 decodes
DECODES = (
    RLE,
    "1.2.840.10008.1.2.4.50",
    "1.2.840.10008.1.2.4.51",
    "1.2.840.10008.1.2.4.57",
    "1.2.840.10008.1.2.4.70",
    *JPEG_LS,
    J2K_LOSSLESS,
    J2K,
    "1.2.840.10008.1.2.4.201",
    "1.2.840.10008.1.2.4.202",
    "1.2.840.10008.1.2.4.203",
)

DECODERS = (Decoder("pydicom", DECODES, "decode", priority=0, requires=("pydicom",)),)

#: pydicom decoding plugins dicomflow never calls, and why. Found by fuzzing each backend in a
#: child process (``tests/codecs/test_no_abort.py`` writes such files): gdcm 3.0's codecs let
#: C++ exceptions escape into the interpreter, which aborts (SIGABRT, exit 134) on a JPEG whose
#: JFIF major version is not 1 (a libjpeg warning that gdcm throws as ``gdcm::Exception``) or
#: on truncated or corrupt JPEG data, and crash (SIGSEGV) on a JPEG-LS frame with a second
#: start-of-frame segment. Every syntax it decodes has other decoders (CharLS, libjpeg,
#: OpenJPEG, Pillow), so it is dropped from decoding altogether; its RLE encoder stays (it only
#: encodes frames dicomflow decoded).
NEVER_CALLED: Mapping[str, str] = MappingProxyType(
    {
        "gdcm": "lets C++ exceptions escape and crashes on malformed JPEG and JPEG-LS frames, "
        "which aborts the interpreter",
    }
)
# after the faster codecs of each syntax (see their modules); gdcm, pylibjpeg, pydicom is also
# pydicom's own order for RLE
ENCODERS = (
    Encoder("gdcm", (RLE,), "encode_gdcm", 20, condition="gdcm", accepts="rle_storable"),
    Encoder(
        "pylibjpeg", (RLE,), "encode_pylibjpeg", 15, condition="pylibjpeg", accepts="rle_storable"
    ),
    Encoder("pydicom", (RLE,), "encode_pydicom", 10, condition="pydicom", accepts="rle_storable"),
    Encoder(
        "pyjpegls", JPEG_LS, "encode_pyjpegls", 20, condition="pyjpegls", accepts="jls_storable"
    ),
    Encoder(
        "pylibjpeg",
        (J2K_LOSSLESS, J2K),
        "encode_pylibjpeg",
        20,
        condition="pylibjpeg",
        accepts="storable",
    ),
)


# -- decoding ----------------------------------------------------------------------------------
def decode(src: bytes, fmt: PixelFormat) -> tuple[np.ndarray, str]:
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
    plugins = decoding_plugins(fmt.transfer_syntax_uid)
    if not plugins:
        raise PixelDataError(
            f"pydicom has no decoding plugin for {fmt.transfer_syntax_uid} here that is safe to "
            f"call (never called: {', '.join(NEVER_CALLED)})"
        )
    failures = []
    for plugin in plugins:
        try:
            arr, props = decoder.as_array(
                wrapped, index=0, validate=False, decoding_plugin=plugin, **opts
            )
        except BaseException as exc:  # a plugin's own error type is not ours to know
            if not codec_failed(exc):
                raise
            failures.append(f"{plugin}: {exc}")
            continue
        photometric = props.get("photometric_interpretation", fmt.photometric_interpretation)
        return arr, str(photometric)
    raise PixelDataError("; ".join(failures))


def _plugin_order(decoder: Any) -> list[str]:
    """pydicom's own order of a decoder's installed plugins (its registration order)."""
    order = list(getattr(decoder, "_available", None) or decoder.available_plugins)
    return [name for name in order if name in decoder.available_plugins]


@cache
def decoding_plugins(syntax: str) -> tuple[str, ...]:
    """The pydicom decoding plugins :func:`decode` tries for ``syntax``, in order.

    pydicom's own order of the installed plugins, less those of :data:`NEVER_CALLED`; for lossy
    JPEG, when pydicom itself would use gdcm (an IJG libjpeg), Pillow (the same arithmetic)
    first.

    Examples
    --------
    >>> "gdcm" in decoding_plugins("1.2.840.10008.1.2.4.50")
    False
    """
    from pydicom.pixels import get_decoder

    try:
        order = _plugin_order(get_decoder(syntax))
    except NotImplementedError:
        return ()
    safe = [name for name in order if name not in NEVER_CALLED]
    if syntax in LOSSY_JPEG and order[:1] == ["gdcm"] and "pillow" in safe:
        safe.remove("pillow")
        safe.insert(0, "pillow")
    return tuple(safe)


@cache
def jpeg_plugin() -> str:
    """The plugin pydicom decodes lossy JPEG with here ('' when none is installed).

    pydicom tries its plugins in registration order (gdcm, pylibjpeg, pillow) and uses the first
    installed one.
    """
    from pydicom.pixels import get_decoder

    installed = _plugin_order(get_decoder("1.2.840.10008.1.2.4.50"))
    return installed[0] if installed else ""


# -- encoding ----------------------------------------------------------------------------------
def _plugin(name: str, syntax: str) -> str | None:
    """Why pydicom's encoding plugin ``name`` cannot encode ``syntax`` here (``None``: it can)."""
    from pydicom.pixels import get_encoder

    encoder = get_encoder(syntax)
    if name in encoder.available_plugins:
        return None
    missing = getattr(encoder, "_unavailable", {}).get(name)  # pydicom keeps what each lacks
    needs = f": it needs {', '.join(missing)}" if missing else ""
    return f"pydicom's {name!r} encoding plugin is unavailable{needs}"


def gdcm(syntax: str) -> str | None:
    return _plugin("gdcm", syntax)


def pylibjpeg(syntax: str) -> str | None:
    return _plugin("pylibjpeg", syntax)


def pydicom(syntax: str) -> str | None:
    return _plugin("pydicom", syntax)


def pyjpegls(syntax: str) -> str | None:
    return _plugin("pyjpegls", syntax)


def _encode(plugin: str, frame: np.ndarray, fmt: PixelFormat, options: Mapping[str, Any]) -> bytes:
    from pydicom.pixels import get_encoder

    if plugin not in get_encoder(fmt.transfer_syntax_uid).available_plugins:
        raise PixelDataError(f"pydicom's {plugin!r} plugin is not available here")
    extra: dict[str, Any] = {}
    if "ratio" in options:
        extra["j2k_cr"] = [options["ratio"]]
    if "near" in options:
        extra["jls_error"] = options["near"]
    return bytes(
        get_encoder(fmt.transfer_syntax_uid).encode(
            frame,
            encoding_plugin=plugin,
            rows=fmt.rows,
            columns=fmt.columns,
            samples_per_pixel=fmt.samples_per_pixel,
            bits_allocated=fmt.bits_allocated,
            bits_stored=fmt.bits_stored,
            pixel_representation=fmt.pixel_representation,
            photometric_interpretation=fmt.photometric_interpretation,
            planar_configuration=0,
            number_of_frames=1,
            **extra,
        )
    )


def encode_gdcm(frame: np.ndarray, fmt: PixelFormat, options: Mapping[str, Any]) -> bytes:
    return _encode("gdcm", frame, fmt, options)


def encode_pylibjpeg(frame: np.ndarray, fmt: PixelFormat, options: Mapping[str, Any]) -> bytes:
    return _encode("pylibjpeg", frame, fmt, options)


def encode_pydicom(frame: np.ndarray, fmt: PixelFormat, options: Mapping[str, Any]) -> bytes:
    return _encode("pydicom", frame, fmt, options)


def encode_pyjpegls(frame: np.ndarray, fmt: PixelFormat, options: Mapping[str, Any]) -> bytes:
    return _encode("pyjpegls", frame, fmt, options)


def rle_storable(fmt: PixelFormat) -> bool:
    return _rle.storable(fmt)


def jls_storable(fmt: PixelFormat) -> bool:
    return _jpegls.jls_storable(fmt)


__all__ += ["encode_gdcm", "encode_pydicom", "encode_pyjpegls", "encode_pylibjpeg", "storable"]
