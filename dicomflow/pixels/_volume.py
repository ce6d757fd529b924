"""The ``Volume``: a lazy array with its geometry and provenance; ``Volumes`` and the report."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import dask.array as da
import numpy as np
import pyarrow as pa

from ..errors import ConfigError
from ._errors import GeometryError
from ._frames import PixelOptions
from ._geometry import Grid
from ._slices import Plane

__all__ = ["Volume", "Volumes"]


@dataclass(frozen=True, eq=False)
class Volume:
    """A series (or part of one) as a lazy array with its geometry and provenance.

    Attributes
    ----------
    array : dask.array.Array
        ``(slices, rows, columns)``, or ``(time, slices, rows, columns)`` for repeated stacks;
        a trailing samples axis for colour. Nothing is read until computed.
    grid : Grid or None
        Origin, directions, spacing and shape; None when the planes carry no geometry.
    planes : tuple of Plane
        The source planes in array order (time-major); one per time point for mosaics.
    warnings : tuple of str
        Geometry findings: missing or duplicate slices, irregular spacing, tilt, dropped images.
    info : dict
        Report fields (see :attr:`Volumes.report`) and sidecar metadata.
    stacked : bool
        ``array`` is the planes' frames, in order, unchanged (not resampled, not mosaics).
    """

    array: da.Array
    grid: Grid | None
    planes: tuple[Plane, ...]
    warnings: tuple[str, ...] = ()
    info: Mapping[str, Any] = field(default_factory=dict)
    storage_options: Mapping[str, Any] | None = None
    options: PixelOptions = PixelOptions()
    #: whether ``array`` is exactly the planes' frames in order (time-major), as decoded with
    #: ``options``: writers may then read frames themselves (no dask graph), as NIfTI does
    stacked: bool = False

    # -- geometry ----------------------------------------------------------------------------
    @property
    def affine(self) -> np.ndarray:
        """4x4 LPS affine mapping ``(column, row, slice, 1)`` to patient millimetres."""
        if self.grid is None:
            raise GeometryError("this volume has no patient geometry (no position/orientation)")
        return self.grid.affine

    @property
    def nifti_affine(self) -> np.ndarray:
        """4x4 RAS affine of the NIfTI layout (x = column, y = flipped row, z = slice)."""
        if self.grid is None:
            raise GeometryError("this volume has no patient geometry (no position/orientation)")
        return self.grid.nifti_affine()

    @property
    def spacing(self) -> tuple[float, float, float] | None:
        """(slice, row, column) spacing in mm."""
        return None if self.grid is None else self.grid.spacing

    @property
    def origin(self) -> np.ndarray | None:
        """LPS position of voxel [0, 0, 0]."""
        return None if self.grid is None else self.grid.origin

    @property
    def direction(self) -> np.ndarray | None:
        """3x3 direction cosines (columns: column, row, slice axes), LPS."""
        return None if self.grid is None else self.grid.direction

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape)

    @property
    def dtype(self) -> np.dtype:
        return self.array.dtype

    @property
    def is_4d(self) -> bool:
        samples = 1 if self.planes[0].ref.fmt.samples_per_pixel == 1 else 2
        return self.array.ndim - samples == 3

    @property
    def sop_instance_uids(self) -> list[str | None]:
        """Source SOP Instance UID of every slice, in array order (time-major)."""
        out = []
        for plane in self.planes:
            n = plane.mosaic.count if plane.mosaic else 1
            out.extend([plane.sop_instance_uid] * n)
        return out

    @property
    def rescale(self) -> tuple[float, float] | None:
        """(slope, intercept) shared by every plane, or None when they differ."""
        pairs = {(p.slope, p.intercept) for p in self.planes}
        return pairs.pop() if len(pairs) == 1 else None

    # -- conversions -------------------------------------------------------------------------
    def to_nifti(self, path, *, sidecar: bool = True, **kwargs):
        """Write NIfTI-1 (``.nii`` or ``.nii.gz``) and a BIDS-style JSON sidecar."""
        from ._nifti import write_nifti

        return write_nifti(self, path, sidecar=sidecar, **kwargs)

    def to_zarr(self, path, **kwargs):
        """Write a Zarr v3 group (compressed, chunked along slices, OME-NGFF metadata)."""
        from ._zarr import write_zarr

        return write_zarr(self, path, **kwargs)

    def to_png(self, path, **kwargs):
        """Write a windowed PNG preview (middle slice by default)."""
        from ._preview import write_png

        return write_png(self, path, **kwargs)

    def montage(self, n: int = 16, **kwargs: Any) -> np.ndarray:
        """``n`` evenly spaced slices side by side as one ``uint8`` image (reads only those).

        Keyword arguments: ``columns``, ``window`` (a preset or ``(center, width)``), ``tile``
        (largest side of a tile), ``time`` (of a 4-D volume); see
        :func:`dicomflow.pixels.montage`.
        """
        from ._montage import montage

        return montage(self, n, **kwargs)

    def show(self, n: int = 16, **kwargs: Any) -> Any:
        """Display a montage (in a notebook; elsewhere it is returned as an IPython image).

        Takes the arguments of :meth:`montage`.
        """
        try:
            from IPython.display import Image, display
        except ImportError:
            raise ConfigError(
                "show() displays in a notebook (IPython); montage() gives the image as an array"
            ) from None

        from ..codecs import encode_png

        picture = Image(data=encode_png(self.montage(n, **kwargs)), format="png")
        display(picture)
        return picture

    def _repr_html_(self) -> str:
        from ._montage import volume_html

        return volume_html(self)

    def to_xarray(self):
        """An ``xarray.DataArray`` (lazy) with patient coordinates in mm (LPS).

        Dimensions are ``("t",) "z", "y", "x" (, "c")`` (slice, row, column). When each axis
        runs along one patient axis (axial, coronal, sagittal acquisitions), the dimension
        coordinates are patient positions: ``x``, ``y`` and ``z`` hold the L, P or S coordinate
        of each column, row and slice (``coords[d].attrs["patient_axis"]`` says which), so
        ``arr.sel(z=-120.5, method="nearest")`` picks the slice at S = -120.5 mm. For oblique
        or tilted stacks the dimension coordinates are distances from the first voxel along
        each axis, and three extra (lazy) coordinates ``L``, ``P``, ``S`` give every voxel's
        patient position. The LPS affine, origin and direction are in ``attrs``.
        """
        import xarray as xr

        dims: list[str] = ["z", "y", "x"]
        if self.is_4d:
            dims.insert(0, "t")
        if self.array.ndim > len(dims):
            dims.append("c")
        axis = dims.index("z")
        shape = self.array.shape[axis : axis + 3]
        coords: dict[str, Any] = {}
        if self.grid is not None:
            coords.update(_patient_coords(self.grid.affine, shape))
        else:
            for name, n in zip(("z", "y", "x"), shape, strict=True):
                coords[name] = (name, np.arange(n, dtype=float), {"units": "voxel"})
        if self.is_4d:
            coords["t"] = ("t", np.arange(self.array.shape[0]))
        attrs: dict[str, Any] = {
            k: v for k, v in self.info.items() if isinstance(v, str | int | float)
        }
        if self.grid is not None:
            attrs["affine_lps"] = self.affine.tolist()
            attrs["origin_lps"] = self.grid.origin.tolist()
            attrs["direction_lps"] = self.grid.direction.tolist()
        attrs["warnings"] = list(self.warnings)
        return xr.DataArray(self.array, dims=dims, coords=coords, attrs=attrs, name="pixels")

    def resampled(self, spacing: float | None = None) -> Volume:
        """This volume on a regular grid orthogonal to its slices (tilt and spacing corrected).

        Each output slice is a linear interpolation of the two input slices around it, after
        shifting them in-plane so that the stack runs along the normal; rows are added so that no
        shifted pixel is lost (as dcm2niix's tilt correction does). Lazy like the input.
        """
        from ._resample import resample_volume

        return resample_volume(self, spacing)

    def __repr__(self) -> str:
        desc = self.info.get("SeriesDescription") or ""
        return (
            f"<Volume {self.info.get('Modality') or ''} {desc!r} shape={self.shape} "
            f"dtype={self.dtype} spacing={self.spacing} warnings={len(self.warnings)}>"
        )


class Volumes(Sequence[Volume]):
    """The volumes of a catalog, plus a geometry report table (one row per volume)."""

    def __init__(
        self,
        items: Sequence[Volume],
        skipped: Sequence[tuple[str, str]] = (),
        *,
        series: pa.Table | None = None,
    ):
        self._items = tuple(items)
        self.skipped = tuple(skipped)
        self._series = series

    def __getitem__(self, index):
        if isinstance(index, slice):
            return Volumes(self._items[index])
        return self._items[index]

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Volume]:
        return iter(self._items)

    def __repr__(self) -> str:
        return f"<Volumes: {len(self)} volume(s), {len(self.skipped)} row(s) skipped>"

    @property
    def report(self) -> pa.Table:
        """One row per volume: identity, shape, spacing, orientation and geometry warnings."""
        rows = [_report_row(i, v) for i, v in enumerate(self._items)]
        return pa.Table.from_pylist(rows, schema=_REPORT_SCHEMA)

    @property
    def series_report(self) -> pa.Table:
        """One row per series of the catalog: what was found, expected and decided.

        Columns (``dicomflow.pixels.SERIES_SCHEMA``): the series' identity; ``decision``
        (``volume``, ``volume-with-gaps``, ``volume-irregular``, ``volume-tilted``,
        ``resampled``, ``split by orientation``..., ``image``, ``no image``,
        ``refused: <reason>``) and ``actions`` (what was dropped or ignored on the way);
        ``instances`` and ``images`` read, the ``volumes`` made (``volume_index`` into this
        sequence and the rows of :attr:`report`), their ``shape`` (one volume) or ``shapes``;
        ``found_slices`` (distinct positions kept), ``expected_slices`` (the extent along
        the normal over the spacing, plus one), ``declared_slices`` (Images in Acquisition,
        where the catalog has it) and ``declared_frames`` (Number of Frames of multi-frame
        rows); ``missing_slices``, ``gap_count`` and ``gaps`` (after which slice, from and to
        which distance along the normal, how many missing); ``duplicate_instances``,
        ``duplicate_positions``, ``incomplete_repeats``; ``stacks``, ``orientations`` and
        ``mixed_orientations``; ``localizers_dropped``, ``refused_images``; ``tilt_degrees``
        (as acquired), ``irregular_spacing``, ``has_geometry`` and ``warnings``.
        """
        if self._series is None:
            from ._report import SERIES_SCHEMA

            return SERIES_SCHEMA.empty_table()
        return self._series

    def to_polars(self, per: str = "volume"):
        """The report as a polars DataFrame: ``per="volume"`` (:attr:`report`) or
        ``per="series"`` (:attr:`series_report`)."""
        import polars as pl

        if per not in ("volume", "series"):
            raise ConfigError(f"per={per!r}: expected 'volume' or 'series'")
        return pl.from_arrow(self.report if per == "volume" else self.series_report)


_REPORT_SCHEMA = pa.schema(
    [
        ("volume", pa.int32()),
        ("series_instance_uid", pa.string()),
        ("SeriesNumber", pa.float64()),
        ("SeriesDescription", pa.string()),
        ("Modality", pa.string()),
        ("shape", pa.list_(pa.int64())),
        ("dtype", pa.string()),
        ("timepoints", pa.int32()),
        ("slices", pa.int32()),
        ("spacing", pa.list_(pa.float64())),
        ("origin", pa.list_(pa.float64())),
        ("orientation", pa.list_(pa.float64())),
        ("tilt_degrees", pa.float64()),
        ("irregular_spacing", pa.bool_()),
        ("max_spacing_deviation", pa.float64()),
        ("missing_slices", pa.int32()),
        ("duplicate_slices", pa.int32()),
        ("dropped_images", pa.int32()),
        ("has_geometry", pa.bool_()),
        ("files", pa.int32()),
        ("first_uri", pa.string()),
        ("warnings", pa.list_(pa.string())),
    ]
)


def _report_row(i: int, v: Volume) -> dict:
    info = v.info
    return {
        "volume": i,
        "series_instance_uid": info.get("SeriesInstanceUID"),
        "SeriesNumber": info.get("SeriesNumber"),
        "SeriesDescription": info.get("SeriesDescription"),
        "Modality": info.get("Modality"),
        "shape": list(v.shape),
        "dtype": str(v.dtype),
        "timepoints": v.shape[0] if v.is_4d else 1,
        "slices": info.get("slices"),
        "spacing": list(v.spacing) if v.spacing else None,
        "origin": v.grid.origin.tolist() if v.grid is not None else None,
        "orientation": list(info.get("orientation") or []) or None,
        "tilt_degrees": info.get("tilt_degrees", 0.0),
        "irregular_spacing": info.get("irregular_spacing", False),
        "max_spacing_deviation": info.get("max_spacing_deviation", 0.0),
        "missing_slices": info.get("missing_slices", 0),
        "duplicate_slices": info.get("duplicate_slices", 0),
        "dropped_images": info.get("dropped_images", 0),
        "has_geometry": v.grid is not None,
        "files": len({p.ref.uri for p in v.planes}),
        "first_uri": v.planes[0].ref.uri,
        "warnings": list(v.warnings),
    }


_LPS = "LPS"


def _patient_coords(affine: np.ndarray, shape: tuple[int, ...]) -> dict[str, Any]:
    """xarray coordinates of a grid: patient positions where each axis follows one patient
    axis, else distances along the axes plus lazy per-voxel ``L``/``P``/``S`` coordinates."""
    steps = [affine[:3, k] for k in (2, 1, 0)]  # slice, row, column steps (LPS mm)
    origin = affine[:3, 3]
    names = ("z", "y", "x")
    along = []
    for step in steps:
        j = int(np.argmax(np.abs(step)))
        norm = float(np.linalg.norm(step)) or 1.0
        along.append(j if abs(step[j]) >= 0.999 * norm else -1)
    coords: dict[str, Any] = {}
    if -1 not in along and len(set(along)) == 3:
        for name, n, step, j in zip(names, shape, steps, along, strict=True):
            values = origin[j] + np.arange(n) * step[j]
            coords[name] = (name, values, {"units": "mm", "patient_axis": _LPS[j]})
        return coords
    import dask.array as da

    for name, n, step in zip(names, shape, steps, strict=True):
        distance = np.arange(n) * float(np.linalg.norm(step))
        coords[name] = (name, distance, {"units": "mm", "patient_axis": None})
    index = [da.arange(n, chunks=n).astype(float) for n in shape]
    grids = (index[0][:, None, None], index[1][None, :, None], index[2][None, None, :])
    for j, label in enumerate(_LPS):
        value = origin[j] + sum(g * s[j] for g, s in zip(grids, steps, strict=True))
        coords[label] = (names, value, {"units": "mm", "patient_axis": label})
    return coords
