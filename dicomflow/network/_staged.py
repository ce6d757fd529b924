"""Stages on a received data set that went to its spool file, in bounded memory.

A lake with stages (``--deid``) ran them on the whole instance in memory: the received bytes,
a copy for the :class:`~dicomflow.pipeline.Instance`, pydicom's parse and the encoded result,
several times the instance. A data set larger than the spool's memory now stays in its spool
file (:mod:`._spool`) and the stages see it through :class:`SpooledInstance`:

* its ``dataset`` is read from the file with every element over :data:`DEFER` bytes left there
  (pydicom's ``defer_size``: read when a stage asks for its value);
* a native Pixel Data (defined length) becomes a *buffered* element: a window on the file,
  which pydicom copies to the output in chunks (a stage that decodes the pixels, Clean Pixel
  Data, reads them from the window);
* the result is written by pydicom straight into the landing file (:func:`write_dataset`),
  never encoded to bytes in memory.

So landing a 320 MiB CT with de-identification takes about the spool's memory, not the
instance's size. A stage that asks for the instance's ``raw`` bytes still gets all of them.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from typing import Any, ClassVar

from pydicom import Dataset, dcmread, dcmwrite
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.tag import BaseTag

from ..dicom import file_meta, sop_uids
from ..pipeline import Instance, read_bytes

__all__ = ["DEFER", "SpooledInstance", "write_dataset"]

#: Elements larger than this stay in the spool file until a stage asks for their value.
DEFER = 1 << 20
_PIXEL_DATA = BaseTag(0x7FE00010)
_UNDEFINED = 0xFFFFFFFF


class _Window(io.RawIOBase):
    """``length`` bytes of a file from ``offset``, as a file of their own (read-only)."""

    def __init__(self, path: str, offset: int, length: int) -> None:
        super().__init__()
        self._file = open(path, "rb")  # noqa: SIM115 - closed with the window
        self._offset, self._length, self._pos = offset, length, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._pos, os.SEEK_END: self._length}[whence]
        self._pos = max(0, base + pos)
        return self._pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        want = min(len(view), self._length - self._pos)
        if want <= 0:
            return 0
        self._file.seek(self._offset + self._pos)
        got = self._file.readinto(view[:want])
        self._pos += got or 0
        return got or 0

    def close(self) -> None:
        if not self.closed:
            self._file.close()
        super().close()


@dataclass
class SpooledInstance(Instance):
    """An :class:`~dicomflow.pipeline.Instance` whose bytes are the spool file ``file``
    (File Meta included): its dataset is read from there with large values left on disk."""

    file: str = ""
    #: its dataset is read with large values left on disk: a stage must not load it all
    bytes_in_memory: ClassVar[bool] = False

    def __post_init__(self) -> None:
        self._windows: list[Any] = []  # io.BufferedReader over a _Window

    @property
    def raw(self) -> bytes:
        """The whole file, read once (only for a stage that asks for the bytes)."""
        if self._raw is None:
            self._raw = read_bytes(self.file)
        return self._raw

    @property
    def dataset(self) -> Dataset:
        if self._encoded:  # a stage replaced the bytes: the spool file is the original now
            return super().dataset
        if self._dataset is None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = dcmread(self.file, defer_size=DEFER, force=True)
            self._buffer_pixels(ds)
            self._dataset = ds
        return self._dataset

    @dataset.setter
    def dataset(self, value: Dataset) -> None:
        self._dataset = value

    def _buffer_pixels(self, ds: Dataset) -> None:
        """Native Pixel Data left in the file becomes a buffered element (a window on it)."""
        raw = ds._dict.get(_PIXEL_DATA)  # noqa: SLF001 - the element as read, not converted
        if not isinstance(raw, RawDataElement) or raw.value is not None:
            return  # small enough to have been read, or already converted
        if raw.length == _UNDEFINED or raw.length == 0:
            return  # encapsulated: read when asked for (pydicom's deferred read)
        vr = raw.VR or ("OW" if int(ds.get("BitsAllocated", 8) or 8) > 8 else "OB")
        if vr not in ("OB", "OW"):
            return
        window = io.BufferedReader(_Window(self.file, raw.value_tell, raw.length))
        self._windows.append(window)
        ds._dict[_PIXEL_DATA] = DataElement(_PIXEL_DATA, vr, window)  # noqa: SLF001

    def close(self) -> None:
        """Close the windows on the spool file (before it is removed)."""
        for window in self._windows:
            window.close()
        self._windows.clear()


def write_dataset(ds: Dataset, path: str, *, fsync: bool) -> None:
    """Write ``ds`` as a Part 10 file at ``path`` as :func:`~dicomflow.dicom.encode_part10`
    encodes it (File Meta regenerated, zero preamble), streaming buffered values."""
    old = getattr(ds, "file_meta", None)
    ts = str(old.get("TransferSyntaxUID")) if old is not None else ""
    ds.file_meta = file_meta(*sop_uids(ds), ts or "1.2.840.10008.1.2.1")
    ds.preamble = b"\x00" * 128
    with open(path, "wb") as f:  # pydicom's writer itself: it copies buffers in chunks
        dcmwrite(f, ds, enforce_file_format=True)
        if fsync:
            f.flush()
            os.fdatasync(f.fileno())
