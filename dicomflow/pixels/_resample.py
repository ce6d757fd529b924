"""Resampling a tilted or irregularly spaced stack onto a regular orthogonal grid (lazy).

Slices of one stack are parallel planes. A slice whose position is offset within its own plane
(a gantry tilt shears the stack) is first shifted in-plane so that all slices line up along the
normal; output slices at regular distances along the normal are then interpolated linearly
between the two input slices around them. Rows and columns are added so that no shifted pixel
falls outside; pixels no input reaches take the smallest value of the slice they come from.
"""

from __future__ import annotations

from dataclasses import replace
from math import ceil, floor

import dask
import dask.array as da
import numpy as np

from ..errors import ConfigError
from ._geometry import Grid, normal_of

__all__ = ["resample_volume", "shift_image"]


def _shift_axis(img: np.ndarray, offset: float, size: int, axis: int, fill: float) -> np.ndarray:
    n = img.shape[axis]
    pad = [(0, 0), (0, 0)]
    pad[axis] = (1, 1)
    padded = np.pad(img, pad, constant_values=fill)
    x = np.arange(size) - offset  # source coordinate of each output index
    i0 = np.floor(x)
    frac = (x - i0).astype(np.float32)
    lo = np.clip(i0 + 1, 0, n + 1).astype(np.intp)  # +1: the padding
    hi = np.clip(i0 + 2, 0, n + 1).astype(np.intp)
    shape = [1, 1]
    shape[axis] = size
    frac = frac.reshape(shape)
    return np.take(padded, lo, axis=axis) * (1 - frac) + np.take(padded, hi, axis=axis) * frac


def shift_image(img: np.ndarray, rows: float, columns: float, shape: tuple[int, int]) -> np.ndarray:
    """Place ``img`` on a ``shape`` canvas with its first pixel at ``(rows, columns)``.

    Offsets may be fractional (linear interpolation); pixels the image does not reach take
    ``img.min()``.

    Examples
    --------
    >>> shift_image(np.array([[2.0, 4.0]]), 0, 0.5, (1, 2)).tolist()
    [[2.0, 3.0]]
    """
    img = np.asarray(img, dtype=np.float32)
    fill = float(img.min()) if img.size else 0.0
    out = _shift_axis(img, rows, shape[0], 0, fill)
    return _shift_axis(out, columns, shape[1], 1, fill)


def _blend(a, b, weight: float, shift_a, shift_b, shape, dtype) -> np.ndarray:
    out = shift_image(a, shift_a[0], shift_a[1], shape)
    if weight:
        out = (1 - weight) * out + weight * shift_image(b, shift_b[0], shift_b[1], shape)
    if np.dtype(dtype).kind in "iu":
        info = np.iinfo(dtype)
        out = np.clip(np.rint(out), info.min, info.max)
    return out.astype(dtype)


def resample_volume(volume, spacing: float | None = None):
    """See :meth:`dicomflow.Volume.resampled`."""
    grid = volume.grid
    if grid is None:
        raise ConfigError("a volume without geometry cannot be resampled")
    if volume.is_4d or volume.array.ndim != 3:
        raise ConfigError("resampling supports 3-D single-sample volumes")
    positions = np.array([p.position for p in volume.planes], float)
    x_dir, y_dir = grid.row_direction, grid.column_direction
    normal = normal_of([*x_dir, *y_dir])
    dr, dc = grid.pixel_spacing
    rel = positions - positions[0]
    dist = rel @ normal
    shift_rows = rel @ y_dir / dr
    shift_cols = rel @ x_dir / dc
    order = np.argsort(dist, kind="stable")
    dist, shift_rows, shift_cols = dist[order], shift_rows[order], shift_cols[order]
    keep = np.concatenate([[True], np.diff(dist) > 1e-3])  # drop duplicate positions
    dist, shift_rows, shift_cols, order = (
        dist[keep],
        shift_rows[keep],
        shift_cols[keep],
        order[keep],
    )
    if len(dist) < 2:
        raise ConfigError("resampling needs at least two slice positions")
    gaps = np.diff(dist)
    step = float(spacing) if spacing else float(np.median(gaps))
    count = int(floor((dist[-1] - dist[0]) / step + 1e-6)) + 1
    row0, col0 = float(shift_rows.min()), float(shift_cols.min())
    rows = grid.shape[1] + int(ceil(shift_rows.max() - row0 - 1e-6))
    cols = grid.shape[2] + int(ceil(shift_cols.max() - col0 - 1e-6))
    dtype = volume.array.dtype
    slices = []
    for m in range(count):
        z = dist[0] + m * step
        k = int(np.clip(np.searchsorted(dist, z, side="right") - 1, 0, len(dist) - 2))
        weight = float(np.clip((z - dist[k]) / (dist[k + 1] - dist[k]), 0.0, 1.0))
        a = volume.array[int(order[k])]
        b = volume.array[int(order[k + 1])]
        shift_a = (shift_rows[k] - row0, shift_cols[k] - col0)
        shift_b = (shift_rows[k + 1] - row0, shift_cols[k + 1] - col0)
        task = dask.delayed(_blend, pure=True)(a, b, weight, shift_a, shift_b, (rows, cols), dtype)
        slices.append(da.from_delayed(task, (rows, cols), dtype=dtype))
    array = da.stack(slices)
    origin = positions[0] + row0 * dr * y_dir + col0 * dc * x_dir + dist[0] * normal
    new_grid = Grid(
        origin=origin,
        row_direction=x_dir,
        column_direction=y_dir,
        slice_step=normal * step,
        pixel_spacing=grid.pixel_spacing,
        shape=(count, rows, cols),
    )
    note = (
        f"resampled to {count} slices every {step:.4g} mm along the normal "
        f"({rows} x {cols} pixels) from {len(volume.planes)} acquired slices"
    )
    info = {
        **volume.info,
        "resampled": True,
        "slices": count,
        "tilt_degrees_acquired": volume.info.get("tilt_degrees"),
        "tilt_degrees": 0.0,
        "irregular_spacing": False,
        "max_spacing_deviation": 0.0,
    }
    return replace(
        volume,
        array=array,
        grid=new_grid,
        warnings=(*volume.warnings, note),
        info=info,
        stacked=False,
    )
