"""Readers, stages and sinks by the names pipeline files use (``type = "transcode"``).

The built-in ones are listed here as ``module:attribute`` strings, so naming one imports only
its own module. Third-party packages add their own through entry points, with no change here::

    # the plug-in's pyproject.toml
    [project.entry-points."dicomflow.stages"]
    burn-check = "acme_dicom.stages:BurnCheck"
    [project.entry-points."dicomflow.sinks"]
    acme-archive = "acme_dicom.sinks:ArchiveSink"
    [project.entry-points."dicomflow.readers"]
    acme-index = "acme_dicom.readers:read_index"

A stage is a callable ``Instance -> Instance | None`` (:class:`dicomflow.Stage`), a sink follows
:class:`dicomflow.Sink`, a reader is a callable returning a :class:`dicomflow.Reader`. A class
with a ``from_config(dict)`` classmethod is built with it, anything else with the file's keys as
keyword arguments. A plug-in cannot replace a built-in name: that is refused with a clear error.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from importlib.metadata import entry_points
from typing import Any

from ..errors import ConfigError

__all__ = ["READERS", "SINKS", "STAGES", "build_reader", "build_sink", "build_stage", "known"]

READERS = {
    "scan": "dicomflow.catalog:scan",
    "mediaset": "dicomflow.catalog:read_mediaset",
}
STAGES = {
    "filter": "dicomflow.pipeline:Filter",
    "map": "dicomflow.pipeline:Map",
    "transcode": "dicomflow.pipeline:Transcode",
    "deidentify": "dicomflow.anonymize:Deidentify",
}
SINKS = {
    "folder": "dicomflow.writers:Part10Folder",
    "mediaset": "dicomflow.writers:MediaSet",
    "parquet": "dicomflow.writers:ParquetDataset",
    "delta": "dicomflow.writers:DeltaSink",
    "iceberg": "dicomflow.writers:IcebergSink",
    "table": "dicomflow.writers:TableSink",
    "png": "dicomflow.writers:PngFolder",
    "nifti": "dicomflow.writers:NiftiFolder",
    "c-store": "dicomflow.network.scu:StoreSink",
    "stow-rs": "dicomflow.network.dicomweb:StowSink",
}
_BUILT_IN = {"reader": READERS, "stage": STAGES, "sink": SINKS}


def known(kind: str) -> dict[str, str]:
    """Every ``name -> module:attribute`` of one kind (``reader``, ``stage``, ``sink``)."""
    table = dict(_BUILT_IN[kind])
    for ep in entry_points(group=f"dicomflow.{kind}s"):
        if ep.name in table and table[ep.name] != ep.value:
            dist = ep.dist.name if ep.dist is not None else "a plug-in"
            raise ConfigError(
                f"{dist} registers {kind} {ep.name!r}, a built-in name: rename it in its "
                f"'dicomflow.{kind}s' entry points"
            )
        table[ep.name] = ep.value
    return table


def _load(kind: str, name: Any) -> Any:
    table = known(kind)
    if name not in table:
        raise ConfigError(f"unknown {kind} type {name!r}; known: {', '.join(sorted(table))}")
    module, _, attr = table[name].partition(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"{kind} type {name!r} is not available: {exc}") from exc


def _build(kind: str, config: Mapping[str, Any]) -> Any:
    factory = _load(kind, config.get("type"))
    options = {k: v for k, v in config.items() if k != "type"}
    if hasattr(factory, "from_config"):
        return factory.from_config(dict(config))
    try:
        return factory(**options)
    except TypeError as exc:
        raise ConfigError(f"{kind} {config.get('type')!r}: {exc}") from exc


def build_reader(config: Mapping[str, Any]) -> Any:
    """A reader from ``{"type": name, ...options}``; ``path`` is its first argument."""
    factory = _load("reader", config.get("type"))
    options = {k: v for k, v in config.items() if k not in ("type", "path")}
    if "path" not in config:
        raise ConfigError(f"reader {config.get('type')!r} needs a path")
    try:
        return factory(config["path"], **options)
    except TypeError as exc:
        raise ConfigError(f"reader {config.get('type')!r}: {exc}") from exc


def build_stage(config: Mapping[str, Any]) -> Any:
    """A stage from ``{"type": name, ...options}``."""
    return _build("stage", config)


def build_sink(config: Mapping[str, Any]) -> Any:
    """A sink from ``{"type": name, ...options}``."""
    return _build("sink", config)
