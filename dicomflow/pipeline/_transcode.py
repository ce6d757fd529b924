"""Transcode: store an instance in another transfer syntax, one frame at a time.

>>> import dicomflow as dfl
>>> from dicomflow.pipeline import Transcode
>>> run = (dfl.pipeline(dfl.scan("in/")) | Transcode("jpeg2000-lossless"))  # doctest: +SKIP

Targets, by short name or UID: ``implicit-vr-le``, ``explicit-vr-le``, ``deflated``, ``rle``,
``jpeg-ls-lossless``, ``jpeg2000-lossless``, ``htj2k-lossless``, and, only with ``lossy=True``,
``jpeg-baseline``, ``jpeg2000`` and ``jpeg-ls-near-lossless``.

How it works: the source pixels are decoded frame by frame through :mod:`dicomflow.codecs`
(stored values, no colour conversion, so lossless outputs keep them exactly; encapsulated
sources with pydicom's own decoders, native ones read in place) and each frame is encoded at
once, so at most one decoded frame is in memory; encapsulated outputs get a Basic Offset Table,
or an Extended Offset Table past 4 GiB. The targets are the transfer syntaxes of the table that
have an encoder in the codec layer (plus the native ones), by their short names; each has
encoders listed fastest first (``benchmarks/bench_transcode.py --codecs`` measures them), and
the first installed one that accepts the image is used. Native sources going to another native
syntax are not decoded at all.

Lossy outputs record what was lost as PS3.3 C.7.6.1.1.5 asks (Lossy Image Compression "01",
its ratio and method appended to earlier values), become derived images (Image Type "DERIVED",
Derivation Code "Lossy Compression", the source referenced as "Uncompressed predecessor") and
get a new SOP Instance UID, a 2.25 UID derived from the old one and the settings, so reruns give
byte-identical files.

Outputs are meant to pass a validator (dciodvfy) with no error their input did not have
(``benchmarks/dciodvfy_outputs.py`` counts them): lossy JPEG colour decodes to RGB, as DCMTK's
``dcmdjpeg`` writes it; Icon Image Sequence pixels are stored as the output's transfer syntax
allows (PS3.5 8.2: native, or encapsulated in the file's own syntax); a data set stored without
File Meta is read in the native encoding it was found in; the Media Storage SOP Class/Instance
UIDs are the data set's, else its File Meta's, and an instance whose UIDs are missing or not
valid UIDs is refused (:class:`~dicomflow.FileMetaError`, its data set unchanged) rather than
given garbage File Meta.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import numpy as np
from pydicom import Dataset
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import UID

from ..codecs import (
    EncodeError,
    PixelFormat,
    check_encodable,
    decode_frame,
    decode_stored,
    encoded_photometric,
    encoders_for,
    pixel_format,
    select_encoder,
    stored_frames,
    to_rgb,
)
from ..dicom import TRANSFER_SYNTAXES, TransferSyntax, native_syntax, sop_uids, transfer_syntax
from ..errors import ConfigError, DicomflowError, TranscodeError
from ._instance import Instance

__all__ = ["TARGETS", "Transcode", "TranscodeError", "encoders", "transcode_dataset"]


_EXPLICIT_LE = "1.2.840.10008.1.2.1"


def _targets() -> tuple[TransferSyntax, ...]:
    """Native syntaxes a file is written in, then those with an encoder, lossless first."""
    table = list(TRANSFER_SYNTAXES.values())
    native = [ts for ts in table if ts.is_native and ts.is_little_endian and not ts.retired]
    coded = [ts for ts in table if ts.is_encapsulated and encoders_for(ts, installed=False)]
    coded.sort(key=lambda ts: ts.compression != "lossless")
    return tuple(ts for ts in (*native, *coded) if ts.short_name)


#: short names of the targets; lossy ones need ``lossy=True``
TARGETS: dict[str, UID] = {ts.short_name: UID(ts.uid) for ts in _targets()}
NATIVE = tuple(uid for uid in TARGETS.values() if transfer_syntax(uid).is_native)
#: lossy targets: PS3.3 C.7.6.1.1.5.1 method, a readable name
LOSSY = {
    uid: (transfer_syntax(uid).lossy_method, transfer_syntax(uid).name)
    for uid in TARGETS.values()
    if not transfer_syntax(uid).is_lossless
}
#: lossy JPEG (ISO 10918-1): its decoders give YCbCr, which DCMTK's dcmdjpeg stores as RGB
_LOSSY_JPEG = ("1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51")
#: sources whose syntax alone says the pixels were lossy compressed
_LOSSY_SOURCES = {
    uid: ts.lossy_method for uid, ts in TRANSFER_SYNTAXES.items() if ts.is_lossy and ts.lossy_method
}
#: which lossy target each setting belongs to
_SETTINGS = {"quality": "jpeg-baseline", "ratio": "jpeg2000", "near": "jpeg-ls-near-lossless"}
DEFAULTS = {"quality": 90, "ratio": 10.0, "near": 2}
_BOT_LIMIT = 2**32 - 1  # past this the frame offsets go into the Extended Offset Table


def resolve_target(target: str) -> UID:
    """The transfer syntax UID for a short name (see :data:`TARGETS`) or a UID."""
    name = str(target).strip()
    if name.lower() in TARGETS:
        return TARGETS[name.lower()]
    if name in TARGETS.values():
        return UID(name)
    raise ConfigError(
        f"unknown transcode target {target!r}; use a UID or one of: {', '.join(TARGETS)}"
    )


def encoders(target: str) -> list[str]:
    """Names of the installed encoders for ``target``, in the order they are tried."""
    return [e.name for e in encoders_for(str(resolve_target(target)))]


# -- the transform -----------------------------------------------------------------------------


def _put(ds: Dataset, keyword: str, value: Any, vr: str | None = None) -> None:
    """Set an element as a new object, so datasets sharing the old one never see the change."""
    tag = tag_for_keyword(keyword)
    if tag is None:
        raise KeyError(f"{keyword} is not a DICOM keyword")
    ds[tag] = DataElement(tag, vr or dictionary_VR(tag), value)


def _values(ds: Dataset, keyword: str) -> list[Any]:
    value = ds.get(keyword)
    if value is None or value == "":
        return []
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        return [value]
    return list(value)


def _copy_meta(ds: Dataset) -> FileMetaDataset:
    meta = FileMetaDataset()
    for element in getattr(ds, "file_meta", None) or ():
        meta[element.tag] = DataElement(element.tag, element.VR, element.value)
    return meta


def _shallow_copy(ds: Dataset) -> Dataset:
    """A new dataset holding the same (unconverted) elements, in the same encoding."""
    out = Dataset(dict(ds.items()))  # the elements as they are, raw ones unconverted
    implicit, little = ds.original_encoding
    out.set_original_encoding(implicit, little, ds.original_character_set)
    return out


def _resolve_ow(out: Dataset) -> None:
    """'OB or OW' elements read from Implicit VR are OW (PS3.5 A.1); pydicom leaves curve data
    (50xx,3000) ambiguous and then cannot write it in an explicit VR syntax."""
    for tag in list(out.keys()):
        try:
            ambiguous = tag != 0x7FE00010 and dictionary_VR(tag) == "OB or OW"
        except KeyError:
            continue
        if ambiguous and out[tag].VR == "OB or OW":
            out[tag] = DataElement(tag, "OW", out[tag].value)


_SWAP = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}


def _little_endian_copy(ds: Dataset) -> Dataset:
    """Every element converted from big endian (word-sized binary values byte-swapped)."""
    out = Dataset()
    for element in ds:  # converts raw elements to values
        value = element.value
        if element.VR == "SQ":
            value = Sequence([_little_endian_copy(item) for item in value])
        elif element.VR in _SWAP and isinstance(value, bytes) and element.tag != 0x7FE00010:
            width = _SWAP[element.VR]
            usable = len(value) - len(value) % width
            value = np.frombuffer(value[:usable], f">u{width}").astype(f"<u{width}").tobytes()
        out[element.tag] = DataElement(element.tag, element.VR, value)
    return out


#: the Image Pixel attributes a native frame's layout is read from
_IMAGE_PIXEL = (
    "Rows", "Columns", "SamplesPerPixel", "BitsAllocated", "BitsStored", "PixelRepresentation",
    "PlanarConfiguration", "PhotometricInterpretation", "NumberOfFrames",
)  # fmt: skip


def _decoded(fmt: PixelFormat, photometric: str) -> PixelFormat:
    """The description of a decoded frame: colour-by-pixel, in the colour space it came in."""
    return replace(
        fmt,
        transfer_syntax_uid=_EXPLICIT_LE,
        photometric_interpretation=photometric,
        planar_configuration=0,
        number_of_frames=1,
    )


def _native_frames(ds: Dataset, ts: UID) -> Iterator[tuple[np.ndarray, PixelFormat]] | None:
    """Frames of little endian native Pixel Data, decoded from its bytes in place (the values
    pydicom's decoder gives); None where the layout is not the plain one (then the general
    route of :func:`_decoded_frames` decodes)."""
    if ts not in NATIVE or "PixelData" not in ds:
        return None
    data = ds["PixelData"].value
    try:
        # read in memory, every native syntax here holds explicit little endian pixel bytes
        row = {k: ds.get(k) for k in _IMAGE_PIXEL} | {"transfer_syntax_uid": _EXPLICIT_LE}
        pixel = PixelFormat.from_row(row)
    except (DicomflowError, TypeError, ValueError):
        return None
    photometric = pixel.photometric_interpretation
    if (
        not isinstance(data, bytes)
        or pixel.bits_allocated not in (8, 16)
        or pixel.samples_per_pixel not in (1, 3)
        or photometric.startswith("YBR_")
        and photometric != "YBR_FULL"
    ):
        return None
    fmt = _decoded(pixel, photometric)
    size = pixel.frame_nbytes
    if len(data) < size * pixel.number_of_frames:
        return None  # the general route reports what is missing

    def frames() -> Iterator[tuple[np.ndarray, PixelFormat]]:
        for index in range(pixel.number_of_frames):
            frame_bytes = np.frombuffer(data, np.uint8, size, index * size)
            yield decode_frame(frame_bytes, pixel, _EXPLICIT_LE, as_rgb=False), fmt

    return frames()


def _decoded_frames(ds: Dataset, ts: UID) -> Iterator[tuple[np.ndarray, PixelFormat]]:
    """The stored values of each frame, in native byte order, and their format.

    Plain native Pixel Data is read in place (:func:`_native_frames`); everything else frame by
    frame through the codec layer: encapsulated frames with pydicom's own decoders (the
    reference Transcode has always used), other native layouts (big endian, 1-bit, YBR_FULL_422,
    32-bit) with the native decoder. YBR stays YBR (YBR_FULL_422 upsampled: YBR_FULL), except
    from lossy JPEG: its YCbCr is the codestream's colour transform (PS3.5 8.2.1), which the
    decoders leave undone, and it becomes RGB, as DCMTK's ``dcmdjpeg`` writes it: every IOD
    that allows colour allows RGB, while some do not allow YBR_FULL (dciodvfy refuses it in an
    uncompressed ultrasound image).
    """
    native = _native_frames(ds, ts)
    if native is not None:
        yield from native
        return
    try:
        syntax = transfer_syntax(str(ts))
        fmt = pixel_format(ds, syntax.uid)
        backend = "pydicom" if syntax.is_encapsulated else None
        for data in stored_frames(ds, fmt):
            frame, photometric = decode_stored(data, fmt, syntax, backend=backend)
            if syntax.uid in _LOSSY_JPEG and photometric in ("YBR_FULL", "YBR_FULL_422"):
                frame, photometric = to_rgb(frame, photometric), "RGB"  # as dcmdjpeg does
            elif photometric == "YBR_FULL_422":  # decoders return every sample at full size
                photometric = "YBR_FULL"
            yield (
                np.ascontiguousarray(frame, frame.dtype.newbyteorder("=")),
                _decoded(fmt, photometric),
            )
    except TranscodeError:
        raise
    except Exception as exc:
        raise TranscodeError(f"cannot decode the {ts.name} pixels: {exc}") from exc


def _encapsulate(frames: list[bytes]) -> tuple[bytes, bytes, bytes]:
    """Pixel Data items with a Basic Offset Table or, when an offset does not fit in 32 bits, an
    empty one and the Extended Offset Table and its lengths (PS3.5 A.4)."""
    item = b"\xfe\xff\x00\xe0"
    offsets, lengths, position = [], [], 0
    for frame in frames:
        offsets.append(position)
        lengths.append(len(frame))
        position += 8 + len(frame)
    if offsets[-1] <= _BOT_LIMIT:
        table = struct.pack(f"<{len(offsets)}L", *offsets)
        eot = eot_lengths = b""
    else:
        table = b""
        eot = struct.pack(f"<{len(offsets)}Q", *offsets)
        eot_lengths = struct.pack(f"<{len(lengths)}Q", *lengths)
    parts = [item, struct.pack("<L", len(table)), table]
    for frame in frames:
        parts += [item, struct.pack("<L", len(frame)), frame]
    return b"".join(parts), eot, eot_lengths


def derived_uid(uid: str, salt: str) -> str:
    """A 2.25 UID (a version 8 UUID, PS3.5 B.2) determined by ``uid`` and ``salt``."""
    value = int.from_bytes(hashlib.sha256(f"{uid}|{salt}".encode()).digest()[:16], "big")
    value = (value & ~(0xF << 76)) | (0x8 << 76)  # version 8
    value = (value & ~(0x3 << 62)) | (0x2 << 62)  # RFC 9562 variant
    return f"2.25.{value}"


def _code(value: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = "DCM"
    item.CodeMeaning = meaning
    return item


def _mark_lossy(out: Dataset, source: Dataset, target: UID, ratio: float, salt: str) -> None:
    """PS3.3 C.7.6.1.1.5 lossy attributes, a derived image, a new SOP Instance UID."""
    method, label = LOSSY[target]
    _put(out, "LossyImageCompression", "01")
    ratios = [*_values(source, "LossyImageCompressionRatio"), f"{ratio:.2f}"]
    methods = [*_values(source, "LossyImageCompressionMethod"), method]
    _put(out, "LossyImageCompressionRatio", ratios)  # in the order the compressions happened
    _put(out, "LossyImageCompressionMethod", methods)
    image_type = [str(v) for v in _values(source, "ImageType")]
    if image_type:
        _put(out, "ImageType", ["DERIVED", *image_type[1:]])
    note = f"Lossy compression, {label} ({method}) {ratio:.2f}:1, by dicomflow"
    earlier = str(source.get("DerivationDescription", "") or "")
    _put(out, "DerivationDescription", (f"{earlier}; {note}" if earlier else note)[:1024])
    codes = list(source.get("DerivationCodeSequence", []))
    _put(out, "DerivationCodeSequence", Sequence([*codes, _code("113040", "Lossy Compression")]))
    sop_class, old_uid = sop_uids(source)  # the data set's, else its File Meta's
    reference = Dataset()
    reference.ReferencedSOPClassUID = sop_class
    reference.ReferencedSOPInstanceUID = old_uid
    reference.PurposeOfReferenceCodeSequence = [_code("121320", "Uncompressed predecessor")]
    sources = list(source.get("SourceImageSequence", []))
    _put(out, "SourceImageSequence", Sequence([*sources, reference]))
    new_uid = derived_uid(old_uid, salt)
    _put(out, "SOPInstanceUID", new_uid)
    out.file_meta.MediaStorageSOPInstanceUID = UID(new_uid)


def _set_format(out: Dataset, fmt: PixelFormat, photometric: str) -> None:
    current = {
        "PhotometricInterpretation": photometric,
        "SamplesPerPixel": fmt.samples_per_pixel,
        "BitsAllocated": fmt.bits_allocated,
        "BitsStored": fmt.bits_stored,
        "HighBit": fmt.bits_stored - 1,
        "PixelRepresentation": fmt.pixel_representation,
    }
    for keyword, value in current.items():
        if out.get(keyword) != value:
            _put(out, keyword, value)
    if fmt.samples_per_pixel > 1:
        _put(out, "PlanarConfiguration", 0)
    for keyword in ("ExtendedOffsetTable", "ExtendedOffsetTableLengths"):
        if keyword in out:
            del out[keyword]


def transcode_dataset(
    ds: Dataset,
    target: str,
    *,
    lossy: bool = False,
    quality: int | None = None,
    ratio: float | None = None,
    near: int | None = None,
    encoder: str | None = None,
) -> Dataset:
    """``ds`` stored in the transfer syntax ``target``, as a new dataset (``ds`` is unchanged).

    Parameters
    ----------
    ds
        A dataset with ``file_meta.TransferSyntaxUID`` (as ``pydicom.dcmread`` gives), or one
        read from a data set stored without File Meta: then it is in the native encoding
        pydicom found (``ds.original_encoding``), and its pixels must be native.
    target
        A name from :data:`TARGETS` or a transfer syntax UID.
    lossy
        Allow the lossy targets (``jpeg-baseline``, ``jpeg2000``, ``jpeg-ls-near-lossless``).
    quality, ratio, near
        Lossy settings: JPEG baseline quality (1-100, default 90), JPEG 2000 compression ratio
        (default 10), JPEG-LS NEAR, the largest error per sample (default 2).
    encoder
        Use this encoder package (see :func:`encoders`) instead of the fastest installed one.

    Returns
    -------
    Dataset
        Sharing the unchanged elements with ``ds``; its ``file_meta.TransferSyntaxUID`` is the
        target (Explicit VR Little Endian for instances without Pixel Data, when the target
        compresses), its Media Storage SOP Class/Instance UIDs those of ``ds`` (the data set's,
        else its File Meta's). Frames of lossy JPEG in YCbCr are RGB, and Icon Image Sequence
        pixels native unless they stay in their own encapsulated syntax.

    Raises
    ------
    ConfigError
        Unknown target, a lossy target without ``lossy=True``, settings for another target.
    TranscodeError
        The pixels (or an icon's) cannot be decoded, the target (or its installed encoders)
        cannot hold them, or nothing says how ``ds`` is encoded.
    FileMetaError
        A SOP Class or Instance UID in neither the data set nor its File Meta, or one that is
        not a valid UID (PS3.5 9.1): the instance is refused before any work, ``ds`` unchanged.
        The data set's UIDs are its identity; they are not corrected here.

    Examples
    --------
    >>> out = transcode_dataset(pydicom.dcmread("ct.dcm"), "rle")  # doctest: +SKIP
    >>> out.file_meta.TransferSyntaxUID.name  # doctest: +SKIP
    'RLE Lossless'
    """
    uid = resolve_target(target)
    options = _lossy_options(uid, lossy, quality, ratio, near)
    source_ts = _source_syntax(ds)
    sop_class, sop_instance = sop_uids(ds)  # before any work: the output needs them
    source = TRANSFER_SYNTAXES.get(str(source_ts))
    big_endian = source is not None and not source.is_little_endian
    out = _little_endian_copy(ds) if big_endian else _shallow_copy(ds)
    out.file_meta = _copy_meta(ds)
    out.file_meta.MediaStorageSOPClassUID = UID(sop_class)
    out.file_meta.MediaStorageSOPInstanceUID = UID(sop_instance)
    out.file_meta.TransferSyntaxUID = uid
    if ds.original_encoding[0] and not transfer_syntax(uid).is_implicit_vr:
        _resolve_ow(out)
    if "PixelData" not in ds:
        if uid not in NATIVE:  # nothing to compress: the dataset encoding of the target
            out.file_meta.TransferSyntaxUID = UID(_EXPLICIT_LE)
    elif source_ts != uid and not (uid in NATIVE and source_ts in NATIVE):
        if uid in NATIVE:
            _decode_to_native(ds, out, source_ts)
        else:
            _encode_frames(ds, out, source_ts, uid, options, encoder)
        _mark_decoded_lossy(ds, out, source_ts, uid)
    # else the pixels stay as they are; only the dataset encoding may change
    _store_icons(ds, out, source_ts, UID(out.file_meta.TransferSyntaxUID))
    return out


def _source_syntax(ds: Dataset) -> UID:
    """The transfer syntax ``ds`` is encoded in: its File Meta's, else the native one pydicom
    read it in (a data set stored without File Meta: not a PS3.10 file, yet the scan reads it,
    and pydicom tells implicit from explicit VR and the byte order by looking)."""
    meta = getattr(ds, "file_meta", None)
    if meta is not None and meta.get("TransferSyntaxUID"):
        return UID(str(meta.TransferSyntaxUID).rstrip("\0 "))
    implicit, little = ds.original_encoding
    if implicit is None or little is None:
        raise TranscodeError(
            "the dataset has no (0002,0010) Transfer Syntax UID and was not read from bytes: "
            "nothing says how it is encoded"
        )
    if 0x7FE00010 in ds and ds[0x7FE00010].is_undefined_length:
        raise TranscodeError(
            "encapsulated Pixel Data without a (0002,0010) Transfer Syntax UID saying how it "
            "was compressed"
        )
    return UID(native_syntax(bool(implicit), bool(little)).uid)


def _mark_decoded_lossy(ds: Dataset, out: Dataset, source_ts: UID, uid: UID) -> None:
    """Pixels decoded from a lossy syntax stay lossy ones (PS3.3 C.7.6.1.1.5)."""
    method = _LOSSY_SOURCES.get(source_ts)
    if method and uid not in LOSSY and str(ds.get("LossyImageCompression", "")) != "01":
        _put(out, "LossyImageCompression", "01")  # decoded from a lossy syntax: still lossy
        if "LossyImageCompressionMethod" not in ds:
            _put(out, "LossyImageCompressionMethod", method)


def _lossy_options(
    uid: UID, lossy: bool, quality: int | None, ratio: float | None, near: int | None
) -> dict[str, Any]:
    if uid in LOSSY and not lossy:
        raise ConfigError(
            f"{uid.name} is lossy: pass lossy=True (--lossy) to allow losing information"
        )
    given = {"quality": quality, "ratio": ratio, "near": near}
    owner = {key: TARGETS[name] for key, name in _SETTINGS.items()}
    options = {}
    for key, value in given.items():
        if value is not None and owner[key] != uid:
            raise ConfigError(f"{key} is a setting of {owner[key].name}, not of {uid.name}")
        if owner[key] == uid:
            options[key] = DEFAULTS[key] if value is None else value
    if not 1 <= int(options.get("quality", 90)) <= 100:
        raise ConfigError(f"quality must be 1..100, got {options['quality']}")
    if not float(options.get("ratio", 10)) > 1:
        raise ConfigError(f"ratio must be > 1, got {options['ratio']}")
    if not 1 <= int(options.get("near", 2)) <= 255:
        raise ConfigError(f"near must be 1..255, got {options['near']}")
    return options


def _decode_to_native(ds: Dataset, out: Dataset, source_ts: UID) -> None:
    chunks: list[bytes] = []
    bits: list[np.ndarray] = []
    fmt = None
    for frame, fmt in _decoded_frames(ds, source_ts):
        if fmt.bits_allocated == 1:  # frames of 1-bit pixels are packed end to end
            bits.append(frame.ravel())
        else:
            chunks.append(frame.astype(frame.dtype.newbyteorder("<"), copy=False).tobytes())
    if fmt is None:
        raise TranscodeError("the Pixel Data holds no frame")
    if bits:
        from pydicom.pixels.utils import pack_bits

        chunks = [pack_bits(np.concatenate(bits), pad=False)]
    data = b"".join(chunks)
    if len(data) % 2:
        data += b"\x00"
    _set_format(out, fmt, fmt.photometric_interpretation)
    _put(out, "PixelData", data, "OB" if fmt.bits_allocated <= 8 else "OW")
    out["PixelData"].is_undefined_length = False


def _store_icons(ds: Dataset, out: Dataset, source_ts: UID, target: UID) -> None:
    """Icon Image Sequence (0088,0200) pixels in a form the output's syntax allows.

    PS3.5 8.2 and A.4: an icon's Pixel Data is native, or, in a file of an encapsulated syntax,
    may be encapsulated in that syntax. So a native icon stays as it is (valid in any syntax),
    and an encapsulated one only while the file stays in its syntax; any other icon, and every
    icon of a big endian source, is decoded and stored native little endian (as the image's
    pixels would be for a native target). An icon that cannot be decoded fails the instance,
    as the image would. Only the top-level sequence holds icons of the image (PS3.3 C.7.6.1.1.6).
    """
    if 0x00880200 not in ds:
        return
    source = TRANSFER_SYNTAXES.get(str(source_ts))
    big_endian = source is not None and not source.is_little_endian
    items = ds[0x00880200].value or ()
    copies = out[0x00880200].value or ()  # the items as ``out`` holds them (converted if BE)
    stored, changed = [], False
    for item, copy in zip(items, copies):
        if 0x7FE00010 not in item:
            stored.append(copy)
            continue
        allowed = not item[0x7FE00010].is_undefined_length or source_ts == target
        if allowed and not big_endian:
            stored.append(copy)
            continue
        icon = Dataset(dict(copy.items()))
        try:
            _decode_to_native(item, icon, source_ts)
        except TranscodeError as exc:
            raise TranscodeError(f"Icon Image Sequence: {exc}") from exc
        stored.append(icon)
        changed = True
    if changed:
        _put(out, "IconImageSequence", Sequence(stored))


def _encode_frames(
    ds: Dataset,
    out: Dataset,
    source_ts: UID,
    target: UID,
    options: dict[str, Any],
    name: str | None,
) -> None:
    encoded: list[bytes] = []
    chosen = decoded = None
    stored: PixelFormat | None = None
    for frame, fmt in _decoded_frames(ds, source_ts):
        if fmt is not decoded or stored is None:  # the frame as stored (frames share one)
            decoded, stored = fmt, replace(fmt, transfer_syntax_uid=str(target))
        if chosen is None:  # one encoder for all frames of the instance
            try:
                check_encodable(stored, str(target))
                chosen = select_encoder(stored, str(target), name)
            except EncodeError as exc:
                raise TranscodeError(str(exc)) from exc
        try:
            data = chosen.encode(frame, stored, options)
        except EncodeError as exc:
            raise TranscodeError(str(exc)) from exc
        except Exception as exc:
            raise TranscodeError(f"{chosen.name} could not encode {target.name}: {exc}") from exc
        encoded.append(data + b"\x00" if len(data) % 2 else data)
    if fmt is None or chosen is None:
        raise TranscodeError("the Pixel Data holds no frame")
    pixel_data, eot, eot_lengths = _encapsulate(encoded)
    _set_format(out, fmt, encoded_photometric(fmt, str(target)))
    if eot:
        _put(out, "ExtendedOffsetTable", eot, "OV")
        _put(out, "ExtendedOffsetTableLengths", eot_lengths, "OV")
    _put(out, "PixelData", pixel_data, "OB")
    out["PixelData"].is_undefined_length = True
    if target in LOSSY:
        ratio = fmt.frame_nbytes * len(encoded) / max(sum(map(len, encoded)), 1)
        salt = f"{target}|{sorted(options.items())}"
        _mark_lossy(out, ds, target, ratio, salt)


# -- the stage ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Transcode:
    """Stage: store each instance in the transfer syntax ``target``.

    Parameters
    ----------
    target
        A name from :data:`TARGETS` (``"rle"``, ``"jpeg2000-lossless"``...) or a UID.
    lossy
        Allow lossy targets; without it they raise :class:`~dicomflow.ConfigError`.
    quality, ratio, near
        Lossy settings (see :func:`transcode_dataset`); ``None`` takes the defaults.
    encoder
        Force one encoder package instead of the fastest installed one.

    Examples
    --------
    >>> Transcode("rle").config()
    {'type': 'transcode', 'target': '1.2.840.10008.1.2.5', 'lossy': False}
    >>> Transcode("jpeg2000", lossy=True, ratio=20).config()["ratio"]
    20
    """

    target: str
    lossy: bool = False
    quality: int | None = None
    ratio: float | None = None
    near: int | None = None
    encoder: str | None = None
    name: ClassVar[str] = "transcode"

    def __post_init__(self) -> None:
        uid = resolve_target(self.target)
        _lossy_options(uid, self.lossy, self.quality, self.ratio, self.near)
        known = [e.name for e in encoders_for(str(uid), installed=False)]
        if self.encoder is not None and known:
            if self.encoder not in known:
                raise ConfigError(f"no encoder {self.encoder!r} for {uid.name}; known: {known}")

    @property
    def uid(self) -> UID:
        return resolve_target(self.target)

    def config(self) -> dict[str, Any]:
        config: dict[str, Any] = {"type": "transcode", "target": str(self.uid), "lossy": self.lossy}
        for key in ("quality", "ratio", "near", "encoder"):
            if getattr(self, key) is not None:
                config[key] = getattr(self, key)
        return config

    def __call__(self, instance: Instance) -> Instance:
        instance.dataset = transcode_dataset(
            instance.dataset,
            self.target,
            lossy=self.lossy,
            quality=self.quality,
            ratio=self.ratio,
            near=self.near,
            encoder=self.encoder,
        )
        return instance
