"""DICOM SEG from a label volume and TID 1500 measurement reports from a table (highdicom)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .._version import __version__
from ..dicom import atomic_path
from ..errors import ConfigError, DerivedObjectError

# SCT "Tissue" in "Anatomical structure": the neutral codes when the caller gives none
DEFAULT_CATEGORY = ("91723000", "SCT", "Anatomical Structure")
DEFAULT_TYPE = ("85756007", "SCT", "Tissue")


def _highdicom() -> Any:
    try:
        import highdicom
    except ImportError:
        raise ConfigError(
            "writing SEG and SR needs highdicom: pip install 'dicomflow[derived]'"
        ) from None
    return highdicom


def labels_from_nifti(path: Any, volume: Any) -> np.ndarray:
    """A NIfTI label map as ``(slices, rows, columns)`` in ``volume``'s array order.

    The NIfTI must be on the grid dicomflow writes that series on (``volume.to_nifti``): same
    shape and affine within 1e-3 mm, as a label map from a model run on that file is.
    """
    import nibabel as nib

    image: Any = nib.load(str(path))
    data = np.asarray(image.dataobj)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    labels = np.transpose(data, (2, 1, 0))[:, ::-1, :]
    if labels.shape != tuple(volume.shape):
        raise DerivedObjectError(f"label map {data.shape} does not fit the series {volume.shape}")
    if not np.allclose(image.affine, volume.nifti_affine, atol=1e-3):
        raise DerivedObjectError("label map affine differs from the series' NIfTI affine")
    return labels


def _sources(volume: Any, labels: np.ndarray) -> tuple[list[Any], np.ndarray]:
    """The source headers (each object read once, through fsspec with the volume's storage
    options) and the labels in the order highdicom pairs them with the sources' frames.

    Single-frame sources: one header per slice, the labels as they are. One multi-frame
    source: its header, and one label frame per frame of it (in frame order; frames outside
    the volume, of another stack of the same object, are empty).
    """
    from ..pixels import read_header

    uris = list(dict.fromkeys(plane.ref.uri for plane in volume.planes))
    headers = [read_header(uri, volume.storage_options) for uri in uris]
    frames = [int(h.get("NumberOfFrames", 1) or 1) for h in headers]
    if len(headers) == len(volume.planes) and max(frames) == 1:
        return headers, labels
    if len(headers) > 1:
        raise DerivedObjectError(
            f"the series spans {len(headers)} objects, some multi-frame: a SEG references "
            "single-frame images or one multi-frame image"
        )
    stacked = np.zeros((frames[0], *labels.shape[1:]), dtype=labels.dtype)
    for k, plane in enumerate(volume.planes):
        stacked[plane.ref.index] = labels[k]
    return headers, stacked


def write_seg(
    labels: Any,
    volume: Any,
    path: Any,
    *,
    segments: Mapping[int, str] | None = None,
    series_number: int = 300,
    algorithm: str | None = None,
    fractional: bool = False,
) -> Any:
    """Write a DICOM SEG of ``labels`` referencing the series of ``volume``.

    Parameters
    ----------
    labels : ndarray or path
        ``(slices, rows, columns)`` integer labels in the volume's array order, or a NIfTI
        file on the series' NIfTI grid (see :func:`labels_from_nifti`).
    volume : dicomflow.pixels.Volume
        A 3-D volume (the source series): single-frame images, or one multi-frame image;
        its sources are read (headers only) through fsspec with its storage options.
    segments : mapping, optional
        Label number -> segment label; default ``"Segment N"`` for each number present.
    algorithm : str, optional
        Name of the algorithm; the segments are AUTOMATIC with it, MANUAL without.
    fractional : bool
        Write a FRACTIONAL (probability) SEG of each segment's mask instead of BINARY.
    """
    hd = _highdicom()
    if not isinstance(labels, np.ndarray):
        labels = labels_from_nifti(labels, volume)
    if labels.shape != tuple(volume.shape) or volume.is_4d:
        raise DerivedObjectError(f"labels {labels.shape} do not fit the volume {volume.shape}")
    numbers = [int(n) for n in np.unique(labels) if n != 0]
    if not numbers:
        raise DerivedObjectError("the label map has no labelled voxel")
    names = dict(segments or {})
    algo = None
    if algorithm:
        algo = hd.AlgorithmIdentificationSequence(
            name=algorithm,
            version=__version__,
            family=hd.sr.CodedConcept("123110", "DCM", "Artificial Intelligence"),
        )
    descriptions = []
    for i, number in enumerate(numbers, start=1):
        descriptions.append(
            hd.seg.SegmentDescription(
                segment_number=i,
                segment_label=names.get(number, f"Segment {number}"),
                segmented_property_category=hd.sr.CodedConcept(*DEFAULT_CATEGORY),
                segmented_property_type=hd.sr.CodedConcept(*DEFAULT_TYPE),
                algorithm_type="AUTOMATIC" if algo else "MANUAL",
                algorithm_identification=algo,
            )
        )
    sources, ordered = _sources(volume, labels)
    stacked = np.stack([ordered == n for n in numbers], axis=-1)
    try:
        seg = _segmentation(hd, sources, stacked, fractional, descriptions, series_number)
    except (AttributeError, TypeError, ValueError) as exc:  # highdicom's word on the sources
        raise DerivedObjectError(
            f"cannot write a SEG on this series: {type(exc).__name__}: {exc}"
        ) from exc
    with atomic_path(path) as tmp:
        seg.save_as(tmp)
    return path


def _segmentation(
    hd: Any,
    sources: list[Any],
    stacked: np.ndarray,
    fractional: bool,
    descriptions: list[Any],
    series_number: int,
) -> Any:
    return hd.seg.Segmentation(
        source_images=sources,
        pixel_array=stacked.astype(np.float32) if fractional else stacked,
        segmentation_type="FRACTIONAL" if fractional else "BINARY",
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=series_number,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="dicomflow",
        manufacturer_model_name="dicomflow",
        software_versions=__version__,
        device_serial_number="0",
        content_label="LABELS",
        content_creator_name="dicomflow^",
        omit_empty_frames=False,
    )


MEASUREMENT_COLUMNS = ("TrackingIdentifier", "ConceptName", "ConceptMeaning", "value", "unit")


def _concept(text: str, meaning: str | None, hd: Any) -> Any:
    scheme, _, value = str(text).partition(":")
    if not value:
        raise DerivedObjectError(f"a code is SCHEME:VALUE, not {text!r}")
    return hd.sr.CodedConcept(value, scheme, meaning or value)


def write_measurement_report(
    table: Any,
    source: Any,
    path: Any,
    *,
    observer: str = "dicomflow^",
    series_number: int = 400,
    evaluations: Any = None,
    segmentation: Any = None,
) -> Any:
    """Write a TID 1500 Measurement Report of a measurement table.

    Parameters
    ----------
    table : Arrow table, polars/pandas frame or list of dicts
        One row per measurement with ``TrackingIdentifier``, ``ConceptName`` (``SCHEME:VALUE``),
        ``ConceptMeaning``, ``value``, ``unit`` (UCUM) and optionally ``Finding`` /
        ``FindingMeaning``, ``FindingSite`` / ``FindingSiteMeaning``, ``TrackingUID``,
        ``unit_meaning``; rows with one tracking identifier form one measurement group.
        The columns of :func:`read_measurements` are accepted as they come.
    source : pydicom.Dataset or path
        An image of the series measured (the report's study and the evidence).
    evaluations : table, optional
        Qualitative evaluations: ``TrackingIdentifier``, ``ConceptName``, ``ConceptMeaning``,
        ``value`` (a code, ``SCHEME:VALUE``) and ``value_meaning``, each joining the group of its
        tracking identifier (the columns of the second table :func:`read_measurements` gives).
    segmentation : pydicom.Dataset or path, optional
        A SEG: a group whose rows give ``ReferencedSegmentNumber`` is written as a volumetric
        ROI group (TID 1411) measured on that segment of it, and the SEG joins the evidence.
    """
    import pydicom

    hd = _highdicom()
    rows = _rows(table)
    missing = [c for c in MEASUREMENT_COLUMNS if rows and c not in rows[0]]
    if not rows or missing:
        raise DerivedObjectError(f"measurement table is empty or lacks {missing}")
    image = source if isinstance(source, pydicom.Dataset) else pydicom.dcmread(source)
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        if row["TrackingIdentifier"] is None:  # "None" would merge every such row into one group
            raise DerivedObjectError(f"a measurement row has no TrackingIdentifier: {row}")
        if row.get("value") is None:
            raise DerivedObjectError(
                f"measurement {row.get('ConceptName')!r} of {row['TrackingIdentifier']!r} has "
                "no value"
            )
        groups.setdefault(str(row["TrackingIdentifier"]), []).append(row)
    coded: dict[str, list[Any]] = {}
    for row in _rows(evaluations) if evaluations is not None else []:
        tracking = str(row["TrackingIdentifier"])
        if tracking not in groups:
            raise DerivedObjectError(f"evaluation of {tracking!r}: no measurement of that group")
        coded.setdefault(tracking, []).append(
            hd.sr.QualitativeEvaluation(
                name=_concept(row["ConceptName"], row.get("ConceptMeaning"), hd),
                value=_concept(row["value"], row.get("value_meaning"), hd),
            )
        )
    observer_context = hd.sr.ObserverContext(
        observer_type=hd.sr.CodedConcept("121006", "DCM", "Person"),
        observer_identifying_attributes=hd.sr.PersonObserverIdentifyingAttributes(name=observer),
    )
    context = hd.sr.ObservationContext(observer_person_context=observer_context)
    ref = hd.sr.SourceImageForMeasurementGroup.from_source_image(image)
    seg = None
    if segmentation is not None:
        seg = (
            segmentation
            if isinstance(segmentation, pydicom.Dataset)
            else pydicom.dcmread(segmentation)
        )
    measurement_groups = []
    for tracking, items in groups.items():
        first = items[0]
        measurements = [
            hd.sr.Measurement(
                name=_concept(r["ConceptName"], r.get("ConceptMeaning"), hd),
                value=float(r["value"]),
                unit=hd.sr.CodedConcept(
                    str(r["unit"]), "UCUM", r.get("unit_meaning") or str(r["unit"])
                ),
            )
            for r in items
        ]
        finding = first.get("Finding")
        site = first.get("FindingSite")
        common: dict[str, Any] = {
            "tracking_identifier": hd.sr.TrackingIdentifier(
                uid=first.get("TrackingUID") or hd.UID(), identifier=tracking
            ),
            "finding_type": _concept(finding, first.get("FindingMeaning"), hd) if finding else None,
            "finding_sites": [
                hd.sr.FindingSite(_concept(site, first.get("FindingSiteMeaning"), hd))
            ]
            if site
            else None,
            "measurements": measurements,
            "qualitative_evaluations": coded.get(tracking) or None,
        }
        number = first.get("ReferencedSegmentNumber")
        if number is not None and seg is not None:
            segment = hd.sr.ReferencedSegment.from_segmentation(seg, int(number))
            measurement_groups.append(
                hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
                    referenced_segment=segment, **common
                )
            )
        elif number is not None:
            raise DerivedObjectError(f"{tracking!r} names a segment: pass segmentation=")
        else:
            measurement_groups.append(
                hd.sr.MeasurementsAndQualitativeEvaluations(source_images=[ref], **common)
            )
    report = hd.sr.MeasurementReport(
        observation_context=context,
        procedure_reported=hd.sr.CodedConcept("363679005", "SCT", "Imaging procedure"),
        imaging_measurements=measurement_groups,
        title=hd.sr.CodedConcept("126000", "DCM", "Imaging Measurement Report"),
    )
    sr = hd.sr.Comprehensive3DSR(
        evidence=[image] if seg is None else [image, seg, *_seg_sources(seg, image)],
        content=report,
        series_number=series_number,
        series_instance_uid=hd.UID(),
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="dicomflow",
        is_complete=True,
        is_final=True,
    )
    with atomic_path(path) as tmp:
        sr.save_as(tmp)
    return path


def _seg_sources(seg: Any, image: Any) -> list[Any]:
    """The source images a SEG references, as the identifiers SR evidence lists."""
    from pydicom import Dataset

    out = []
    for series in seg.get("ReferencedSeriesSequence", []):
        for ref in series.get("ReferencedInstanceSequence", []):
            if ref.ReferencedSOPInstanceUID == image.SOPInstanceUID:
                continue
            ds = Dataset()
            ds.SOPClassUID = ref.ReferencedSOPClassUID
            ds.SOPInstanceUID = ref.ReferencedSOPInstanceUID
            ds.SeriesInstanceUID = series.SeriesInstanceUID
            ds.StudyInstanceUID = seg.StudyInstanceUID
            out.append(ds)
    return out


def _rows(table: Any) -> list[dict[str, Any]]:
    if isinstance(table, Sequence) and not isinstance(table, str):
        return [dict(r) for r in table]
    if hasattr(table, "to_pylist"):
        return list(table.to_pylist())
    if hasattr(table, "to_dicts"):
        return list(table.to_dicts())
    if hasattr(table, "to_dict"):
        return list(table.to_dict("records"))
    raise DerivedObjectError(f"not a table: {type(table).__name__}")
