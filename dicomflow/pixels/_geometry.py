"""Stack geometry: slice order along the normal, spacing, tilt, and the voxel-to-patient affine.

Conventions (DICOM PS3.3 C.7.6.2): patient coordinates are LPS millimetres. Image Orientation
(Patient) holds the direction of increasing column index (``row_direction``, along a row) then
the direction of increasing row index (``column_direction``); Pixel Spacing is (row spacing,
column spacing). A volume array is indexed ``[slice, row, column]`` and its affine maps the index
vector ``(column, row, slice, 1)`` to LPS. NIfTI wants RAS and, as dcm2niix writes it, rows
flipped so that the y axis points up: :meth:`Grid.nifti_affine` gives that.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ._errors import GeometryError

__all__ = ["Grid", "StackReport", "analyse_stack", "normal_of", "orientation_key"]

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    if not np.isfinite(n) or n < 1e-6:
        raise GeometryError(f"degenerate direction {v.tolist()}")
    return v / n


def normal_of(orientation) -> np.ndarray:
    """Unit slice normal (row direction x column direction) of an Image Orientation value."""
    iop = np.asarray(orientation, dtype=float)
    if iop.shape != (6,) or not np.all(np.isfinite(iop)):
        raise GeometryError(f"Image Orientation (Patient) {orientation!r} is not 6 numbers")
    row, col = _unit(iop[:3]), _unit(iop[3:])
    if abs(float(row @ col)) > 1e-3:
        raise GeometryError(f"Image Orientation (Patient) {orientation!r} is not orthogonal")
    return _unit(np.cross(row, col))


def orientation_key(orientation, decimals: int = 3) -> tuple[float, ...] | None:
    """A hashable, rounded orientation for grouping slices into stacks (None when absent)."""
    if orientation is None:
        return None
    iop = np.asarray(orientation, dtype=float)
    if iop.shape != (6,) or not np.all(np.isfinite(iop)):
        return None
    return tuple(float(x) + 0.0 for x in np.round(iop, decimals))


@dataclass(frozen=True)
class Grid:
    """A regular voxel grid in patient space.

    Parameters
    ----------
    origin : (3,) array
        LPS position of voxel ``[0, 0, 0]``: first slice, first row, first column.
    row_direction, column_direction : (3,) arrays
        Unit vectors of increasing column index and increasing row index.
    slice_step : (3,) array
        Vector from one slice to the next; not orthogonal to the plane when the gantry is tilted.
    pixel_spacing : (2,) tuple
        (row spacing, column spacing) in mm.
    shape : tuple
        ``(slices, rows, columns)``.
    """

    origin: np.ndarray
    row_direction: np.ndarray
    column_direction: np.ndarray
    slice_step: np.ndarray
    pixel_spacing: tuple[float, float]
    shape: tuple[int, int, int]

    @property
    def affine(self) -> np.ndarray:
        """4x4 LPS affine of ``(column, row, slice, 1)``."""
        a = np.eye(4)
        a[:3, 0] = self.row_direction * self.pixel_spacing[1]
        a[:3, 1] = self.column_direction * self.pixel_spacing[0]
        a[:3, 2] = self.slice_step
        a[:3, 3] = self.origin
        return a

    @property
    def spacing(self) -> tuple[float, float, float]:
        """(slice, row, column) spacing in mm, in array axis order."""
        return (
            float(np.linalg.norm(self.slice_step)),
            float(self.pixel_spacing[0]),
            float(self.pixel_spacing[1]),
        )

    @property
    def direction(self) -> np.ndarray:
        """3x3 matrix whose columns are the column, row and slice axis directions (LPS)."""
        step = self.slice_step
        n = np.linalg.norm(step)
        return np.column_stack([self.row_direction, self.column_direction, step / n if n else step])

    def nifti_affine(self) -> np.ndarray:
        """RAS affine for NIfTI data laid out as ``[column, rows - 1 - row, slice]``."""
        flip = np.eye(4)
        flip[1, 1] = -1.0
        flip[1, 3] = self.shape[1] - 1
        return LPS_TO_RAS @ self.affine @ flip


@dataclass(frozen=True)
class StackReport:
    """What the positions of one stack say about its geometry.

    ``order`` sorts the input slices along the normal; distances are along the normal.
    ``gaps`` holds ``(after, from_mm, to_mm, missing)`` for each gap of a whole multiple of the
    spacing: the index (in sorted order) of the slice before it, the distances along the normal
    on either side, and how many slices it lacks. ``expected`` is how many slices the extent
    holds at the spacing (``extent / spacing + 1``).
    """

    order: np.ndarray
    distances: np.ndarray
    spacing: float
    step: np.ndarray
    tilt_degrees: float
    duplicates: int
    missing: int
    irregular: bool
    max_spacing_deviation: float
    warnings: tuple[str, ...] = field(default=())
    gaps: tuple[tuple[int, float, float, int], ...] = field(default=())
    expected: int = 1


def analyse_stack(
    positions: np.ndarray,
    orientation,
    *,
    spacing_tolerance: float = 0.01,
    position_tolerance: float = 1e-3,
) -> StackReport:
    """Sort slices along the normal and report spacing, duplicates, gaps and gantry tilt.

    Parameters
    ----------
    positions : (n, 3) array
        Image Position (Patient) of each slice (distinct positions only).
    orientation : sequence of 6 floats
        The shared Image Orientation (Patient).
    spacing_tolerance : float
        Relative spacing deviation above which the stack is irregular (1%).
    position_tolerance : float
        Distance (mm) under which two slices are at the same position.

    Raises
    ------
    GeometryError
        Positions that are not finite numbers, or an orientation that is not a valid frame.
    """
    pos = np.asarray(positions, dtype=float).reshape(-1, 3)
    if not np.all(np.isfinite(pos)):
        raise GeometryError("Image Position (Patient) is missing or not numeric")
    normal = normal_of(orientation)
    d = pos @ normal
    order = np.argsort(d, kind="stable")
    d_sorted = d[order]
    warnings: list[str] = []
    n = len(pos)
    if n == 1:
        return StackReport(order, d_sorted, 0.0, np.zeros(3), 0.0, 0, 0, False, 0.0, ())
    gaps = np.diff(d_sorted)
    duplicates = int(np.sum(gaps < position_tolerance))
    if duplicates:
        warnings.append(f"{duplicates} duplicate slice position(s)")
    distinct = gaps >= position_tolerance
    real = gaps[distinct]
    if len(real) == 0:
        raise GeometryError("all slices are at the same position")
    spacing = float(np.median(real))
    deviation = float(np.max(np.abs(real - spacing)))
    irregular = deviation > spacing_tolerance * spacing
    ratios = gaps / spacing
    whole = np.round(ratios)
    gap = distinct & (whole >= 2) & (np.abs(ratios - whole) < 0.1)  # a multiple: lost slices
    missing = int(np.sum(whole[gap] - 1))
    holes = tuple(
        (int(k), float(d_sorted[k]), float(d_sorted[k + 1]), int(whole[k] - 1))
        for k in np.flatnonzero(gap)
    )
    extent = float(d_sorted[-1] - d_sorted[0])
    expected = int(round(extent / spacing)) + 1
    if missing:
        warnings.append(f"{missing} missing slice(s) (gaps of a multiple of {spacing:.4g} mm)")
    if irregular:
        warnings.append(
            f"irregular slice spacing: {real.min():.4g}..{real.max():.4g} mm "
            f"(median {spacing:.4g} mm)"
        )
    first, last = pos[order[0]], pos[order[-1]]
    total = d_sorted[-1] - d_sorted[0]
    # the stacking direction (sheared when tilted), scaled so one step is one typical spacing
    step = (last - first) / total * spacing
    offset = (last - first) - total * normal  # in-plane drift of the stack
    tilt = float(np.degrees(np.arctan2(np.linalg.norm(offset), total))) if total else 0.0
    if tilt > 0.01:
        warnings.append(f"gantry tilt / sheared stack: {tilt:.3g} degrees")
    return StackReport(
        order=order,
        distances=d_sorted,
        spacing=spacing,
        step=step,
        tilt_degrees=tilt,
        duplicates=duplicates,
        missing=missing,
        irregular=bool(irregular),
        max_spacing_deviation=deviation,
        warnings=tuple(warnings),
        gaps=holes,
        expected=expected,
    )
