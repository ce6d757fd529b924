"""PNG files of display images (not a transfer syntax: the image writers' one file codec)."""

from __future__ import annotations

import numpy as np

__all__ = ["encode_png"]


def encode_png(image: np.ndarray) -> bytes:
    """A PNG file of an 8- or 16-bit grey, RGB or RGBA image (imagecodecs, its default level)."""
    import imagecodecs

    return bytes(imagecodecs.png_encode(image))
