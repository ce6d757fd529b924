"""Part 10 folders: a sink that writes each instance under a sanitized path template."""

from __future__ import annotations

import functools
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydicom import Dataset
from pydicom.datadict import dictionary_VR, tag_for_keyword

from ..dicom import (
    atomic_write,
    encode_part10,
    join,
    remove_stale_temporaries,
    safe_component,
)
from ..errors import ConfigError
from ..pipeline import Instance, Output, RunContext

__all__ = ["Part10Folder", "render_path"]

DEFAULT_TEMPLATE = "{PatientID}/{StudyInstanceUID}/{SeriesInstanceUID}/{SOPInstanceUID}.dcm"
_FIELD = re.compile(r"\{(\w+)\}")


def render_path(template: str, ds: Dataset) -> list[str]:
    """Path components from a template of ``{Keyword}`` fields, each sanitized."""
    parts = []
    for piece in template.split("/"):

        def value(match: re.Match[str]) -> str:
            v = ds.get(match[1])
            return "" if v is None else str(v)

        parts.append(safe_component(_FIELD.sub(value, piece) or "_"))
    return parts


#: VRs whose one-valued ASCII text pydicom reads as the text without its padding.
_PLAIN_VRS = frozenset({"UI", "LO", "SH", "CS", "DA", "TM", "DT", "PN"})


def _encoded_path(root: str, template: str, instance: Instance) -> str | None:
    """`render_path` for an encoded object, from its first elements; None where a value is
    not plain one-valued text (read from the dataset then)."""
    fields = _template_tags(template)
    if fields is None:
        return None
    found = instance.top_values(frozenset(fields.values()))
    if found is None:
        return None
    texts: dict[str, str] = {}
    for name, tag in fields.items():
        entry = found.get(tag)
        if entry is None:
            texts[name] = ""
            continue
        vr_bytes, raw = entry
        vr = vr_bytes.decode("ascii", "replace") if vr_bytes else _dictionary_vr(tag)
        if vr not in _PLAIN_VRS or b"\\" in raw or not raw.isascii():
            return None
        texts[name] = raw.decode("ascii").rstrip("\0 ")
    parts = [
        safe_component(_FIELD.sub(lambda m: texts[m[1]], piece) or "_")
        for piece in template.split("/")
    ]
    return join(str(root), *parts)


@functools.lru_cache(maxsize=64)
def _template_tags(template: str) -> dict[str, int] | None:
    """``keyword -> tag`` of a template's fields; None when one is not a keyword."""
    fields = {name: tag_for_keyword(name) for name in _FIELD.findall(template)}
    if any(tag is None for tag in fields.values()):
        return None
    return {name: tag for name, tag in fields.items() if tag is not None}


def _dictionary_vr(tag: int) -> str:
    try:
        return str(dictionary_VR(tag))
    except KeyError:
        return ""


@dataclass(frozen=True)
class Part10Folder:
    """Sink: each instance as a Part 10 file under ``root``, named by a template.

    ``template`` fields are DICOM keywords (``{PatientID}``, ``{SOPInstanceUID}``...); every
    component is sanitized (no separators or traversal, no reserved names, bounded length). Two
    different instances rendering to the same path fail the second one (never overwritten).
    Files are written under a temporary name and renamed; ``fsync=True`` also flushes each to
    disk first (durable across power loss, about 0.6 ms per file here). Without it, a resumed
    run re-checks that every output recorded as done is still there with its size.
    """

    root: str
    template: str = DEFAULT_TEMPLATE
    storage_options: Mapping[str, Any] = field(default_factory=dict)
    name: str = "folder"
    fsync: bool = False

    def __post_init__(self) -> None:
        names = [n for _, n, _, _ in string.Formatter().parse(self.template) if n]
        if not names:
            raise ConfigError(
                f"path template {self.template!r} has no {{Keyword}} fields: every instance "
                "would collide"
            )

    def config(self) -> dict[str, Any]:
        return {"type": "folder", "root": str(self.root), "template": self.template}

    def open(self, context: RunContext) -> None:
        """Remove temporary files an interrupted earlier run left behind."""
        remove_stale_temporaries(str(self.root), self.storage_options)

    def path_for(self, ds: Dataset) -> str:
        return join(str(self.root), *render_path(self.template, ds))

    def write(self, instance: Instance) -> list[Output]:
        data = instance.encoded  # bytes a stage made as encode_part10 writes them
        path = None if data is None else _encoded_path(self.root, self.template, instance)
        if data is None or path is None:
            ds = instance.dataset
            data = encode_part10(ds)
            path = self.path_for(ds)
        atomic_write(path, data, storage_options=self.storage_options, fsync=self.fsync)
        return [Output.of_bytes(self.name, path, data)]

    def close(self, context: RunContext, manifest: Any) -> None:
        pass
