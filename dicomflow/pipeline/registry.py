"""Stage and sink types by the names pipeline files use (``type = "transcode"``)."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from ..errors import ConfigError

__all__ = ["SINKS", "STAGES", "build_sink", "build_stage"]

STAGES = {
    "filter": "dicomflow.pipeline.stages:Filter",
    "map": "dicomflow.pipeline.stages:Map",
    "transcode": "dicomflow.pipeline.transcode:Transcode",
    "deidentify": "dicomflow.anonymize.stage:Deidentify",
}
SINKS = {
    "folder": "dicomflow.writers.part10:Part10Folder",
    "mediaset": "dicomflow.writers.mediaset:MediaSet",
    "parquet": "dicomflow.writers.parquet:ParquetDataset",
    "png": "dicomflow.writers.images:PngFolder",
    "nifti": "dicomflow.writers.images:NiftiFolder",
    "c-store": "dicomflow.network.scu:StoreSink",
    "stow-rs": "dicomflow.network.dicomweb:StowSink",
}


def _build(kind: str, table: Mapping[str, str], config: Mapping[str, Any]) -> Any:
    name = config.get("type")
    if name not in table:
        raise ConfigError(f"unknown {kind} type {name!r}; known: {', '.join(sorted(table))}")
    module, _, attr = table[name].partition(":")
    try:
        cls = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"{kind} type {name!r} is not available: {exc}") from exc
    options = {k: v for k, v in config.items() if k != "type"}
    if hasattr(cls, "from_config"):
        return cls.from_config(dict(config))
    try:
        return cls(**options)
    except TypeError as exc:
        raise ConfigError(f"{kind} {name!r}: {exc}") from exc


def build_stage(config: Mapping[str, Any]) -> Any:
    return _build("stage", STAGES, config)


def build_sink(config: Mapping[str, Any]) -> Any:
    return _build("sink", SINKS, config)
