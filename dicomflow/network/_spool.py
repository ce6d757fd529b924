"""Received data sets on their way to the lake: in memory while small, then in a file.

A C-STORE's data set arrives in P-DATA fragments. A :class:`Spool` takes them as they arrive
(:attr:`._ul.Connection.spool`): up to ``memory`` bytes are kept in memory, and an instance that
grows past that is written on, fragment by fragment, to a file in the lake's incoming folder,
after its File Meta Information. When the data set is complete, that file is the instance's
file: the lake checks its header, makes it durable and links it into place, without reading it
back into memory. So receiving an instance of any size takes about ``memory`` + the PDU buffer
of memory, not its size.

An incoming file is named ``<pid>-<random>.part`` (nothing from the instance, which is not
checked yet); when a lake is opened, the files of processes that are gone are removed.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import uuid
from collections.abc import Iterator

__all__ = ["SPOOL_MEMORY", "Spool", "process_alive", "remove_stale"]

#: Data set bytes kept in memory before a spool moves to its file (a 512 x 512 CT image is
#: about 0.5 MB: the usual instance never touches the disk before it is whole).
SPOOL_MEMORY = 4 << 20
#: Bytes gathered before each write once in the file (a PDU is 16 KiB to 1 MiB).
_CHUNK = 1 << 20


class Spool:
    """One data set being received; the lake's :meth:`~._lake.Lake.receive` lands it.

    Parameters
    ----------
    folder
        Where the file goes once the data set outgrows ``memory`` (the lake's incoming folder,
        on the lake's file system, so the file is linked into place, not copied; for a lake
        on a URL, a local temporary folder the file is uploaded from).
    meta
        The File Meta Information the file starts with (preamble and ``DICM`` included).
    memory
        Data set bytes kept in memory before moving to the file.
    """

    def __init__(self, folder: str, meta: bytes, *, memory: int = SPOOL_MEMORY) -> None:
        self.folder = folder
        self.meta = meta
        self.memory = memory
        #: data set bytes received so far (all of them, in memory or in the file)
        self.size = 0
        #: the file, once the data set outgrew memory
        self.path: str | None = None
        #: why the file could not be written (a full disk): the instance fails with it
        self.error: OSError | None = None
        self._buffer = bytearray()
        self._fd: int | None = None

    @property
    def spilled(self) -> bool:
        """Whether the data set went to the file (else :attr:`data` holds all of it)."""
        return self.path is not None

    @property
    def data(self) -> bytearray:
        """The whole data set when it stayed in memory."""
        if self.spilled:
            raise ValueError("this data set is in a file")
        return self._buffer

    def write(self, fragment: memoryview, /) -> None:
        """Take the next fragment of the data set."""
        self.size += len(fragment)
        if self.error is not None:
            return  # counted (the size limit still applies), not kept
        self._buffer += fragment
        limit = self.memory if self._fd is None else _CHUNK
        if len(self._buffer) >= limit:
            try:
                self._spill()
            except OSError as exc:
                self._fail(exc)

    def _spill(self) -> None:
        if self._fd is None:
            os.makedirs(self.folder, exist_ok=True)
            path = os.path.join(self.folder, f"{os.getpid()}-{uuid.uuid4().hex}.part")
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            self.path = path
            _write_all(self._fd, self.meta)
        _write_all(self._fd, self._buffer)
        del self._buffer[:]

    def _fail(self, exc: OSError) -> None:
        self.error = exc
        self._buffer = bytearray()
        self.discard()

    def finish(self, *, fsync: bool) -> None:
        """Write what is left to the file and close it (``fsync``: data made durable first).

        Raises
        ------
        OSError
            The file could not be written (the spool's :attr:`error`, or now).
        """
        if self.error is not None:
            raise self.error
        if self._fd is None:
            return
        try:
            if self._buffer:
                _write_all(self._fd, self._buffer)
                self._buffer = bytearray()
            if fsync:
                os.fdatasync(self._fd)
        finally:
            os.close(self._fd)
            self._fd = None

    @contextlib.contextmanager
    def mapped(self) -> Iterator[memoryview]:
        """The data set in the (finished) file, mapped, not read: for its header."""
        assert self.path is not None and self._fd is None, "finish() the spool first"
        with open(self.path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            view = memoryview(mm)
            data = view[len(self.meta) :]
            try:
                yield data
            finally:  # every view released, or the map cannot close
                data.release()
                view.release()

    def discard(self) -> None:
        """Remove the file, if there is one (an instance refused, an association aborted)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self.path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
            self.path = None


def _write_all(fd: int, data: bytes | bytearray) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def remove_stale(folder: str) -> int:
    """Remove the incoming files of processes that no longer run; how many were removed."""
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return 0
    removed = 0
    for name in names:
        pid, sep, _ = name.partition("-")
        if not (sep and name.endswith(".part") and pid.isdigit()):
            continue
        if int(pid) == os.getpid() or process_alive(int(pid)):
            continue  # a receiver still running (this one, or another on the same lake)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(folder, name))
            removed += 1
    return removed


def process_alive(pid: int) -> bool:
    """Whether a process with this id runs (on this machine)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
