"""The one exception the de-identification engine raises on purpose."""

from __future__ import annotations

from ..errors import DicomflowError

__all__ = ["DeidentificationError"]


class DeidentificationError(DicomflowError, ValueError):
    """An instance that cannot be de-identified with certainty.

    De-identification fails closed: burned-in annotation without the Clean Pixel Data Option,
    a sequence that cannot be parsed, a value-representation-unknown (UN) sequence that would
    have to be kept, and similar cases raise this error with the reason instead of writing an
    instance that might still identify someone.
    """
