"""The layer's functions: decode and encode one frame through the registry."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from ..dicom import TransferSyntax
from ..errors import ConfigError, EncodeError, PixelDataError, PixelSizeError
from ._format import PixelFormat
from ._guard import check_frame, codec_failed
from ._j2k import colour_transform
from ._registry import Decoder, Encoder, Registry, check_backend, default_registry, no_encoder
from ._samples import to_rgb

__all__ = [
    "available_backends",
    "check_encodable",
    "decode_frame",
    "decode_frames",
    "decode_stored",
    "decoders_for",
    "encode_frame",
    "encoders_for",
    "select_encoder",
]


def _syntax(registry: Registry, syntax: str | TransferSyntax, error: type) -> TransferSyntax:
    found = registry.syntax(syntax)
    if found is None:
        raise error(f"unknown transfer syntax {syntax!r}: no codec for it")
    return found


def decoders_for(
    syntax: str | TransferSyntax,
    backend: str | None = None,
    *,
    exact: bool = True,
    registry: Registry | None = None,
) -> tuple[Decoder, ...]:
    """The decoders tried for a transfer syntax, in order (only those usable here).

    Parameters
    ----------
    syntax : str or TransferSyntax
        A Transfer Syntax UID, short name or keyword.
    backend : str, optional
        Only this backend (``"imagecodecs"``, ``"pyjpegls"``, ``"pydicom"``...): an explicit
        choice is never silently replaced.
    exact : bool
        ``True``: decoders that give pydicom's ``pixel_array`` values exactly first (lossy JPEG
        is the only syntax where decoders differ, by one grey level); ``False``: fastest first.
    registry : Registry, optional
        Another registry than :func:`default_registry`.

    Raises
    ------
    PixelDataError
        ``backend`` is given and cannot decode the syntax here.

    Examples
    --------
    >>> [d.name for d in decoders_for("rle")]
    ['imagecodecs', 'pylibjpeg-rle', 'pydicom']
    """
    registry = registry or default_registry()
    ts = registry.syntax(syntax)
    if ts is None:
        if backend is not None:
            raise PixelDataError(f"backend {backend!r} cannot decode {syntax}: unknown syntax")
        return ()
    return check_backend(registry.decoder_chain(ts.uid, exact, backend), backend, ts)


def decode_stored(
    data: bytes | bytearray | np.ndarray,
    fmt: PixelFormat,
    syntax: str | TransferSyntax,
    *,
    backend: str | None = None,
    exact: bool = True,
    max_frame_bytes: int | None = None,
    registry: Registry | None = None,
) -> tuple[np.ndarray, str]:
    """One frame's samples as stored (no colour conversion) and the photometric interpretation
    they are in. See :func:`decode_frame` for the parameters."""
    registry = registry or default_registry()
    ts = registry.syntaxes.get(syntax) if isinstance(syntax, str) else None  # the usual case
    if ts is None:
        ts = _syntax(registry, syntax, PixelDataError)
    if fmt.transfer_syntax_uid != ts.uid:
        fmt = replace(fmt, transfer_syntax_uid=ts.uid)
    chain = check_backend(registry.decoder_chain(ts.uid, exact, backend), backend, ts)
    check_frame(data, fmt, ts, max_frame_bytes)  # before any decoder allocates anything
    if not chain:
        wanted = [d.name for d in registry.decoders if ts.uid in d.syntaxes and not d.opt_in]
        if not wanted:
            raise PixelDataError(f"dicomflow has no decoder for {ts.name} ({ts.uid})")
        raise PixelDataError(
            f"no decoder for {ts.name} is installed: install {' or '.join(dict.fromkeys(wanted))}"
        )
    failures = []
    for decoder in chain:
        try:
            arr, photometric = decoder.decode(data, fmt)
        except PixelSizeError:
            raise  # a property of the data, not of the decoder: no other one may allocate
        except BaseException as exc:  # a codec's own error type is not ours to know
            if not codec_failed(exc):
                raise
            failures.append(f"{decoder.name}: {exc}")
            continue
        if arr.shape != fmt.frame_shape:
            failures.append(
                f"{decoder.name}: decoded shape {arr.shape}, expected {fmt.frame_shape}"
            )
            continue
        return arr, photometric
    raise PixelDataError("cannot decode: " + "; ".join(failures))


def decode_frame(
    data: bytes | bytearray | np.ndarray,
    fmt: PixelFormat,
    syntax: str | TransferSyntax,
    *,
    backend: str | None = None,
    exact: bool = True,
    as_rgb: bool = True,
    max_frame_bytes: int | None = None,
    registry: Registry | None = None,
) -> np.ndarray:
    """Decode one frame with the first decoder that works, after the size guard.

    Parameters
    ----------
    data : bytes-like
        The frame's bytes: its fragments joined (encapsulated), or exactly its bytes (native).
    fmt : PixelFormat
        The Image Pixel description of the object.
    syntax : str or TransferSyntax
        The transfer syntax ``data`` is in (UID, short name or keyword).
    backend : str, optional
        Use only this backend (see :func:`decoders_for`).
    exact : bool
        Lossy JPEG: pydicom's values exactly (default), or the fastest decoder (within one
        grey level).
    as_rgb : bool
        Convert YBR_FULL / YBR_FULL_422 to RGB, as pydicom's ``pixel_array`` does.
    max_frame_bytes : int, optional
        The decode budget: the most bytes one decoded frame may have (default 1 GiB).
    registry : Registry, optional
        Another registry than :func:`default_registry`.

    Returns
    -------
    numpy.ndarray
        What pydicom's ``pixel_array`` gives for the frame (same dtype, shape and values).

    Raises
    ------
    PixelSizeError
        The codestream declares another size than the data set, or the frame exceeds the
        budget: refused before any decoder runs.
    PixelDataError
        No decoder for the syntax, or every decoder failed (the message lists each reason).

    Examples
    --------
    >>> fmt = PixelFormat("1.2.840.10008.1.2.1", rows=1, columns=2, bits_allocated=8, bits_stored=8)
    >>> decode_frame(b"\\x01\\x02", fmt, "explicit-vr-le")
    array([[1, 2]], dtype=uint8)
    """
    arr, photometric = decode_stored(
        data,
        fmt,
        syntax,
        backend=backend,
        exact=exact,
        max_frame_bytes=max_frame_bytes,
        registry=registry,
    )
    return to_rgb(arr, photometric) if as_rgb else arr


def decode_frames(
    frames: Sequence[bytes | bytearray | np.ndarray],
    fmt: PixelFormat,
    syntax: str | TransferSyntax,
    *,
    backend: str | None = None,
    exact: bool = True,
    as_rgb: bool = True,
    max_frame_bytes: int | None = None,
    registry: Registry | None = None,
) -> list[np.ndarray | PixelDataError]:
    """Decode frames of one format together: in one call where the backend decodes batches
    (``backend="nvimgcodec"``: one GPU batch), else one by one as :func:`decode_frame`.

    Returns each frame's array (as :func:`decode_frame` gives it) or the
    :class:`~dicomflow.errors.PixelDataError` that refused it, in order: one bad frame does
    not lose the others. A batch backend is used alone, never silently replaced; without
    ``backend``, the usual chain decodes each frame.
    """
    registry = registry or default_registry()
    ts = _syntax(registry, syntax, PixelDataError)
    if fmt.transfer_syntax_uid != ts.uid:
        fmt = replace(fmt, transfer_syntax_uid=ts.uid)
    chain = check_backend(registry.decoder_chain(ts.uid, exact, backend), backend, ts)
    batcher = next((d for d in chain if d.batch), None) if backend is not None else None
    results: list[np.ndarray | PixelDataError] = []
    if batcher is None:
        for data in frames:
            try:
                results.append(
                    decode_frame(
                        data,
                        fmt,
                        ts,
                        backend=backend,
                        exact=exact,
                        as_rgb=as_rgb,
                        max_frame_bytes=max_frame_bytes,
                        registry=registry,
                    )
                )
            except PixelDataError as exc:
                results.append(exc)
        return results
    checked: list[bytes] = []
    where: list[int] = []
    results = [PixelDataError("not decoded")] * len(frames)
    for i, data in enumerate(frames):
        try:
            check_frame(data, fmt, ts, max_frame_bytes)  # before the batch allocates anything
        except PixelDataError as exc:
            results[i] = exc
            continue
        checked.append(bytes(data))
        where.append(i)
    decoded = batcher.decode_batch(checked, fmt) if checked else []
    for i, item in zip(where, decoded, strict=True):
        if isinstance(item, BaseException):
            results[i] = PixelDataError(f"{batcher.name}: {item}")
        elif item[0].shape != fmt.frame_shape:
            results[i] = PixelDataError(
                f"{batcher.name}: decoded shape {item[0].shape}, expected {fmt.frame_shape}"
            )
        else:
            results[i] = to_rgb(item[0], item[1]) if as_rgb else item[0]
    return results


# -- encoding ----------------------------------------------------------------------------------
def encoders_for(
    syntax: str | TransferSyntax, *, installed: bool = True, registry: Registry | None = None
) -> tuple[Encoder, ...]:
    """The encoders of a transfer syntax, fastest first (``installed=False``: also those that
    cannot run here).

    Examples
    --------
    >>> "imagecodecs" in [e.name for e in encoders_for("rle")]
    True
    """
    registry = registry or default_registry()
    ts = registry.syntax(syntax)
    if ts is None:
        return ()
    chain = registry.encoder_chain(ts.uid)
    return tuple(e for e in chain if e.available(ts.uid)) if installed else chain


def _target(fmt: PixelFormat, ts: TransferSyntax) -> PixelFormat:
    if fmt.transfer_syntax_uid == ts.uid:
        return fmt
    return replace(fmt, transfer_syntax_uid=ts.uid, number_of_frames=1)


def encoded_photometric(fmt: PixelFormat, syntax: str | TransferSyntax) -> str:
    """The Photometric Interpretation of ``fmt``'s frames once the encoders here store them in
    ``syntax``: JPEG Baseline subsamples colour (``YBR_FULL_422``), JPEG 2000 Lossless applies
    the reversible colour transform to RGB (``YBR_RCT``); otherwise unchanged."""
    uid = syntax.uid if isinstance(syntax, TransferSyntax) else str(syntax)
    if fmt.samples_per_pixel == 3:
        if uid == "1.2.840.10008.1.2.4.50":
            return "YBR_FULL_422"
        if uid == "1.2.840.10008.1.2.4.90" and colour_transform(fmt):
            return "YBR_RCT"
    return fmt.photometric_interpretation


def check_encodable(
    fmt: PixelFormat, syntax: str | TransferSyntax, *, registry: Registry | None = None
) -> None:
    """Raise :class:`EncodeError` when the syntax cannot hold such frames here: PS3.5 does not
    allow them, or no encoder here (installed or not) stores them exactly."""
    registry = registry or default_registry()
    ts = _syntax(registry, syntax, ConfigError)
    target = _target(fmt, ts)
    if not any(e.takes(target) for e in registry.encoder_chain(ts.uid)):
        raise EncodeError(f"{ts.name} cannot hold this image ({fmt.describe()})")


def select_encoder(
    fmt: PixelFormat,
    syntax: str | TransferSyntax,
    encoder: str | Sequence[str] | None = None,
    *,
    registry: Registry | None = None,
) -> Encoder:
    """The first installed encoder (of those named, when ``encoder`` is given) that stores such
    frames in ``syntax``.

    Raises
    ------
    ConfigError
        ``encoder`` names no encoder of the syntax.
    EncodeError
        None installed, or none of the installed ones takes the image.
    """
    registry = registry or default_registry()
    ts = _syntax(registry, syntax, ConfigError)
    names = (encoder,) if isinstance(encoder, str) else encoder
    every = registry.encoder_chain(ts.uid)
    candidates = [e for e in every if names is None or e.name in names]
    if names is not None and not candidates:
        known = [e.name for e in every if e.available(ts.uid)]
        raise ConfigError(f"no encoder {encoder!r} for {ts.name}; known: {known}")
    ready = [e for e in candidates if e.available(ts.uid)]
    target = _target(fmt, ts)
    for found in ready:
        if found.takes(target):
            return found
    if ready:
        tried = ", ".join(dict.fromkeys(e.name for e in ready))
        raise EncodeError(f"{tried} cannot encode this image ({fmt.describe()})")
    raise no_encoder(ts, [e.name for e in candidates])


def encode_frame(
    frame: np.ndarray,
    fmt: PixelFormat,
    syntax: str | TransferSyntax,
    options: Mapping[str, Any] | None = None,
    *,
    encoder: str | Sequence[str] | None = None,
    registry: Registry | None = None,
) -> bytes:
    """Encode one decoded frame (stored values, native byte order) in ``syntax``.

    Parameters
    ----------
    frame : numpy.ndarray
        ``fmt.frame_shape`` samples of ``fmt.dtype``.
    fmt : PixelFormat
        The frame's description (its photometric interpretation, bits, signedness).
    syntax : str or TransferSyntax
        The target transfer syntax.
    options : mapping, optional
        Codec settings: ``quality`` (JPEG baseline, 1-100), ``ratio`` (JPEG 2000 lossy),
        ``near`` (JPEG-LS near-lossless).
    encoder : str or sequence of str, optional
        Only these encoders, in order of preference; default: the fastest installed one that
        takes the frame.

    Returns
    -------
    bytes
        The frame's codestream (odd lengths are the caller's to pad).

    Raises
    ------
    EncodeError
        The syntax cannot hold the frame, no encoder is installed, or the encoder failed.
    """
    registry = registry or default_registry()
    ts = _syntax(registry, syntax, ConfigError)
    target = _target(fmt, ts)
    chosen = select_encoder(target, ts, encoder, registry=registry)
    try:
        return chosen.encode(frame, target, options or {})
    except EncodeError:
        raise
    except BaseException as exc:  # a codec's own error type is not ours to know
        if not codec_failed(exc):
            raise
        raise EncodeError(f"{chosen.name} could not encode {ts.name}: {exc}") from exc


def available_backends(
    kind: str = "decode", *, registry: Registry | None = None
) -> dict[str, dict[str, str]]:
    """For each transfer syntax, each backend and whether it is usable (``"ok"`` or why not).

    Parameters
    ----------
    kind : {"decode", "encode"}
        Decoders (default) or encoders.

    Examples
    --------
    >>> available_backends()["1.2.840.10008.1.2.5"]["pydicom"]
    'ok'
    """
    return (registry or default_registry()).report(kind)
