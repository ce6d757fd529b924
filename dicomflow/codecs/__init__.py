"""The codec layer: every pixel decode and encode in dicomflow goes through here.

Frame arrays (:mod:`dicomflow.pixels`), :class:`~dicomflow.Transcode` and Clean
Pixel Data (:mod:`dicomflow.anonymize`) decode and encode frames with :func:`decode_frame` and
:func:`encode_frame`; no other module imports a codec package (imagecodecs, pylibjpeg, pyjpegls,
gdcm) or calls pydicom's decoders and encoders. This package imports only
:mod:`dicomflow.dicom` and :mod:`dicomflow.errors` of dicomflow.

::

    >>> from dicomflow.codecs import PixelFormat, decode_frame, decoders_for
    >>> [d.name for d in decoders_for("jpeg-ls-lossless")]        # tried in this order
    ['imagecodecs', 'pyjpegls', 'pydicom']
    >>> fmt = PixelFormat("1.2.840.10008.1.2.1", rows=1, columns=2, bits_allocated=8, bits_stored=8)
    >>> decode_frame(b"\\x07\\x09", fmt, "explicit-vr-le").tolist()
    [[7, 9]]

How it is built:

- one **decoder registry** and one **encoder registry** (:class:`Registry`), built once per
  process from the codec modules of this package (:func:`default_registry`);
- a **codec module** per backend (``_native``, ``_deflate``, ``_rle``, ``_jpeg``, ``_jpegls``,
  ``_j2k``, ``_pydicom``) declares, as data, tuples ``DECODERS`` of :class:`Decoder` and
  ``ENCODERS`` of :class:`Encoder`: for which syntaxes, with which priority (measured speed), what
  it needs (``requires``: missing packages make it unavailable, with that reason; ``condition``:
  any other reason, e.g. libjpeg-turbo equals pydicom only where pydicom's JPEG plugin is an
  IJG libjpeg) and whether it gives pydicom's values exactly (``exact``);
- :func:`decoders_for` / :func:`encoders_for` give the order for a syntax and
  :func:`available_backends` says which codecs are usable and why not;
- **the decoded-size guard**: before any decoder runs, the size the frame's codestream declares
  (JPEG SOF, JPEG-LS SOF55, JPEG 2000 / HTJ2K SIZ; the expansion RLE can reach) must match Rows,
  Columns, Samples per Pixel and Bits Allocated, and the decoded frame must fit the decode
  budget (``max_frame_bytes``, 1 GiB per frame by default); otherwise
  :class:`~dicomflow.errors.PixelSizeError`, before anything is allocated;
  :func:`check_frame_count` likewise refuses a Number of Frames the pixel data cannot hold;
- **no backend that can abort the interpreter** runs in the caller's process: pydicom's gdcm
  plugin (uncaught C++ exceptions and crashes on malformed JPEG and JPEG-LS) is never called
  to decode (``_pydicom.NEVER_CALLED``); every syntax it decodes has other decoders.

Adding a transfer syntax
------------------------
1. Add its row to ``dicomflow/dicom/data/transfer-syntaxes.csv`` (UID, names, encoding, what it
   can hold, ``codestream`` if the guard reads its headers). If its frames are native bytes or a
   codec here already handles it, also list its UID in that module's ``DECODERS`` (Encapsulated
   Uncompressed is one line in ``_native``): done.
2. Otherwise add one module here, say ``_jpegxl.py``, and nothing else::

       from ._registry import Decoder, Encoder
       from ._samples import storable  # what PS3.5 lets the syntax hold, 8/16-bit samples

       JPEG_XL = ("1.2.840.10008.1.2.4.110", "1.2.840.10008.1.2.4.112")
       DECODERS = (Decoder("imagecodecs", JPEG_XL, "decode", priority=30,
                           requires=("imagecodecs",)),)
       ENCODERS = (Encoder("imagecodecs", JPEG_XL[:1], "encode", priority=30,
                           requires=("imagecodecs",), accepts="storable"),)

       def decode(data, fmt):  # one frame's bytes -> (array as pixel_array, photometric)
           import imagecodecs
           arr = imagecodecs.jpegxl_decode(data).reshape(fmt.frame_shape)
           return arr, fmt.photometric_interpretation

       def encode(frame, fmt, options):  # one decoded frame -> its codestream
           import imagecodecs
           return bytes(imagecodecs.jpegxl_encode(frame, lossless=True))

   Every module of this package that declares ``DECODERS`` or ``ENCODERS`` is registered; the
   frame arrays decode the new syntax, and :class:`~dicomflow.Transcode`
   offers it as a target (by its ``short_name``) once it has an encoder. A syntax the standard
   table does not know (a private one) can come with its own rows: ``SYNTAXES =
   parse_syntaxes(csv_text)`` in the module, registered with :meth:`Registry.with_modules`.

``encode_png`` writes the PNG files of the image writers (the one file codec outside DICOM).

Errors (all :class:`~dicomflow.errors.DicomflowError` and ``ValueError``): ``PixelDataError``
(nothing could decode the frame), ``PixelSizeError`` (refused by the guard), ``EncodeError``
(the syntax cannot hold the frame, or no encoder).
"""

from __future__ import annotations

from ..errors import EncodeError, FrameDecodeError, PixelDataError, PixelSizeError
from ._codec import (
    available_backends,
    check_encodable,
    decode_frame,
    decode_frames,
    decode_stored,
    decoders_for,
    encode_frame,
    encoded_photometric,
    encoders_for,
    select_encoder,
)
from ._dataset import check_frame_count, pixel_format, stored_frames
from ._format import PixelFormat
from ._guard import DEFAULT_MAX_FRAME_BYTES, check_frame
from ._headers import codestream_starts, j2k_header, jpeg_header
from ._png import encode_png
from ._registry import Decoder, Encoder, Registry, default_registry
from ._samples import to_rgb

__all__ = [
    "DEFAULT_MAX_FRAME_BYTES",
    "Decoder",
    "EncodeError",
    "Encoder",
    "FrameDecodeError",
    "PixelDataError",
    "PixelFormat",
    "PixelSizeError",
    "Registry",
    "available_backends",
    "check_encodable",
    "check_frame",
    "check_frame_count",
    "codestream_starts",
    "decode_frame",
    "decode_frames",
    "decode_stored",
    "decoders_for",
    "default_registry",
    "encode_frame",
    "encode_png",
    "encoded_photometric",
    "encoders_for",
    "j2k_header",
    "jpeg_header",
    "pixel_format",
    "select_encoder",
    "stored_frames",
    "to_rgb",
]
