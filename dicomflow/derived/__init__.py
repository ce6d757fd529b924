"""Derived objects: SEG, RTSTRUCT and TID 1500 SR in (onto the series they reference) and out.

::

    import dicomflow as dfl
    vol = dfl.volumes(dfl.scan("ct/"))[0]
    seg = dfl.read_seg("seg.dcm", vol)          # LabelVolume: labels on vol's grid + segments
    rois = dfl.read_rtstruct("rtss.dcm", vol)   # per-ROI masks + the ROI table
    meas, evals = dfl.read_measurements("sr.dcm")
    dfl.write_seg(seg.labels, vol, "out.dcm"); dfl.write_measurement_report(meas, src, "sr.dcm")

Modules: ``_seg`` (SEG frames placed on the series' slices, the segment table and the
``LabelVolume``), ``_rtstruct`` (contours rasterised even-odd per slice, the ROI table),
``_sr`` (the TID 1500 content tree walked to measurement and evaluation rows), ``_write``
(SEG and SR written with highdicom, the ``derived`` extra). Errors: ``DerivedObjectError``.
"""

from __future__ import annotations

from ..errors import DerivedObjectError
from ._rtstruct import ROI_SCHEMA, fill_polygon, read_rtstruct
from ._seg import SEGMENT_SCHEMA, LabelVolume, read_seg, segment_table
from ._sr import EVALUATION_SCHEMA, MEASUREMENT_SCHEMA, read_measurements
from ._write import labels_from_nifti, write_measurement_report, write_seg

__all__ = [
    "EVALUATION_SCHEMA",
    "MEASUREMENT_SCHEMA",
    "ROI_SCHEMA",
    "SEGMENT_SCHEMA",
    "DerivedObjectError",
    "LabelVolume",
    "fill_polygon",
    "labels_from_nifti",
    "read_measurements",
    "read_rtstruct",
    "read_seg",
    "segment_table",
    "write_measurement_report",
    "write_seg",
]
