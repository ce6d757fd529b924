"""What a stage sees and what a sink writes: one instance, its catalog row, and where it came from.

Contracts (the whole of them):

* A **stage** is a callable ``stage(instance) -> Instance | None``. Returning None drops the
  instance ("skipped", the reason naming the stage); raising :class:`Skip` drops it with a reason
  of the stage's choosing; any other exception fails the instance with that reason. A stage may
  also define ``name`` (shown in the manifest) and ``config()`` (a JSON-able dict recorded in the
  manifest and hashed, never holding secrets).
* A **sink** has ``name``, ``config()``, ``open(context)`` (once, in the driving process, before
  any instance), ``write(instance) -> list[Output]`` (in workers; atomic per output) and
  ``close(context, manifest)`` (once, in the driving process, after every instance, e.g. to build
  a DICOMDIR from what was written).
"""

from __future__ import annotations

import hashlib
import io
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

from pydicom import Dataset, dcmread

from ..dicom import top_values
from ..errors import Skip

__all__ = ["Instance", "Output", "RunContext", "Sink", "Skip", "Stage", "read_bytes"]


@dataclass(frozen=True, slots=True)
class Output:
    """One object written: by which sink (or ``"lake"``), where, its SHA-256 and size.

    The one record of what was written: a manifest's ``outputs`` entries
    (:data:`~dicomflow.pipeline.OUTPUT_TYPE`) and a lake's records (its ``uri``,
    ``sha256`` and ``size`` columns) are made from it.
    """

    sink: str
    path: str
    sha256: str
    size: int

    @classmethod
    def of_bytes(cls, sink: str, path: str, data: bytes) -> Output:
        return cls(sink, path, hashlib.sha256(data).hexdigest(), len(data))

    @classmethod
    def of_parts(cls, sink: str, path: str, parts: Iterable[bytes | memoryview]) -> Output:
        """The record of an object written as consecutive ``parts`` (hashed in turn)."""
        h = hashlib.sha256()
        size = 0
        for part in parts:
            h.update(part)
            size += len(part)
        return cls(sink, path, h.hexdigest(), size)

    def record(self) -> dict[str, Any]:
        """As a manifest ``outputs`` entry (:data:`~dicomflow.pipeline.OUTPUT_TYPE`)."""
        return {"sink": self.sink, "path": self.path, "sha256": self.sha256, "size": self.size}


@dataclass(frozen=True)
class RunContext:
    """What sinks learn about the run when it opens and closes."""

    run_id: str
    config_hash: str
    version: str


def read_bytes(uri: str, storage_options: Mapping[str, Any] | None = None) -> bytes:
    """The whole object at ``uri`` (a local path or an fsspec URL)."""
    if "://" in uri or "::" in uri:
        import fsspec

        with fsspec.open(uri, "rb", **dict(storage_options or {})) as f:
            return f.read()
    with open(uri, "rb") as f:
        return f.read()


@dataclass
class Instance:
    """One SOP instance moving through a pipeline.

    ``dataset`` is parsed on first use from the source bytes (Pixel Data kept encoded, nothing
    decoded); stages may replace or modify it. ``row`` is the instance's catalog row.
    ``provenance`` lists what was done, in order, for the manifest.
    """

    uri: str
    row: Mapping[str, Any] = field(default_factory=dict)
    storage_options: Mapping[str, Any] = field(default_factory=dict)
    provenance: list[str] = field(default_factory=list)
    counts: dict[str, Any] = field(default_factory=dict)  # JSON values; numbers count things
    _dataset: Dataset | None = None
    _raw: bytes | None = None
    _encoded: bool = False
    #: the top-level elements of the replaced bytes, where the stage that made them knows them
    _top: Callable[[frozenset[int]], dict[int, tuple[bytes | None, bytes]]] | None = None
    #: whether a stage may work on the whole object's bytes (`raw`, then `replace_bytes`) in
    #: place of its dataset; an instance whose dataset leaves large values on disk says no
    bytes_in_memory: ClassVar[bool] = True

    @classmethod
    def from_dataset(cls, dataset: Dataset, uri: str = "", **kwargs: Any) -> Instance:
        inst = cls(uri, **kwargs)
        inst._dataset = dataset
        return inst

    @property
    def raw(self) -> bytes:
        """The source object's bytes, read once (or those a stage replaced them by, see
        `replace_bytes`)."""
        if self._raw is None:
            self._raw = read_bytes(self.uri, self.storage_options)
        return self._raw

    @property
    def dataset(self) -> Dataset:
        """The full dataset (with file meta), parsed on first use."""
        if self._dataset is None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self._dataset = dcmread(io.BytesIO(self.raw), force=True)
        return self._dataset

    @dataset.setter
    def dataset(self, value: Dataset) -> None:
        self._dataset = value

    def replace_bytes(
        self,
        data: bytes,
        top: Callable[[frozenset[int]], dict[int, tuple[bytes | None, bytes]]] | None = None,
    ) -> None:
        """Replace the object by ``data``: a Part 10 object exactly as
        :func:`~dicomflow.dicom.encode_part10` writes it, made by a stage that works on the
        encoded bytes (de-identification). `raw` is then ``data``, `dataset` is parsed from it on
        first use, and a Part 10 sink writes it as it is (`encoded`).

        ``top``: what :func:`~dicomflow.dicom.top_values` reads from ``data`` for some tags,
        from the stage that built ``data`` element by element (so that a sink naming the file
        need not walk it again); see `top_values`."""
        self._raw = data
        self._dataset = None
        self._encoded = True
        self._top = top

    def top_values(self, tags: frozenset[int]) -> dict[int, tuple[bytes | None, bytes]] | None:
        """:func:`~dicomflow.dicom.top_values` of `encoded` (``None`` without it)."""
        data = self.encoded
        if data is None:
            return None
        if self._top is not None:
            return self._top(tags)
        return top_values(data, tags)

    @property
    def encoded(self) -> bytes | None:
        """The object's Part 10 bytes as :func:`~dicomflow.dicom.encode_part10` would write its
        dataset, when a stage gave them (`replace_bytes`) and nothing parsed them since (a stage
        holding the dataset may change it); else ``None``."""
        return self._raw if self._encoded and self._dataset is None else None

    @property
    def parsed(self) -> bool:
        """Whether the dataset was parsed (or set), or its bytes replaced: a stage may have
        changed it since the source."""
        return self._dataset is not None or self._encoded

    @property
    def sop_instance_uid(self) -> str | None:
        if self._dataset is not None or self._encoded:
            return str(self.dataset.get("SOPInstanceUID", "")) or None
        return self.row.get("sop_instance_uid")


@runtime_checkable
class Stage(Protocol):
    def __call__(self, instance: Instance) -> Instance | None: ...


@runtime_checkable
class Sink(Protocol):
    name: str

    def config(self) -> dict[str, Any]: ...

    def open(self, context: RunContext) -> None: ...

    def write(self, instance: Instance) -> list[Output]: ...

    def close(self, context: RunContext, manifest: Any) -> None: ...
