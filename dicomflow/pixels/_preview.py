"""PNG previews of volumes with windowing.

The window comes from, in order: the ``window`` argument (``(center, width)`` or a preset
name), the slice's Window Center/Width, else the 0.5-99.5 percentiles of the slice. Stored
values go through the Modality LUT (slope/intercept) first, since windows are in its units.
Windowing follows the linear VOI function of PS3.3 C.11.2.1.2.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..codecs import encode_png
from ..dicom import atomic_path

if TYPE_CHECKING:
    from ._volume import Volume

__all__ = ["PRESETS", "apply_window", "display_frame", "preview_image", "write_png"]

#: Common CT windows (center, width) in Hounsfield units.
PRESETS: dict[str, tuple[float, float]] = {
    "brain": (40.0, 80.0),
    "subdural": (75.0, 215.0),
    "stroke": (40.0, 40.0),
    "soft-tissue": (50.0, 400.0),
    "mediastinum": (50.0, 350.0),
    "liver": (60.0, 160.0),
    "lung": (-600.0, 1500.0),
    "bone": (400.0, 1800.0),
}


#: integer frames whose values span at most this many levels are windowed through a lookup
#: table of their levels (every 8- and 16-bit frame); others strip by strip
_LUT_LEVELS = 1 << 20
#: elements per strip when a frame is converted piecewise: float64 temporaries of 16 MiB
_STRIP = 1 << 21
#: the percentiles an unwindowed slice is scaled between
_PERCENTILES = (0.5, 99.5)


def apply_window(values: np.ndarray, center: float, width: float) -> np.ndarray:
    """Map values to 0..255 with the DICOM linear window (PS3.3 C.11.2.1.2.1).

    Works strip by strip: the float64 temporaries stay a few MiB whatever the image size.
    """
    values = np.asarray(values)
    out = np.empty(values.shape, np.uint8)
    flat_in, flat_out = values.reshape(-1), out.reshape(-1)
    for start in range(0, flat_in.size, _STRIP):
        stop = start + _STRIP
        flat_out[start:stop] = _window(flat_in[start:stop], center, width)
    return out


def _window(values: np.ndarray, center: float, width: float) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    width = max(float(width), 1.0)
    low = center - 0.5 - (width - 1) / 2
    high = center - 0.5 + (width - 1) / 2
    scaled = ((values - (center - 0.5)) / max(width - 1, 1e-9) + 0.5) * 255.0
    out = np.where(values <= low, 0.0, np.where(values > high, 255.0, scaled))
    np.nan_to_num(out, copy=False, nan=0.0)  # not a number: black (a cast would be undefined)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _preset(window) -> tuple[float, float] | None:
    """An explicit window or preset; ``None``: the plane's own, or percentiles."""
    if isinstance(window, str):
        try:
            return PRESETS[window]
        except KeyError:
            raise ValueError(
                f"unknown window preset {window!r}; presets: {', '.join(PRESETS)}"
            ) from None
    if window is not None:
        return float(window[0]), float(window[1])
    return None


def _resolve_window(window, plane) -> tuple[float, float] | None:
    """The window to use (``None``: the frame's percentiles)."""
    chosen = _preset(window)
    if chosen is not None:
        return chosen
    center, width = plane.window if plane is not None else (None, None)
    if center is not None and width is not None and width > 0:
        return float(center), float(width)
    return None


def _lerp_window(kth: Callable[[int], float], n: int) -> tuple[float, float]:
    """Center and width between the percentiles of ``n`` values, ``kth(k)`` the k-th smallest
    (numpy's default, linear, method)."""
    if n == 0:
        return 0.0, 1.0
    found = []
    for q in _PERCENTILES:
        index = (n - 1) * q / 100.0
        below = int(np.floor(index))
        a, b = kth(below), kth(min(below + 1, n - 1))
        found.append(a + (b - a) * (index - below))
    low, high = found
    return float((low + high) / 2), float(max(high - low, 1.0))


def _levels(raw: np.ndarray, lo: int, count: int) -> np.ndarray:
    """How many pixels have each level ``lo .. lo + count - 1`` (strip by strip)."""
    counts = np.zeros(count, np.int64)
    flat = raw.reshape(-1)
    for start in range(0, flat.size, _STRIP):
        strip = flat[start : start + _STRIP].astype(np.int64) - lo
        counts += np.bincount(strip, minlength=count)
    return counts


def _through_table(raw: np.ndarray, table: np.ndarray, lo: int) -> np.ndarray:
    out = np.empty(raw.shape, np.uint8)
    flat_in, flat_out = raw.reshape(-1), out.reshape(-1)
    for start in range(0, flat_in.size, _STRIP):
        strip = flat_in[start : start + _STRIP].astype(np.int64) - lo
        np.take(table, strip, out=flat_out[start : start + _STRIP])
    return out


def _grey_by_levels(raw: np.ndarray, slope: float, intercept: float, rescale: bool, window):
    """Integer frames: the window applied to each level once, then looked up per pixel."""
    lo, hi = int(raw.min()), int(raw.max())
    levels = np.arange(lo, hi + 1, dtype=np.float64)
    if rescale:
        levels = levels * slope + intercept
    if window is None:
        counts = _levels(raw, lo, hi - lo + 1)
        order = np.argsort(levels, kind="stable")
        ranked, cumulative = levels[order], np.cumsum(counts[order])
        window = _lerp_window(
            lambda k: ranked[np.searchsorted(cumulative, k, side="right")],
            int(cumulative[-1]),
        )
    return _through_table(raw, apply_window(levels, *window), lo)


def _grey_by_strips(raw: np.ndarray, slope: float, intercept: float, rescale: bool, window):
    """Floating point frames and integers of a huge range: converted strip by strip."""
    if window is None:
        finite = raw[np.isfinite(raw)] if raw.dtype.kind == "f" else raw.reshape(-1).copy()
        n = finite.size
        positions: set[int] = set()
        for q in _PERCENTILES:
            below = int(np.floor((n - 1) * q / 100.0))
            for k in (below, min(below + 1, n - 1)):
                positions |= {k, n - 1 - k}
        if n:
            finite.partition(sorted(positions))

        def kth(k: int) -> float:
            value = float(finite[k])
            return value * slope + intercept if rescale else value

        if rescale and slope < 0:  # the order reverses
            window = _lerp_window(lambda k: kth(n - 1 - k), n)
        else:
            window = _lerp_window(kth, n)
        del finite
    out = np.empty(raw.shape, np.uint8)
    flat_in, flat_out = raw.reshape(-1), out.reshape(-1)
    for start in range(0, flat_in.size, _STRIP):
        values = flat_in[start : start + _STRIP].astype(np.float64)
        if rescale:
            values = values * slope + intercept
        flat_out[start : start + _STRIP] = _window(values, *window)
    return out


def _colour(raw: np.ndarray) -> np.ndarray:
    """Colour frames: 8-bit samples kept, wider ones scaled to 0..255 by the frame's maximum."""
    if raw.dtype == np.uint8:
        return np.ascontiguousarray(raw)  # a planar decode is a strided view: PNG wants C order
    top = float(raw.max()) or 1.0
    out = np.empty(raw.shape, np.uint8)
    rows = max(_STRIP // max(raw[0].size, 1), 1)  # whole rows per strip
    for row in range(0, raw.shape[0], rows):
        part = raw[row : row + rows]
        out[row : row + len(part)] = np.clip(part / top * 255.0, 0, 255).astype(np.uint8)
    return out


def display_frame(raw: np.ndarray, plane=None, window=None) -> np.ndarray:
    """One decoded frame as display values: ``uint8`` grey ``(rows, columns)`` or RGB.

    Grey frames go through the plane's Modality LUT (slope/intercept), then the window (see
    the module docstring), and MONOCHROME1 is inverted so that higher is brighter. Colour
    frames are already display values: 8-bit samples are kept, wider ones scaled to 0..255
    by the frame's maximum.

    Memory stays a small multiple of the decoded frame: an integer frame is windowed through
    a table of its levels (each level mapped once, exactly as a float64 conversion of every
    pixel would map it), anything else strip by strip; the output is one ``uint8`` per sample.

    Parameters
    ----------
    raw : ndarray
        The decoded frame, as :func:`dicomflow.frames` gives it (stored values).
    plane : Plane, optional
        Its image plane (slope, intercept, window, Photometric Interpretation).
    window : (center, width) or str, optional
        Explicit window, or a preset from :data:`PRESETS`.

    Examples
    --------
    >>> display_frame(np.array([[0, 40], [80, 1000]]), window=(40, 80)).tolist()
    [[0, 129], [255, 255]]
    """
    raw = np.asarray(raw)
    if raw.ndim == 3:  # colour: already display values
        return _colour(raw)
    rescale = plane is not None and raw.dtype.kind in "iu"  # stored values: the Modality LUT
    slope = float(plane.slope) if rescale else 1.0
    intercept = float(plane.intercept) if rescale else 0.0
    chosen = _resolve_window(window, plane)
    if raw.size == 0:
        image = np.zeros(raw.shape, np.uint8)
    elif raw.dtype.kind in "iub" and int(raw.max()) - int(raw.min()) < _LUT_LEVELS:
        image = _grey_by_levels(raw, slope, intercept, rescale, chosen)
    else:
        image = _grey_by_strips(raw, slope, intercept, rescale, chosen)
    photometric = "" if plane is None else str(plane.row.get("PhotometricInterpretation") or "")
    if photometric.upper() == "MONOCHROME1":
        np.subtract(255, image, out=image)
    return np.ascontiguousarray(image)


def preview_image(
    volume: Volume, *, index: int | None = None, time: int = 0, window=None
) -> np.ndarray:
    """One windowed slice as ``uint8`` (grey ``(rows, columns)`` or RGB ``(..., 3)``)."""
    array = volume.array[time] if volume.is_4d else volume.array
    k = array.shape[0] // 2 if index is None else int(index)
    raw = np.asarray(array[k].compute())
    plane_index = (time * array.shape[0] + k) if volume.is_4d else k
    plane = volume.planes[min(plane_index, len(volume.planes) - 1)]
    return display_frame(raw, plane, window)


def write_png(
    volume: Volume, path, *, index: int | None = None, time: int = 0, window=None
) -> Path:
    """Write one windowed slice (the middle one by default) as PNG.

    Parameters
    ----------
    volume : Volume
        The volume.
    path : str or Path
        Output ``.png`` file.
    index : int, optional
        Slice index (default: middle slice).
    time : int
        Time point of a 4-D volume.
    window : (center, width) or str, optional
        Explicit window, or a preset from :data:`PRESETS` (e.g. ``"lung"``).

    Examples
    --------
    >>> vol.to_png("preview.png", window="brain")   # doctest: +SKIP
    """
    path = Path(path)
    image = preview_image(volume, index=index, time=time, window=window)
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(encode_png(image))
    return path
