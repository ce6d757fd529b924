"""Things to look at: a montage of a volume's slices, and the notebook views of volumes.

A montage reads only the slices it shows (the volume is lazy): ``n`` slices evenly spaced
from first to last, each windowed as :func:`~dicomflow.pixels.display_frame` does, shrunk
to at most ``tile`` pixels a side by striding (no interpolation: the values stay the stored
ones), and laid out in a grid of ``columns``.
"""

from __future__ import annotations

import base64
import html
import math
from typing import TYPE_CHECKING, Any

import numpy as np

from ._preview import preview_image

if TYPE_CHECKING:
    from ._volume import Volume

__all__ = ["montage", "png_data_uri", "volume_html"]


def montage(
    volume: Volume,
    n: int = 16,
    *,
    columns: int | None = None,
    window: Any = None,
    tile: int = 256,
    time: int = 0,
) -> np.ndarray:
    """``n`` slices of ``volume`` side by side: one ``uint8`` image (grey, or RGB for colour).

    Parameters
    ----------
    volume : Volume
        The volume (a 4-D one at time point ``time``).
    n : int
        Slices shown, evenly spaced from the first to the last (fewer if it has fewer).
    columns : int, optional
        Tiles per row (default: about square).
    window : (center, width) or str, optional
        Window for every tile, or a preset (:data:`PRESETS`); default: each slice's own.
    tile : int
        Largest side of one tile in pixels; larger slices are strided down.
    """
    depth = volume.shape[1] if volume.is_4d else volume.shape[0]
    count = max(1, min(int(n), depth))
    indices = sorted({round(i * (depth - 1) / max(count - 1, 1)) for i in range(count)})
    tiles = []
    for k in indices:
        image = preview_image(volume, index=k, time=time, window=window)
        step = max(1, math.ceil(max(image.shape[:2]) / tile))
        tiles.append(image[::step, ::step])
    cols = columns or math.ceil(math.sqrt(len(tiles)))
    rows = math.ceil(len(tiles) / cols)
    height = max(t.shape[0] for t in tiles)
    width = max(t.shape[1] for t in tiles)
    colour = any(t.ndim == 3 for t in tiles)
    shape = (rows * height, cols * width) + ((3,) if colour else ())
    out = np.zeros(shape, np.uint8)
    for i, t in enumerate(tiles):
        if colour and t.ndim == 2:
            t = np.repeat(t[..., None], 3, axis=2)
        r, c = divmod(i, cols)
        out[r * height : r * height + t.shape[0], c * width : c * width + t.shape[1]] = t
    return out


def png_data_uri(image: np.ndarray) -> str:
    """An image as a ``data:image/png;base64,...`` URI, for HTML."""
    from ..codecs import encode_png

    return "data:image/png;base64," + base64.b64encode(encode_png(image)).decode("ascii")


def volume_html(volume: Volume, *, n: int = 8, tile: int = 128) -> str:
    """The notebook view of a volume: what it is, its geometry and warnings, a small montage."""
    info = volume.info
    rows = [
        ("series", f"{info.get('SeriesNumber', '')} {info.get('SeriesDescription', '')}".strip()),
        ("modality", info.get("Modality", "")),
        ("shape", " x ".join(str(s) for s in volume.shape)),
        ("dtype", str(volume.array.dtype)),
    ]
    if volume.spacing is not None:
        rows.append(("spacing (mm)", " x ".join(f"{s:.4g}" for s in volume.spacing)))
    if volume.origin is not None:
        rows.append(("origin (LPS mm)", ", ".join(f"{v:.1f}" for v in volume.origin)))
    cells = "".join(
        f"<tr><th style='text-align:left'>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"
        for k, v in rows
        if v
    )
    warnings = "".join(f"<li>{html.escape(w)}</li>" for w in volume.warnings)
    if warnings:
        cells += f"<tr><th style='text-align:left'>warnings</th><td><ul>{warnings}</ul></td></tr>"
    try:
        picture = f"<img src='{png_data_uri(montage(volume, n, tile=tile))}'/>"
    except Exception as exc:  # noqa: BLE001 - the table still shows what the volume is
        picture = f"<p>no preview: {html.escape(f'{type(exc).__name__}: {exc}')}</p>"
    return f"<div><b>dicomflow Volume</b><table>{cells}</table>{picture}</div>"
