"""Pipeline sinks that write every instance's pixels as images: PNG previews or NIfTI files.

Both decode the instance through dicomflow's own frame decoding (:mod:`dicomflow.pixels`), so
what they write equals pydicom's ``pixel_array`` and a frame that cannot be decoded raises a
:class:`~dicomflow.FrameDecodeError` naming the file and the frame: the pipeline records that
instance as ``failed`` with that reason and goes on with the others.

Which pixels: an instance no stage has opened is decoded straight from its source, reading only
the bytes of the frames written (its catalog row locates them). An instance a stage has parsed
(de-identified, transcoded, changed by a ``map``) is decoded from its dataset as the stages left
it, so burned-in text a de-identification blanked stays blanked and paths use the new values.
Instances without pixel data (reports, structured documents) are skipped, not failed.

Paths come from a template of ``{Keyword}`` fields, every component sanitized as for
:class:`~dicomflow.writers.Part10Folder`; each file is written atomically (temporary name, then
renamed) and never silently overwritten.
"""

from __future__ import annotations

import copy
import json
import re
import string
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from pydicom import Dataset

from ..codecs import DEFAULT_MAX_FRAME_BYTES
from ..dicom import atomic_write, encode_part10, join, remove_stale_temporaries
from ..errors import ConfigError
from ..pipeline import Instance, Output, RunContext, Skip
from ._part10 import render_path

__all__ = [
    "DEFAULT_NIFTI_TEMPLATE",
    "DEFAULT_PNG_TEMPLATE",
    "NiftiFolder",
    "PngFolder",
    "instance_pixels",
]

_BASE = "{PatientID}/{StudyInstanceUID}/{SeriesInstanceUID}/{SOPInstanceUID}"
DEFAULT_PNG_TEMPLATE = _BASE + ".png"
DEFAULT_NIFTI_TEMPLATE = _BASE + ".nii.gz"
#: catalog columns the pixel layer reads; a row without them is scanned again
_PIXEL_COLUMNS = (
    "transfer_syntax_uid", "pixel_offset", "pixel_length", "Rows", "Columns", "SamplesPerPixel",
    "PhotometricInterpretation", "BitsAllocated", "BitsStored", "PixelRepresentation",
)  # fmt: skip
_STAGED_NOTE = "pixel data as the pipeline's stages left it"


class _Fields:
    """Template values: the dataset's attributes, plus the sink's own fields (``{frame}``)."""

    def __init__(self, ds: Dataset, extra: Mapping[str, str]) -> None:
        self.ds, self.extra = ds, extra

    def get(self, key: str) -> Any:
        return self.extra[key] if key in self.extra else self.ds.get(key)


def _check_template(template: str, suffixes: Sequence[str], own: Sequence[str]) -> None:
    names = [n for _, n, _, _ in string.Formatter().parse(template) if n]
    if not [n for n in names if n not in own]:
        raise ConfigError(
            f"path template {template!r} has no {{Keyword}} fields: every instance would collide"
        )
    if not template.lower().endswith(tuple(suffixes)):
        raise ConfigError(f"path template {template!r} must end with {' or '.join(suffixes)}")


def _with_field(template: str, name: str, suffixes: Sequence[str]) -> str:
    """The template with ``_{name}`` before its file extension, unless it has that field."""
    if "{" + name + "}" in template:
        return template
    for suffix in suffixes:
        if template.lower().endswith(suffix):
            cut = len(template) - len(suffix)
            return f"{template[:cut]}_{{{name}}}{template[cut:]}"
    return f"{template}_{{{name}}}"


def _scan_one(uri: str, storage_options: Mapping[str, Any] | None) -> dict[str, Any]:
    from ..catalog import scan
    from ..pixels import PixelDataError

    rows = scan(uri, storage_options=dict(storage_options or {}) or None, workers=1)
    row = rows.to_arrow().to_pylist()[0]
    if row.get("error"):
        raise PixelDataError(f"{uri}: {row['error']}")
    return row


@contextmanager
def instance_pixels(instance: Instance) -> Iterator[tuple[dict[str, Any], Mapping[str, Any]]]:
    """A catalog row (and storage options) from which :mod:`dicomflow.pixels` decodes the instance.

    An instance no stage has parsed is decoded from its source through its own catalog row
    (rescanned when the catalog lacks the pixel columns). One whose dataset a stage has parsed
    is encoded as it is now into an in-memory object that is scanned and decoded instead;
    errors raised inside the block then name the instance's source, not that object.

    Examples
    --------
    >>> with instance_pixels(instance) as (row, options):      # doctest: +SKIP
    ...     first = dfl.frames(row, storage_options=options)[0].compute()
    """
    from ..pixels import FrameDecodeError, PixelDataError

    if not instance.parsed:  # no stage opened it: the source's bytes are its pixels
        row = dict(instance.row)
        if not row.get("uri") or any(k not in row for k in _PIXEL_COLUMNS):
            row = _scan_one(instance.uri, instance.storage_options)
        yield row, instance.storage_options
        return
    import fsspec

    data = encode_part10(copy.copy(instance.dataset))  # a copy: the stages' dataset is kept
    fs = fsspec.filesystem("memory")
    path = f"/dicomflow-pixels/{uuid.uuid4().hex}.dcm"
    fs.pipe_file(path, data)
    source = instance.uri or str(instance.dataset.get("SOPInstanceUID", "dataset"))
    try:
        yield _scan_one(f"memory://{path}", None), {}
    except FrameDecodeError as exc:
        raise FrameDecodeError(source, exc.frame, f"{exc.reason} ({_STAGED_NOTE})") from exc
    except PixelDataError as exc:
        text = re.sub("memory:/*" + re.escape(path.lstrip("/")), lambda _: source, str(exc))
        raise type(exc)(f"{text} ({_STAGED_NOTE})") from exc
    finally:
        fs.rm(path)


def _no_image(
    row: Mapping[str, Any], reason: str | None, what: str, options: Mapping[str, Any]
) -> None:
    """Skip an instance without pixel data; raise the pixel layer's error for a broken one."""
    from ..pixels import NO_PIXEL_DATA, PixelDataError, row_refs

    if reason is None or reason == NO_PIXEL_DATA:
        raise Skip(f"no pixel data: nothing to write as {what}")
    row_refs(row, options)  # raises the original error (size, location), which names the file
    raise PixelDataError(f"{row.get('uri')}: {reason}")


def _frame_count(row: Mapping[str, Any]) -> int:
    """The frames of a catalog row, as the pixel layer counts them (1 when unknown)."""
    for key in ("number_of_frames", "NumberOfFrames"):
        try:
            count = int(row.get(key) or 0)
        except (TypeError, ValueError):
            continue
        if count > 0:
            return count
    return 1


def _header(instance: Instance, parsed: bool) -> Dataset:
    """The attributes paths are made of: the stages' dataset, or the source's header only."""
    if parsed:
        return instance.dataset
    from ..pixels import read_header

    return read_header(instance.uri, instance.storage_options)


@dataclass(frozen=True)
class PngFolder:
    """Sink: a windowed PNG preview of every image instance under ``root``, named by a template.

    Parameters
    ----------
    root : str
        Output folder (local path or fsspec URL).
    template : str
        Path of each file below ``root``, of ``{Keyword}`` fields and ending in ``.png``; every
        component is sanitized. ``{frame}`` is the 0-based frame index.
    window : (center, width) or str, optional
        Grey frames: an explicit window, or a preset of
        :data:`dicomflow.pixels.PRESETS` (``"lung"``, ``"brain"``...); by default the
        frame's own Window Center/Width, else its 0.5-99.5 percentiles. Values go through the
        Modality LUT first; MONOCHROME1 is inverted. Colour frames are written as RGB
        (YBR decoded to RGB, palette colour through its lookup table).
    frames : {"middle", "all"}
        Multi-frame instances: one PNG of the middle frame (``number_of_frames // 2``, in file
        order), or one PNG per frame, its 4-digit 0-based index added before ``.png`` (unless
        the template places ``{frame}`` itself; a single-frame instance keeps the plain name).
    storage_options : mapping
        fsspec options for ``root``.
    fsync : bool
        Flush each file to disk before it gets its name.
    max_frame_bytes : int
        The decode budget (1 GiB by default): a frame that would decode to more bytes is
        refused before anything is decoded, and the instance fails with a
        :class:`~dicomflow.FrameDecodeError` naming the budget. A frame is decoded once and
        windowed through a table of its levels, so an export peaks at about the decoder's own
        need (JPEG 2000: some four times the decoded frame), not at float64 copies of it.

    Examples
    --------
    >>> run = (dfl.pipeline(dfl.scan("study/"))                      # doctest: +SKIP
    ...        .write(dfl.writers.PngFolder("previews/", window="lung"))
    ...        .execute())
    >>> run.manifest.filter(pl.col("status") == "failed")             # doctest: +SKIP
    """

    root: str
    template: str = DEFAULT_PNG_TEMPLATE
    window: tuple[float, float] | str | None = None
    frames: str = "middle"
    storage_options: Mapping[str, Any] = field(default_factory=dict)
    name: str = "png"
    fsync: bool = False
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES

    def __post_init__(self) -> None:
        _check_template(self.template, (".png",), ("frame",))
        if int(self.max_frame_bytes) < 1:
            raise ConfigError(f"max_frame_bytes={self.max_frame_bytes!r}: expected a byte count")
        if self.frames not in ("middle", "all"):
            raise ConfigError(f"frames={self.frames!r}: expected 'middle' or 'all'")
        window = self.window
        if isinstance(window, str):
            from ..pixels import PRESETS

            if window not in PRESETS:
                raise ConfigError(
                    f"unknown window preset {window!r}; presets: {', '.join(PRESETS)}"
                )
        elif window is not None:
            try:
                center, width = (float(v) for v in window)
            except (TypeError, ValueError):
                raise ConfigError(
                    f"window={window!r}: expected (center, width) or a preset name"
                ) from None
            object.__setattr__(self, "window", (center, width))

    def config(self) -> dict[str, Any]:
        window = list(self.window) if isinstance(self.window, tuple) else self.window
        config: dict[str, Any] = {
            "type": "png",
            "root": str(self.root),
            "template": self.template,
            "window": window,
            "frames": self.frames,
        }
        if self.max_frame_bytes != DEFAULT_MAX_FRAME_BYTES:  # written only when chosen
            config["max_frame_bytes"] = int(self.max_frame_bytes)
        return config

    def open(self, context: RunContext) -> None:
        """Remove temporary files an interrupted earlier run left behind."""
        remove_stale_temporaries(str(self.root), self.storage_options)

    def write(self, instance: Instance) -> list[Output]:
        from ..codecs import encode_png
        from ..pixels import (
            FrameTransform,
            PixelOptions,
            display_frame,
            load_frame,
            palette_of,
            planes_from_rows,
        )

        parsed = instance.parsed
        images = []
        with instance_pixels(instance) as (row, options):
            chosen = None if self.frames == "all" else [_frame_count(row) // 2]
            planes, skipped = planes_from_rows([row], options, frames=chosen)
            if not planes:
                _no_image(row, skipped[0][1] if skipped else None, "PNG", options)
            wanted = range(len(planes)) if self.frames == "all" else [len(planes) // 2]
            palette = None
            if str(row.get("PhotometricInterpretation") or "").upper() == "PALETTE COLOR":
                palette = FrameTransform(palette=palette_of(row["uri"], options))
            decoding = PixelOptions(max_frame_bytes=int(self.max_frame_bytes))
            for k in wanted:
                plane = planes[k]
                transform = palette or plane.transform(decoding)
                raw = load_frame(plane.ref, decoding, transform, options)
                images.append((plane.ref.index, display_frame(raw, plane, self.window)))
        template = self.template
        if self.frames == "all" and len(images) > 1:
            template = _with_field(template, "frame", (".png",))
        ds = _header(instance, parsed)
        outputs = []
        for index, image in images:
            parts = render_path(template, _Fields(ds, {"frame": f"{index:04d}"}))  # type: ignore[arg-type]
            path = join(str(self.root), *parts)
            data = encode_png(image)
            atomic_write(path, data, storage_options=self.storage_options, fsync=self.fsync)
            outputs.append(Output.of_bytes(self.name, path, data))
        return outputs

    def close(self, context: RunContext, manifest: Any) -> None:
        pass


_NIFTI_SUFFIXES = (".nii.gz", ".nii")


@dataclass(frozen=True)
class NiftiFolder:
    """Sink: every image instance as a NIfTI-1 file (and a JSON sidecar) under ``root``.

    The instance's frames go through :func:`dicomflow.volumes`, so the file is what
    :meth:`dicomflow.Volume.to_nifti` writes, laid out as dcm2niix does: voxels
    ``[column, rows - 1 - row, frame]`` with the RAS affine of the patient geometry (codes 0 and
    the pixel spacing only when the instance has none). A single-frame instance is one slice
    (``columns x rows x 1``, as dcm2niix writes it); an enhanced multi-frame object becomes a
    3-D or 4-D image sorted along its slice normal; a multi-frame object without geometry
    (ultrasound cine) a stack of its frames in file order. Colour is written as RGB24. Frames
    that form several stacks (e.g. two echoes) give one file each, their 0-based index added
    before the extension unless the template places ``{volume}`` itself.

    Parameters
    ----------
    root : str
        Output folder (local path or fsspec URL).
    template : str
        Path of each file below ``root``, of ``{Keyword}`` fields, ending in ``.nii.gz``
        (compressed, reproducible bytes) or ``.nii``.
    sidecar : bool
        Also write ``<name>.json`` beside each file (BIDS-style metadata, as ``to_nifti``).
    reorient : bool or "auto"
        As :func:`dicomflow.pixels.write_nifti`, for instances of several slices; a
        single slice is never reoriented (it stays ``columns x rows x 1``).
    storage_options : mapping
        fsspec options for ``root``.
    fsync : bool
        Flush each file to disk before it gets its name.

    Examples
    --------
    >>> run = (dfl.pipeline(dfl.scan("study/"))                      # doctest: +SKIP
    ...        .write(dfl.writers.NiftiFolder("nifti/", template="{PatientID}/{SeriesNumber}_"
    ...                                       "{SOPInstanceUID}.nii.gz"))
    ...        .execute())
    """

    root: str
    template: str = DEFAULT_NIFTI_TEMPLATE
    sidecar: bool = True
    reorient: bool | str = "auto"
    storage_options: Mapping[str, Any] = field(default_factory=dict)
    name: str = "nifti"
    fsync: bool = False

    def __post_init__(self) -> None:
        _check_template(self.template, _NIFTI_SUFFIXES, ("volume",))
        if self.reorient not in (True, False, "auto"):
            raise ConfigError(f"reorient={self.reorient!r}: expected true, false or 'auto'")

    def config(self) -> dict[str, Any]:
        return {
            "type": "nifti",
            "root": str(self.root),
            "template": self.template,
            "sidecar": self.sidecar,
            "reorient": self.reorient,
        }

    def open(self, context: RunContext) -> None:
        """Remove temporary files an interrupted earlier run left behind."""
        remove_stale_temporaries(str(self.root), self.storage_options)

    def write(self, instance: Instance) -> list[Output]:
        from ..pixels import bids_sidecar, nifti_bytes, volumes

        parsed = instance.parsed
        compress = self.template.lower().endswith(".gz")
        files = []
        with instance_pixels(instance) as (row, options):
            vols = volumes([row], storage_options=options or None)
            if not len(vols):
                _no_image(row, vols.skipped[0][1] if vols.skipped else None, "NIfTI", options)
            for vol in vols:  # everything decoded before anything is written
                reorient = self.reorient if vol.info.get("slices", 1) > 1 else False
                data = nifti_bytes(
                    vol, compress=compress, reorient=reorient, scheduler="synchronous"
                )
                sidecar = json.dumps(bids_sidecar(vol), indent=2).encode() if self.sidecar else None
                files.append((data, sidecar))
        template = self.template
        if len(files) > 1:
            template = _with_field(template, "volume", _NIFTI_SUFFIXES)
        ds = _header(instance, parsed)
        outputs = []
        for k, (data, sidecar) in enumerate(files):
            parts = render_path(template, _Fields(ds, {"volume": str(k)}))  # type: ignore[arg-type]
            path = join(str(self.root), *parts)
            atomic_write(path, data, storage_options=self.storage_options, fsync=self.fsync)
            outputs.append(Output.of_bytes(self.name, path, data))
            if sidecar is not None:
                json_path = re.sub(r"\.nii(\.gz)?$", "", path, flags=re.IGNORECASE) + ".json"
                atomic_write(
                    json_path, sidecar, storage_options=self.storage_options, fsync=self.fsync
                )
                outputs.append(Output.of_bytes(self.name, json_path, sidecar))
        return outputs

    def close(self, context: RunContext, manifest: Any) -> None:
        pass
