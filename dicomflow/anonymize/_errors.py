"""The de-identification engine's exception; defined in :mod:`dicomflow.errors`."""

from __future__ import annotations

from ..errors import DeidentificationError

__all__ = ["DeidentificationError"]
