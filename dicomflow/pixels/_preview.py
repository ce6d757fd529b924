"""PNG previews of volumes with windowing.

The window comes from, in order: the ``window`` argument (``(center, width)`` or a preset
name), the slice's Window Center/Width, else the 0.5-99.5 percentiles of the slice. Stored
values go through the Modality LUT (slope/intercept) first, since windows are in its units.
Windowing follows the linear VOI function of PS3.3 C.11.2.1.2.
"""

from __future__ import annotations

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


def apply_window(values: np.ndarray, center: float, width: float) -> np.ndarray:
    """Map values to 0..255 with the DICOM linear window (PS3.3 C.11.2.1.2.1)."""
    values = np.asarray(values, dtype=np.float64)
    width = max(float(width), 1.0)
    low = center - 0.5 - (width - 1) / 2
    high = center - 0.5 + (width - 1) / 2
    scaled = ((values - (center - 0.5)) / max(width - 1, 1e-9) + 0.5) * 255.0
    out = np.where(values <= low, 0.0, np.where(values > high, 255.0, scaled))
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _resolve_window(window, plane, values: np.ndarray) -> tuple[float, float]:
    if isinstance(window, str):
        try:
            return PRESETS[window]
        except KeyError:
            raise ValueError(
                f"unknown window preset {window!r}; presets: {', '.join(PRESETS)}"
            ) from None
    if window is not None:
        return float(window[0]), float(window[1])
    center, width = plane.window if plane is not None else (None, None)
    if center is not None and width is not None and width > 0:
        return float(center), float(width)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return 0.0, 1.0
    low, high = np.percentile(finite, [0.5, 99.5])
    return float((low + high) / 2), float(max(high - low, 1.0))


def display_frame(raw: np.ndarray, plane=None, window=None) -> np.ndarray:
    """One decoded frame as display values: ``uint8`` grey ``(rows, columns)`` or RGB.

    Grey frames go through the plane's Modality LUT (slope/intercept), then the window (see
    the module docstring), and MONOCHROME1 is inverted so that higher is brighter. Colour
    frames are already display values: 8-bit samples are kept, wider ones scaled to 0..255
    by the frame's maximum.

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
        if raw.dtype != np.uint8:
            top = float(raw.max()) or 1.0
            raw = np.clip(raw / top * 255.0, 0, 255).astype(np.uint8)
        return np.ascontiguousarray(raw)  # a planar decode is a strided view: PNG wants C order
    values = raw.astype(np.float64)
    if plane is not None and raw.dtype.kind in "iu":  # stored values: apply the Modality LUT
        values = values * plane.slope + plane.intercept
    center, width = _resolve_window(window, plane, values)
    image = apply_window(values, center, width)
    photometric = "" if plane is None else str(plane.row.get("PhotometricInterpretation") or "")
    if photometric.upper() == "MONOCHROME1":
        image = 255 - image
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
