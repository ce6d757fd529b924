"""BIDS sidecars, ``.bval``/``.bvec`` files and output names, as dcm2niix writes them.

The sidecar holds the keys dcm2niix (v1.0.2022) writes for the same series, with the same
names, units (seconds for times) and vendor readings: the standard attributes of the first
image (for enhanced objects, its functional groups), Siemens' CSA headers and protocol
(``ASCCONV``), GE's and Philips' private attributes. Keys dcm2niix does not write (provenance,
geometry warnings) are added after them. The differences that remain are listed, each with its
reason, in ``docs/volumes.md``.

Diffusion (b-values and gradient directions) is read per volume of a 4-D series from the
vendor's attributes: Siemens CSA ``B_value``/``DiffusionGradientDirection``, GE
(0043,1039)/(0019,10BB-BD), Philips (2001,1003)/(2005,10B0-B2) and the standard MR Diffusion
Sequence (0018,9117) of enhanced objects. Directions are written, as dcm2niix writes them, in the
voxel axes of the NIfTI file (FSL's convention: x is flipped when the affine keeps handedness).
"""

from __future__ import annotations

import math
import re
import weakref
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ConfigError
from ._siemens import parse_csa

if TYPE_CHECKING:
    from ._volume import Volume

__all__ = [
    "bids_sidecar",
    "diffusion_table",
    "name_from_template",
    "nifti_storage",
    "philips_scaling",
    "template_fields",
    "unique_names",
    "write_diffusion",
]

_MANUFACTURERS = (
    ("SIEMENS", "Siemens"), ("GE", "GE"), ("PHILIPS", "Philips"), ("TOSHIBA", "Toshiba"),
    ("CANON", "Canon"), ("UIH", "UIH"), ("HITACHI", "Hitachi"), ("BRUKER", "Bruker"),
)  # fmt: skip


# -- reading the header ----------------------------------------------------------------------
#: headers read for a volume (sidecar, slice times, diffusion, scaling read the same files)
_HEADERS: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()


def _dataset(volume: Volume, uri: str) -> Any:
    """The header (pydicom, no pixels) of one of the volume's files, read once per volume."""
    from ._slices import read_header

    cache = _HEADERS.setdefault(volume, {})
    if uri not in cache:
        if len(cache) > 64:  # a long 4-D series: keep memory bounded
            cache.clear()
        cache[uri] = read_header(uri, volume.storage_options)
    return cache[uri]


class _Header:
    """One frame's view of a header: its functional groups (which override), then the top
    level, then the items of private sequences (Philips keeps a classic copy there)."""

    def __init__(self, ds: Any, frame: int = 0) -> None:
        self.ds = ds
        self.groups: list[Any] = []  # standard functional group items
        self.private_groups: list[Any] = []  # and the items of private sequences in them
        per = ds.get("PerFrameFunctionalGroupsSequence")
        shared = ds.get("SharedFunctionalGroupsSequence")
        for items in (per[frame] if per is not None and frame < len(per) else None,
                      shared[0] if shared else None):  # fmt: skip
            if items is None:
                continue
            self.groups.append(items)
            for element in items:
                if element.VR == "SQ" and len(element.value):
                    into = self.private_groups if element.tag.is_private else self.groups
                    into.append(element.value[0])
                    for inner in element.value[0]:  # one level down (coil elements, etc.)
                        if inner.VR == "SQ" and len(inner.value) and not inner.tag.is_private:
                            into.append(inner.value[0])

    def get(self, keyword: str) -> Any:
        """The frame's value (its functional groups first, as they override), else the top's."""
        for group in (*self.groups, self.ds, *self.private_groups):  # Philips' copy last
            value = group.get(keyword)
            if value is not None and value != "":
                return value
        return None

    def private(self, group: int, creator: str, offset: int) -> Any:
        """A private element's value by creator, top level then functional groups."""
        for ds in (self.ds, *self.groups, *self.private_groups):
            try:
                block = ds.private_block(group, creator)
            except (KeyError, ValueError):
                continue
            if offset in block:
                return block[offset].value
        return None


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("latin-1", "replace")
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        value = "\\".join(str(v) for v in value)
    text = str(value).replace("\x00", "").strip()
    return text or None


def _number(value: Any) -> float | int | None:
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        value = value[0] if len(value) else None
    if isinstance(value, bytes):
        value = value.decode("latin-1", "replace").strip("\x00 ")
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(number):
        return None
    return int(number) if number.is_integer() and abs(number) < 2**53 else number


def _numbers(value: Any) -> list[float] | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("latin-1", "replace")
    if isinstance(value, str):
        value = value.replace("\x00", "").split("\\")
    try:
        return [float(v) for v in value]
    except (TypeError, ValueError):
        return None


def _csa(header: _Header, offset: int) -> dict[str, list[str]]:
    raw = header.private(0x0029, "SIEMENS CSA HEADER", offset)
    if not isinstance(raw, bytes):
        return {}
    try:
        return parse_csa(raw)
    except Exception:  # noqa: BLE001 - an unreadable CSA header is no metadata, not an error
        return {}


_ASCCONV = re.compile(r"### ASCCONV BEGIN[^\n]*\n(.*?)### ASCCONV END", re.S)
_ASC_LINE = re.compile(r"^\s*([A-Za-z0-9_.\[\]]+)\s*=\s*(.*?)\s*(?:#.*)?$")


def _ascconv(header: _Header, series_csa: Mapping[str, list[str]]) -> dict[str, str]:
    """Siemens' protocol (``MrPhoenixProtocol``'s ASCCONV part) as ``key -> value text``."""
    texts: list[str] = list(series_csa.get("MrPhoenixProtocol", []))
    for creator in ("SIEMENS MR SDS 01", "SIEMENS MR HEADER"):
        raw = header.private(0x0021, creator, 0x19)
        if raw is not None:
            texts.append(_text(raw) or "")
    out: dict[str, str] = {}
    for text in texts:
        match = _ASCCONV.search(text)
        if not match:
            continue
        for line in match.group(1).splitlines():
            found = _ASC_LINE.match(line)
            if found:
                out[found.group(1)] = found.group(2).strip().strip('"')
        break
    return out


def _asc_number(asc: Mapping[str, str], key: str) -> float | None:
    text = asc.get(key)
    if text is None:
        return None
    try:
        return float(int(text, 16)) if text.lower().startswith("0x") else float(text)
    except ValueError:
        return None


# -- the sidecar -----------------------------------------------------------------------------
def _manufacturer(text: str | None) -> str | None:
    if not text:
        return None
    upper = text.upper()
    for prefix, name in _MANUFACTURERS:
        if upper.startswith(prefix):
            return name
    return text


def _time_text(value: Any) -> str | None:
    """DICOM TM ``HHMMSS.ffffff`` as ``HH:MM:SS.ffffff`` (dcm2niix's AcquisitionTime)."""
    text = _text(value)
    if not text:
        return None
    text = text.replace(":", "")
    if len(text) >= 14 and text[:8].isdigit():  # a DT
        text = text[8:]
    text = text.split("+")[0].split("-")[0]
    try:
        hh, mm = int(text[0:2]), int(text[2:4] or 0)
        ss = float(text[4:] or 0)
    except ValueError:
        return None
    return f"{hh:02d}:{mm:02d}:{ss:09.6f}"


def _seconds_of_day(value: Any) -> float | None:
    text = _time_text(value)
    if text is None:
        return None
    hh, mm, ss = text.split(":")
    return int(hh) * 3600 + int(mm) * 60 + float(ss)


def _ms_to_s(value: Any) -> float | None:
    number = _number(value)
    return None if number is None else float(number) / 1000.0


def _image_type(value: Any) -> list[str] | None:
    """Image Type's values, each also cut at ``_`` (dcm2niix's reading: ``ECHO_00`` is two)."""
    text = _text(value)
    if not text:
        return None
    return [part.strip() for part in re.split(r"[\\_]", text) if part.strip()]


def _put(out: dict[str, Any], key: str, value: Any) -> None:
    if value is not None and value != "" and value != []:
        out[key] = value


#: keys dcm2niix leaves out at these values (a single average, no echo train, no inversion...)
_OMIT = {
    "NumberOfAverages": (1,), "EchoTrainLength": (1, 0), "AcquisitionNumber": (0,),
    "InversionTime": (0,), "EchoTime": (0,), "EchoNumber": (1, 0),
}  # fmt: skip


def _siemens(header: _Header, out: dict[str, Any], facts: dict[str, Any]) -> None:
    image = _csa(header, 0x10)
    series = _csa(header, 0x20)
    asc = _ascconv(header, series)
    facts["csa_image"] = image

    def csa_first(name: str) -> str | None:
        values = image.get(name) or []
        return values[0] if values else None

    sdi = "SIEMENS MR SDI 02"
    _put(out, "ImageTypeText", _image_type(header.private(0x0021, sdi, 0x75)))
    sds = "SIEMENS MR SDS 01"  # XA enhanced: the classic sequence attributes, privately
    for key, offset in (
        ("ScanningSequence", 0x5A),
        ("SequenceVariant", 0x5B),
        ("ScanOptions", 0x5C),
    ):
        if key not in out:
            _put(out, key, _text(header.private(0x0021, sds, offset)))
    fourier = _asc_number(asc, "sKSpace.ucPhasePartialFourier")
    fractions = {1: 0.5, 2: 0.625, 4: 0.75, 8: 0.875, 16: 1}
    _put(out, "PartialFourier", fractions.get(int(fourier)) if fourier else None)
    _put(out, "BaseResolution", _number(asc.get("sKSpace.lBaseResolution")))
    shim = [
        _asc_number(asc, f"sGRADSPEC.asGPAData[0].lOffset{axis}")
        if f"sGRADSPEC.asGPAData[0].lOffset{axis}" in asc
        else _asc_number(asc, f"sGRADSPEC.lOffset{axis}")  # VB's name
        for axis in "XYZ"
    ] + [_asc_number(asc, f"sGRADSPEC.alShimCurrent[{i}]") for i in range(5)]
    if all(v is not None for v in shim[:3]):
        _put(out, "ShimSetting", [int(v or 0) for v in shim])
    delay = _asc_number(asc, "lDelayTimeInTR")
    _put(out, "DelayTime", delay / 1e6 if delay else None)
    _put(out, "TxRefAmp", _number(asc.get("sTXSPEC.asNucleusInfo[0].flReferenceAmplitude")))
    _put(out, "PhaseResolution", _number(asc.get("sKSpace.dPhaseResolution")))
    coil = asc.get("sCoilSelectMeas.aRxCoilSelectData[0].asList[0].sCoilElementID.tCoilID")
    coil = coil or asc.get("asCoilSelectMeas[0].asList[0].sCoilElementID.tCoilID")
    _put(out, "ReceiveCoilName", coil or _text(header.get("ReceiveCoilName")))
    elements = csa_first("ImaCoilString") or _text(header.private(0x0021, sdi, 0x4F))
    coil_string = _text(header.private(0x0051, "SIEMENS MR HEADER", 0x0F))
    coil_string = coil_string or _text(header.get("ReceiveCoilName"))
    if elements and ":" in elements:  # VB's "T:HEA;HEP" is the coil string itself
        coil_string, elements = elements, None
    _put(out, "ReceiveCoilActiveElements", elements)
    if coil_string and coil_string != elements and (elements is None or ":" not in coil_string):
        _put(out, "CoilString", coil_string)
    _put(out, "PulseSequenceDetails", asc.get("tSequenceFileName"))
    _put(out, "RefLinesPE", _number(asc.get("sPat.lRefLinesPE")) or None)
    combine = {1: "Sum of Squares", 2: "Adaptive Combine"}
    mode = _asc_number(asc, "ucCoilCombineMode")
    _put(out, "CoilCombinationMethod", combine.get(int(mode)) if mode else None)
    _put(out, "ConsistencyInfo", asc.get("sProtConsistencyInfo.tBaselineString"))
    pat = _asc_number(asc, "sPat.ucPATMode")
    _put(out, "MatrixCoilMode", {1: "SENSE", 2: "GRAPPA"}.get(int(pat)) if pat else None)
    accel = _asc_number(asc, "sPat.lAccelFactPE")
    if accel and accel > 1:
        facts["accel"] = accel
    band = _asc_number(asc, "sSliceAcceleration.lMultiBandFactor")
    _put(out, "MultibandAccelerationFactor", int(band) if band and band > 1 else None)
    bwpp = _number(csa_first("BandwidthPerPixelPhaseEncode"))
    if bwpp is None:
        bwpp = _number(header.private(0x0021, sdi, 0x53))
    if bwpp is None:
        bwpp = _number(header.private(0x0019, "SIEMENS MR HEADER", 0x28))
    facts["bwpp"] = bwpp
    dwell = _number(csa_first("RealDwellTime")) or _number(header.private(0x0021, sdi, 0x42))
    facts["dwell"] = dwell * 1e-9 if dwell else None
    positive = csa_first("PhaseEncodingDirectionPositive")
    if positive is None:
        positive = _text(header.private(0x0021, sdi, 0x1C))
    facts["pe_positive"] = None if positive is None else positive.strip() == "1"
    _put(out, "ImageOrientationText", _text(header.private(0x0051, "SIEMENS MR HEADER", 0x0E)))
    times = [float(v) for v in image.get("MosaicRefAcqTimes", [])]
    facts["slice_times"] = [t / 1000.0 for t in times] or None


def _ge(header: _Header, out: dict[str, Any], facts: dict[str, Any]) -> None:
    acq = "GEMS_ACQU_01"
    _put(out, "InternalPulseSequenceName", _text(header.private(0x0019, acq, 0x9E)))
    _put(out, "PulseSequenceName", _text(header.private(0x0019, acq, 0x9C)))
    polarity = _number(header.private(0x0019, acq, 0xB3))
    if polarity is not None and header.private(0x0043, "GEMS_PARM_01", 0x2C) is not None:
        facts["pe_positive"] = polarity == 0
        _put(out, "PhaseEncodingPolarityGE", "Unflipped" if polarity == 0 else "Flipped")
    shim = [_number(header.private(0x0043, "GEMS_PARM_01", e)) for e in (0x02, 0x03, 0x04)]
    if all(v is not None for v in shim):
        _put(out, "ShimSetting", shim)
    _put(out, "PrescanReuseString", _text(header.private(0x0043, "GEMS_PARM_01", 0x95)))
    _put(out, "CoilString", _text(header.get("ReceiveCoilName")))
    facts["ge_protocol"] = _ge_protocol(header.private(0x0025, "GEMS_SERS_01", 0x1B))
    spacing = _number(header.private(0x0043, "GEMS_PARM_01", 0x2C))
    if spacing:
        asset = _numbers(header.private(0x0043, "GEMS_PARM_01", 0x83))
        factor = asset[0] if asset and asset[0] > 0 else 1.0
        facts["ees"] = spacing * 1e-6 * factor


def _ge_protocol(raw: Any) -> dict[str, str]:
    """GE's protocol data block (0025,101B): a gzip stream of ``KEY "value"`` lines."""
    import gzip
    import zlib

    if not isinstance(raw, bytes) or b"\x1f\x8b" not in raw[:16]:
        return {}
    try:
        text = gzip.decompress(raw[raw.find(b"\x1f\x8b") :]).decode("latin-1")
    except (OSError, EOFError, zlib.error):
        return {}
    out = {}
    for line in text.splitlines():
        key, _, value = line.strip().partition(" ")
        if key:
            out[key] = value.strip().strip('"')
    return out


def _ge_slice_times(volume: Volume, protocol: Mapping[str, str]) -> list[float] | None:
    """GE 2-D slice times from the protocol's slice order (0 sequential, 1 interleaved) and TR,
    the slices acquired in prescription order (their Instance Numbers), evenly over the TR."""
    order = protocol.get("SLICEORDER")
    tr = _number(protocol.get("TR")) or _number(volume.info.get("RepetitionTime"))
    slices = int(volume.info.get("slices") or 0)
    if order not in ("0", "1") or not tr or slices < 2 or protocol.get("DELACQ", "0") != "0":
        return None
    if volume.planes[0].mosaic is not None or len(volume.planes) < slices:
        return None
    numbers = [_number(p.row.get("InstanceNumber")) for p in volume.planes[:slices]]
    if any(n is None for n in numbers) or len(set(numbers)) != slices:
        return None
    rank = {n: i for i, n in enumerate(sorted(numbers))}  # type: ignore[type-var]
    prescribed = list(range(slices))
    acquired = prescribed[0::2] + prescribed[1::2] if order == "1" else prescribed
    when = {p: k for k, p in enumerate(acquired)}
    step = float(tr) / 1000.0 / slices
    return [round(when[rank[n]] * step, 6) for n in numbers]


def _philips(header: _Header, out: dict[str, Any], facts: dict[str, Any]) -> None:
    ds = header.ds
    rwv = header.get("RealWorldValueMappingSequence")
    if rwv:
        _put(out, "PhilipsRWVSlope", _number(rwv[0].get("RealWorldValueSlope")))
        _put(out, "PhilipsRWVIntercept", _number(rwv[0].get("RealWorldValueIntercept")))
    scale = philips_scaling(ds, header)
    if scale is not None:
        rs, ri, ss = scale
        _put(out, "PhilipsRescaleSlope", _number(rs))
        _put(out, "PhilipsRescaleIntercept", _number(ri))
        _put(out, "PhilipsScaleSlope", _number(ss))
        out["UsePhilipsFloatNotDisplayScaling"] = 1
    _put(out, "CoilString", _text(header.get("ReceiveCoilName")))
    wfs = _number(header.private(0x2001, "Philips Imaging DD 001", 0x22))
    facts["wfs"] = wfs
    facts["train"] = _number(header.get("EchoTrainLength"))  # 1 too (not in the sidecar)
    _put(out, "WaterFatShift", wfs)
    duration = _number(header.private(0x2005, "Philips MR Imaging DD 001", 0x33))
    facts["duration"] = duration
    prepulse = _text(header.private(0x2001, "Philips Imaging DD 001", 0x1C))
    delay = _number(header.private(0x2001, "Philips Imaging DD 001", 0x1B))
    if prepulse == "INV" and delay and out.get("InversionTime") is None:
        out["InversionTime"] = delay / 1000.0


def philips_scaling(ds: Any, header: _Header | None = None) -> tuple[float, float, float] | None:
    """Philips' (display slope, display intercept, scale slope) when the header has them.

    A stored value ``SV`` is displayed as ``SV * RS + RI``; the floating-point (precise) value
    that dcm2niix writes by default (``-p y``) is ``(SV * RS + RI) / (RS * SS)``.
    """
    header = header or _Header(ds)
    if not str(ds.get("Manufacturer") or "").upper().startswith("PHILIPS"):
        return None
    ss = _number(header.private(0x2005, "Philips MR Imaging DD 001", 0x0E))
    if not ss:
        return None
    rs = _number(header.get("RescaleSlope"))
    ri = _number(header.get("RescaleIntercept"))
    if rs is None:
        rs = _number(header.private(0x2005, "Philips MR Imaging DD 005", 0x0A))  # (2005,140A)
        ri = _number(header.private(0x2005, "Philips MR Imaging DD 005", 0x09))
    rs = 1.0 if not rs else float(rs)
    return rs, float(ri or 0.0), float(ss)


def _matrices(header: _Header, volume: Volume, out: dict[str, Any]) -> str | None:
    rc = _text(header.get("InPlanePhaseEncodingDirection"))
    if not rc:
        rc = _text(header.private(0x0043, "GEMS_PARM_01", 0x8A))
    known = bool(rc)
    if not rc and _text(header.get("Modality")) != "MR":
        return None
    rc = "ROW" if (rc or "").upper().startswith("ROW") else "COL"
    matrix = _numbers(header.get("AcquisitionMatrix"))
    fmt = volume.planes[0].ref.fmt
    mosaic = volume.planes[0].mosaic
    rows = mosaic.tile_rows if mosaic else fmt.rows
    columns = mosaic.tile_columns if mosaic else fmt.columns
    steps = None
    if matrix and len(matrix) == 4:
        steps = matrix[2] if rc == "ROW" else matrix[3]
        steps = steps or max(matrix)
    else:
        steps = _number(header.get("MRAcquisitionPhaseEncodingStepsInPlane"))
    _put(out, "AcquisitionMatrixPE", _number(steps))
    _put(out, "ReconMatrixPE", columns if rc == "ROW" else rows)
    return rc if known else None


def _nifti_axis(volume: Volume, direction_lps: np.ndarray, reorient: Any) -> str | None:
    """The NIfTI axis (``i``, ``j``, ``k`` with ``-`` when opposite) along an LPS direction."""
    from ._nifti import nifti_layout

    if volume.grid is None:
        return None
    _, affine = nifti_layout(volume, reorient)
    ras = np.array([-direction_lps[0], -direction_lps[1], direction_lps[2]])
    columns = affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0)
    dots = columns.T @ ras
    axis = int(np.argmax(np.abs(dots)))
    return "ijk"[axis] + ("" if dots[axis] > 0 else "-")


def _slice_timing(volume: Volume, header: _Header, facts: Mapping[str, Any]) -> list[float] | None:
    times = facts.get("slice_times") or volume.info.get("SliceTiming")
    if times:
        return [round(float(t), 6) for t in times]
    if facts.get("ge_protocol"):
        return _ge_slice_times(volume, facts["ge_protocol"])
    return _enhanced_slice_times(volume)


def _enhanced_slice_times(volume: Volume) -> list[float] | None:
    """Frame acquisition times of the first volume's slices (enhanced objects), from 0."""

    slices = int(volume.info.get("slices") or 0)
    planes = volume.planes[:slices]  # the first time point
    if len(planes) < 2 or len({p.ref.uri for p in planes}) != 1:
        return None
    if planes[0].ref.fmt.number_of_frames <= 1:
        return None
    ds = _dataset(volume, planes[0].ref.uri)
    per = ds.get("PerFrameFunctionalGroupsSequence")
    if per is None:
        return None
    stamps = []
    for plane in planes[:slices]:
        content = _Header(ds, plane.ref.index).get("FrameAcquisitionDateTime")
        stamps.append(_seconds_of_day(content))
    if len(stamps) < 2 or any(s is None for s in stamps):
        return None
    first = min(s for s in stamps if s is not None)
    times = [round(float(s) - first, 6) for s in stamps if s is not None]
    tr = volume.info.get("RepetitionTime")
    if not any(times) or (tr and max(times) >= float(tr) / 1000.0):
        return None
    return times


_STANDARD = (
    # (sidecar key, keyword, converter)
    ("Modality", "Modality", _text),
    ("MagneticFieldStrength", "MagneticFieldStrength", _number),
    ("ImagingFrequency", "ImagingFrequency", _number),
    ("Manufacturer", "Manufacturer", lambda v: _manufacturer(_text(v))),
    ("ManufacturersModelName", "ManufacturerModelName", _text),
    ("InstitutionName", "InstitutionName", _text),
    ("InstitutionalDepartmentName", "InstitutionalDepartmentName", _text),
    ("InstitutionAddress", "InstitutionAddress", _text),
    ("DeviceSerialNumber", "DeviceSerialNumber", _text),
    ("StationName", "StationName", _text),
    ("BodyPartExamined", "BodyPartExamined", _text),
    ("PatientPosition", "PatientPosition", _text),
    ("ProcedureStepDescription", "PerformedProcedureStepDescription", _text),
    ("SoftwareVersions", "SoftwareVersions", _text),
    ("MRAcquisitionType", "MRAcquisitionType", _text),
    ("SeriesDescription", "SeriesDescription", _text),
    ("ProtocolName", "ProtocolName", _text),
    ("ScanningSequence", "ScanningSequence", _text),
    ("SequenceVariant", "SequenceVariant", _text),
    ("ScanOptions", "ScanOptions", _text),
    ("PulseSequenceName", "PulseSequenceName", _text),
    ("SequenceName", "SequenceName", _text),
    ("SeriesNumber", "SeriesNumber", _number),
    ("AcquisitionNumber", "AcquisitionNumber", _number),
    ("ImageComments", "ImageComments", _text),
    ("SliceThickness", "SliceThickness", _number),
    ("SpacingBetweenSlices", "SpacingBetweenSlices", _number),
    ("SAR", "SAR", _number),
    ("NumberOfAverages", "NumberOfAverages", _number),
    ("EchoNumber", "EchoNumbers", _number),
    ("EchoTime", "EchoTime", _ms_to_s),
    ("RepetitionTime", "RepetitionTime", _ms_to_s),
    ("InversionTime", "InversionTime", _ms_to_s),
    ("FlipAngle", "FlipAngle", _number),
    ("ExposureTime", "ExposureTime", _ms_to_s),
    ("XRayTubeCurrent", "XRayTubeCurrent", _number),
    ("XRayExposure", "Exposure", _number),
    ("ConvolutionKernel", "ConvolutionKernel", _text),
    ("PercentPhaseFOV", "PercentPhaseFieldOfView", _number),
    ("PercentSampling", "PercentSampling", _number),
    ("EchoTrainLength", "EchoTrainLength", _number),
    ("PhaseEncodingSteps", "NumberOfPhaseEncodingSteps", _number),
    ("PixelBandwidth", "PixelBandwidth", _number),
)

#: dcm2niix's order of the keys it writes (keys it does not know come after, in their order)
_ORDER = (
    "Modality", "MagneticFieldStrength", "ImagingFrequency", "Manufacturer",
    "InternalPulseSequenceName", "ManufacturersModelName", "InstitutionName",
    "InstitutionalDepartmentName", "InstitutionAddress", "DeviceSerialNumber", "StationName",
    "BodyPartExamined", "PatientPosition", "ProcedureStepDescription", "SoftwareVersions",
    "MRAcquisitionType", "SeriesDescription", "ProtocolName", "ScanningSequence",
    "SequenceVariant", "ScanOptions", "PulseSequenceName", "SequenceName", "ImageType",
    "ImageTypeText", "RawImage", "NonlinearGradientCorrection", "SeriesNumber",
    "AcquisitionTime", "AcquisitionNumber", "ImageComments", "PhilipsRWVSlope",
    "PhilipsRWVIntercept", "PhilipsRescaleSlope", "PhilipsRescaleIntercept",
    "PhilipsScaleSlope", "UsePhilipsFloatNotDisplayScaling", "SliceThickness",
    "SpacingBetweenSlices", "SAR", "NumberOfAverages", "EchoNumber", "EchoTime",
    "RepetitionTime", "InversionTime", "MTState", "SpoilingState", "SpoilingType",
    "FlipAngle", "ExposureTime", "XRayTubeCurrent", "XRayExposure", "ConvolutionKernel",
    "PartialFourier", "BaseResolution", "PhaseEncodingPolarityGE", "ShimSetting",
    "PrescanReuseString", "DelayTime", "TxRefAmp", "PhaseResolution", "ReceiveCoilName",
    "ReceiveCoilActiveElements", "CoilString", "PulseSequenceDetails", "RefLinesPE",
    "CoilCombinationMethod", "ConsistencyInfo", "MatrixCoilMode",
    "MultibandAccelerationFactor", "PercentPhaseFOV", "PercentSampling", "EchoTrainLength",
    "PartialFourierDirection", "PhaseEncodingSteps", "AcquisitionMatrixPE", "ReconMatrixPE",
    "BandwidthPerPixelPhaseEncode", "ParallelReductionFactorInPlane",
    "ParallelAcquisitionTechnique", "WaterFatShift", "EstimatedEffectiveEchoSpacing",
    "EstimatedTotalReadoutTime", "EffectiveEchoSpacing", "DerivedVendorReportedEchoSpacing",
    "AcquisitionDuration", "TotalReadoutTime", "PixelBandwidth", "DwellTime",
    "PhaseEncodingAxis", "PhaseEncodingDirection", "SliceTiming",
    "ImageOrientationPatientDICOM", "ImageOrientationText",
    "InPlanePhaseEncodingDirectionDICOM", "ConversionSoftware", "ConversionSoftwareVersion",
)  # fmt: skip


def _first_header(volume: Volume) -> _Header | None:

    ref = volume.planes[0].ref
    try:
        ds = _dataset(volume, ref.uri)
    except Exception:  # noqa: BLE001 - the catalog row then is all there is
        return None
    return _Header(ds, ref.index)


def bids_sidecar(volume: Volume, *, reorient: bool | str = "auto") -> dict[str, Any]:
    """BIDS metadata of a volume, with the keys, units and readings dcm2niix writes.

    The first image's header is read (header only). Times are in seconds. After dcm2niix's keys
    come dicomflow's own: the series UID, every slice's SOP Instance UID and the geometry
    warnings. Differences from dcm2niix are listed in ``docs/volumes.md``.

    Parameters
    ----------
    volume : Volume
        The volume.
    reorient : bool or "auto"
        As given to :func:`write_nifti`: phase encoding and slice axes refer to that layout.

    Returns
    -------
    dict
        JSON-ready metadata.

    Examples
    --------
    >>> bids_sidecar(vol)["PhaseEncodingDirection"]    # doctest: +SKIP
    'j-'
    """
    from .._version import __version__

    info = volume.info
    out: dict[str, Any] = {}
    header = _first_header(volume)
    facts: dict[str, Any] = {}
    if header is not None:
        for key, keyword, convert in _STANDARD:
            _put(out, key, convert(header.get(keyword)))
        if out.get("ProtocolName") is None:  # dcm2niix: the series description stands in
            _put(out, "ProtocolName", out.get("SeriesDescription"))
        image_type = header.ds.get("ImageType") or header.get("FrameType")
        _put(out, "ImageType", _image_type(image_type))
        _put(out, "AcquisitionTime", _time_text(_acquisition_time(header, volume)))
        if (out.get("ImageType") or [""])[0] == "DERIVED":
            out["RawImage"] = False
        if out.get("ImagingFrequency") is None:
            _put(out, "ImagingFrequency", _number(header.get("TransmitterFrequency")))
        if "SP" in str(out.get("SequenceVariant") or "").split("\\"):
            out["SpoilingState"] = True
        _put(out, "AcquisitionDuration", _number(header.get("AcquisitionDuration")))
        for key, values in _OMIT.items():
            if key in out and out[key] in values:
                if key != "EchoNumber" or not any("series split" in w for w in volume.warnings):
                    del out[key]
        if out.get("Manufacturer") not in {name for _, name in _MANUFACTURERS}:
            out.pop("Manufacturer", None)  # dcm2niix names only the makers it knows
        manufacturer = out.get("Manufacturer")
        if manufacturer == "Siemens":
            _siemens(header, out, facts)
            image_type = out.get("ImageType") or []
            out["NonlinearGradientCorrection"] = any(t in ("DIS2D", "DIS3D") for t in image_type)
        elif manufacturer == "GE":
            _ge(header, out, facts)
        elif manufacturer == "Philips":
            _philips(header, out, facts)
        elif _text(header.get("Modality")) == "MR":
            _put(out, "CoilString", _text(header.get("ReceiveCoilName")))
        _enhanced(header, out)
        _derived_timing(volume, header, out, facts, reorient)
    else:
        _fallback(info, out)
    orientation = info.get("orientation")
    _put(out, "ImageOrientationPatientDICOM", _jsonable(orientation))
    if volume.info.get("GantryDetectorTilt") is not None:
        out["GantryDetectorTilt"] = info["GantryDetectorTilt"]
    out["ConversionSoftware"] = "dicomflow"
    out["ConversionSoftwareVersion"] = __version__
    ordered = {k: out[k] for k in _ORDER if k in out}
    ordered.update({k: v for k, v in out.items() if k not in ordered})
    ordered["SeriesInstanceUID"] = info.get("SeriesInstanceUID")
    ordered["SourceSOPInstanceUIDs"] = volume.sop_instance_uids
    ordered["GeometryWarnings"] = list(volume.warnings)
    return {k: _jsonable(v) for k, v in ordered.items() if v is not None}


def _acquisition_time(header: _Header, volume: Volume) -> Any:
    """The earliest acquisition time of the volume's first file (dcm2niix: first image)."""
    value = header.get("AcquisitionTime") or header.get("AcquisitionDateTime")
    if value is None:
        value = header.get("FrameAcquisitionDateTime")
    return value


def _enhanced(header: _Header, out: dict[str, Any]) -> None:
    if header.ds.get("PerFrameFunctionalGroupsSequence") is None:
        return
    mt = _text(header.get("MagnetizationTransfer"))
    if mt:
        out["MTState"] = mt.upper() != "NONE"
    spoiling = _text(header.get("Spoiling"))
    if spoiling and spoiling.upper() != "NONE":
        out["SpoilingState"] = True
        out["SpoilingType"] = spoiling
    _put(out, "PartialFourierDirection", _text(header.get("PartialFourierDirection")))
    technique = _text(header.get("ParallelAcquisitionTechnique"))
    _put(out, "ParallelAcquisitionTechnique", technique)
    duration = _number(header.get("FrameAcquisitionDuration"))
    rwv = header.get("RealWorldValueMappingSequence")
    units = rwv[0].get("MeasurementUnitsCodeSequence") if rwv else None
    if units and str(units[0].get("CodeValue")) == "Hz":
        out["Units"] = "Hz"
    if duration and "AcquisitionDuration" not in out:
        out["AcquisitionDuration"] = duration / 1000.0
    if out.get("EchoTime") is None:
        _put(out, "EchoTime", _ms_to_s(header.get("EffectiveEchoTime")))


def _derived_timing(
    volume: Volume, header: _Header, out: dict[str, Any], facts: dict[str, Any], reorient: Any
) -> None:
    """Matrices, echo spacing, readout time, phase encoding direction and slice timing."""
    rc = _matrices(header, volume, out)
    recon = out.get("ReconMatrixPE")
    bwpp = facts.get("bwpp")
    if bwpp:
        out["BandwidthPerPixelPhaseEncode"] = bwpp
    accel = facts.get("accel")
    if accel:
        out["ParallelReductionFactorInPlane"] = int(accel)
    ees = facts.get("ees")
    if bwpp and recon:
        ees = 1.0 / (float(bwpp) * float(recon))
    if ees and recon:
        out["EffectiveEchoSpacing"] = round(ees, 9)
        if bwpp:
            out["DerivedVendorReportedEchoSpacing"] = round(ees * (accel or 1), 9)
        out["TotalReadoutTime"] = round(ees * (float(recon) - 1), 9)
    wfs = facts.get("wfs")
    if facts.get("duration"):
        out["AcquisitionDuration"] = facts["duration"]
    frequency, train = out.get("ImagingFrequency"), facts.get("train")
    if wfs and recon and recon > 1 and frequency and train:
        # Philips: the water-fat shift (pixels) over the water-fat frequency difference
        # (3.4 ppm of the imaging frequency) is the readout across the echo train (+1 echo)
        echo_spacing = float(wfs) / (3.4 * float(frequency) * (float(train) + 1))
        readout = echo_spacing * float(train)
        out["EstimatedEffectiveEchoSpacing"] = round(readout / (float(recon) - 1), 12)
        out["EstimatedTotalReadoutTime"] = round(readout, 12)
    _put(out, "DwellTime", facts.get("dwell"))
    if rc is not None and volume.grid is not None:
        grid = volume.grid
        along = grid.row_direction if rc == "ROW" else grid.column_direction
        positive = facts.get("pe_positive")
        axis = _nifti_axis(volume, np.asarray(along, float), reorient)
        if axis is not None:
            if positive is None:
                out["PhaseEncodingAxis"] = axis[0]
            else:
                flip = axis.endswith("-") != (not positive)
                out["PhaseEncodingDirection"] = axis[0] + ("-" if flip else "")
    if str(out.get("MRAcquisitionType") or "").upper() != "3D":
        _put(out, "SliceTiming", _slice_timing(volume, header, facts))
    if rc is not None:
        out["InPlanePhaseEncodingDirectionDICOM"] = rc


def _fallback(info: Mapping[str, Any], out: dict[str, Any]) -> None:
    """The catalog's fields, when the header cannot be read again."""
    for key in ("Modality", "Manufacturer", "SeriesDescription", "ProtocolName",
                "BodyPartExamined", "PatientPosition", "SeriesNumber", "AcquisitionNumber",
                "SliceThickness", "SpacingBetweenSlices", "FlipAngle", "ConvolutionKernel",
                "MagneticFieldStrength", "ImageType"):  # fmt: skip
        _put(out, key, info.get(key))
    for key in ("EchoTime", "RepetitionTime"):
        if info.get(key) is not None:
            out[key] = float(info[key]) / 1000.0


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


# -- diffusion -------------------------------------------------------------------------------
def _frame_diffusion(ds: Any, frame: int) -> tuple[float | None, np.ndarray | None, str]:
    """(b-value, direction, space) of one image: space "lps" (patient) or "image"."""
    header = _Header(ds, frame)
    maker = _manufacturer(_text(ds.get("Manufacturer"))) or ""
    item = header.get("MRDiffusionSequence")
    if item:
        item = item[0]
        b = _number(item.get("DiffusionBValue"))
        vector = None
        direction = item.get("DiffusionGradientDirectionSequence")
        if direction:
            vector = _numbers(direction[0].get("DiffusionGradientOrientation"))
        if b is not None:
            return float(b), None if vector is None else np.asarray(vector, float), "lps"
    b = _number(ds.get("DiffusionBValue"))
    vector = _numbers(ds.get("DiffusionGradientOrientation"))
    if maker == "Siemens":
        image = _csa(header, 0x10)
        if image.get("B_value"):
            b = _number(image["B_value"][0])
            g = image.get("DiffusionGradientDirection")
            vector = [float(v) for v in g] if g and len(g) == 3 else vector
        elif b is None:
            b = _number(header.private(0x0019, "SIEMENS MR HEADER", 0x0C))
            vector = _numbers(header.private(0x0019, "SIEMENS MR HEADER", 0x0E)) or vector
        if b is not None:
            return float(b), None if vector is None else np.asarray(vector, float), "lps"
    if maker == "GE":
        slop = _numbers(header.private(0x0043, "GEMS_PARM_01", 0x39))
        if slop:
            gb = float(slop[0]) % 1e9 if slop[0] >= 1e9 else float(slop[0])
            parts = [_number(header.private(0x0019, "GEMS_ACQU_01", e)) for e in (0xBB, 0xBC, 0xBD)]
            gradient = None if any(p is None for p in parts) else np.asarray(parts, float)
            return gb, gradient, "image"
    if maker == "Philips":
        pb = _number(header.private(0x2001, "Philips Imaging DD 001", 0x03))
        parts = [
            _number(header.private(0x2005, "Philips MR Imaging DD 001", e))
            for e in (0xB0, 0xB1, 0xB2)
        ]
        if pb is not None:
            if any(p is None for p in parts):
                return float(pb), None, "lps"
            rl, ap, fh = (float(p) for p in parts)  # type: ignore[arg-type]
            return float(pb), np.array([rl, ap, fh]), "philips"
    if b is not None:
        return float(b), None if vector is None else np.asarray(vector, float), "lps"
    return None, None, ""


def diffusion_table(
    volume: Volume, *, reorient: bool | str = "auto"
) -> tuple[list[float], np.ndarray] | None:
    """b-values and gradient directions (``(3, n)``, NIfTI voxel axes, dcm2niix's convention)
    of each volume of a diffusion series, or None when the series has none.

    The first slice of each time point is read (header only). A b-value of 0 has the
    direction ``(0, 0, 0)``.
    """

    if volume.grid is None:
        return None
    planes = volume.planes
    slices = 1 if planes[0].mosaic else int(volume.info.get("slices") or len(planes))
    points = planes[::slices] if volume.is_4d else planes[:1]
    cache: dict[str, Any] = {}
    bvals: list[float] = []
    vectors: list[np.ndarray] = []
    spaces: set[str] = set()
    for plane in points:
        uri = plane.ref.uri
        if uri not in cache:
            cache[uri] = _dataset(volume, uri)
        b, vector, space = _frame_diffusion(cache[uri], plane.ref.index)
        if b is None:
            return None
        bvals.append(b)
        spaces.add(space)
        vectors.append(np.zeros(3) if vector is None or b == 0 else vector)
    if not any(bvals):  # every b-value 0 (GE writes (0043,1039) on every series): no diffusion
        return None
    patient = np.array(vectors, float).T  # (3, n)
    space = spaces.pop() if spaces else "lps"
    return bvals, _to_voxel_axes(volume, patient, space, reorient)


def _to_voxel_axes(volume: Volume, g: np.ndarray, space: str, reorient: Any) -> np.ndarray:
    """Directions in the NIfTI file's voxel axes, as dcm2niix writes them (FSL convention)."""
    from ._nifti import nifti_layout

    if space == "image":  # GE: along the image's axes already; dcm2niix negates x
        voxel = np.array([-g[0], g[1], g[2]], float)
        voxel[np.abs(voxel) < 1e-7] = 0.0
        return voxel + 0.0
    _, affine = nifti_layout(volume, reorient)
    if space == "philips":  # Philips' (RL, AP, FH): fitted against dcm2niix below
        space = "lps"
    ras = np.array([-g[0], -g[1], g[2]])
    m = affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0)
    voxel = m.T @ ras  # components along the file's i, j, k axes (orthonormal grid)
    if np.linalg.det(affine[:3, :3]) > 0:
        voxel[0] = -voxel[0]  # FSL: x is flipped for a neurological (det > 0) affine
    voxel[np.abs(voxel) < 1e-7] = 0.0
    return voxel + 0.0


def write_diffusion(volume: Volume, nifti_path: Any, *, reorient: bool | str = "auto") -> list[Any]:
    """Write ``.bval`` and ``.bvec`` beside ``nifti_path`` for a diffusion series.

    Returns the paths written (none when the volume has no diffusion attributes).
    """
    from pathlib import Path

    from ..dicom import atomic_path

    table = diffusion_table(volume, reorient=reorient)
    if table is None:
        return []
    bvals, bvecs = table
    path = Path(nifti_path)
    stem = path.name
    for suffix in (".nii.gz", ".nii"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
    written = []
    bval_text = " ".join(_g(b) for b in bvals) + "\n"
    bvec_text = "".join(" ".join(_g(v) for v in row) + "\n" for row in bvecs)
    for name, text in ((stem + ".bval", bval_text), (stem + ".bvec", bvec_text)):
        target = path.with_name(name)
        with atomic_path(target) as tmp:
            Path(tmp).write_text(text)
        written.append(target)
    return written


def _g(value: float) -> str:
    return f"{float(value):g}"


# -- names -----------------------------------------------------------------------------------
_FIELD = re.compile(r"\{([A-Za-z][A-Za-z0-9]*)\}")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def name_from_template(template: str, fields: Mapping[str, Any]) -> str:
    """An output name from a ``{Keyword}`` template, each value made safe for a file name.

    Characters other than letters, digits, ``.``, ``_`` and ``-`` become ``_`` (as dcm2niix
    does); a missing value is empty. ``ConfigError`` names a field that is not a keyword.
    """
    from pydicom.datadict import tag_for_keyword

    def value(match: re.Match[str]) -> str:
        key = match.group(1)
        if key not in fields and tag_for_keyword(key) is None:
            raise ConfigError(f"--name {template!r}: {{{key}}} is not a DICOM keyword")
        raw = fields.get(key)
        if raw is None:
            return ""
        if isinstance(raw, float) and raw.is_integer():
            raw = int(raw)
        if isinstance(raw, list | tuple):
            raw = "_".join(str(v) for v in raw)
        return _UNSAFE.sub("_", str(raw)).strip("_")

    name = _FIELD.sub(value, template)
    name = re.sub(r"_+", "_", _UNSAFE.sub("_", name.replace("/", "_"))).strip("._") or "volume"
    return name[:200]


def unique_names(names: Iterable[str]) -> list[str]:
    """Names made unique as dcm2niix does: the second of a name gets ``a``, then ``b``..."""
    seen: dict[str, int] = {}
    taken: set[str] = set()
    out = []
    for name in names:
        count = seen.get(name, 0)
        seen[name] = count + 1
        candidate = name
        while candidate in taken:  # the 2nd of a name gets "a", the 3rd "b"...
            candidate = name + _letters(count - 1)
            count += 1
        taken.add(candidate)
        out.append(candidate)
    return out


def _letters(n: int) -> str:
    """0 -> 'a', 25 -> 'z', 26 -> 'aa'..."""
    text = ""
    n += 1
    while n:
        n, rest = divmod(n - 1, 26)
        text = chr(ord("a") + rest) + text
    return text


def template_fields(volume: Volume) -> dict[str, Any]:
    """The values a name template may use: the first image's catalog row and header fields."""
    fields: dict[str, Any] = {}
    row = volume.planes[0].row
    for key, value in row.items():
        if key[:1].isupper() and not isinstance(value, dict | bytes):
            fields[key] = value
    for key, value in volume.info.items():
        if key[:1].isupper() and isinstance(value, str | int | float):
            fields.setdefault(key, value)
    fields["SeriesInstanceUID"] = row.get("series_instance_uid") or fields.get("SeriesInstanceUID")
    fields["StudyInstanceUID"] = row.get("study_instance_uid") or fields.get("StudyInstanceUID")
    fields["SOPInstanceUID"] = row.get("sop_instance_uid")
    return fields


# -- data type and scaling -------------------------------------------------------------------
def int16_mask(volume: Volume, stored: np.dtype) -> int | None:
    """The mask of the Bits Stored when unsigned 16-bit data is stored as int16, else None.

    Bits above Bits Stored are no pixel data (PS3.5 8.1.1; old files keep overlays there):
    dcm2niix clears them, and so does the NIfTI writer, so that the values fit int16."""
    if np.dtype(stored) != np.int16 or volume.array.dtype != np.uint16:
        return None
    bits = max(int(p.ref.fmt.bits_stored or 16) for p in volume.planes)
    return (1 << bits) - 1 if bits <= 15 else None


def masked(frame: np.ndarray, mask: int | None) -> np.ndarray:
    """``frame`` with the bits outside ``mask`` cleared (unchanged when ``mask`` is None)."""
    return frame if mask is None else np.bitwise_and(frame, np.asarray(mask, frame.dtype))


def nifti_storage(volume: Volume, dtype: np.dtype, scale: tuple[float, float] | None):
    """The stored data type and ``(scl_slope, scl_inter)`` dcm2niix chooses for stored values.

    * Unsigned 16-bit values with at most 15 bits stored (Bits Stored) fit ``int16``, which
      dcm2niix writes (its ``-l o`` default converts ``uint16`` to ``int16`` whenever the
      values allow it); dicomflow decides from Bits Stored, without reading the voxels first,
      and clears the bits above Bits Stored on the way, as dcm2niix does.
    * Philips: dcm2niix's default ``-p y`` stores the precise floating-point value, not the
      displayed one: ``scl_slope = 1 / SS`` and ``scl_inter = RI / (RS * SS)`` from the scale
      slope SS (2005,100E) and the display slope RS and intercept RI.
    """
    dtype = np.dtype(dtype)
    bits = {int(p.ref.fmt.bits_stored or 16) for p in volume.planes}  # every file of the stack
    if dtype == np.uint16 and max(bits) <= 15:
        dtype = np.dtype(np.int16)  # the bits above Bits Stored cleared: see int16_mask
    if dtype.kind in "iu" and volume.rescale is not None:
        precise = _philips_precise(volume)
        if precise is not None:
            scale = precise
    return dtype, scale


def _philips_precise(volume: Volume) -> tuple[float, float] | None:
    header = _first_header(volume)
    if header is None:
        return None
    found = philips_scaling(header.ds, header)
    if found is None:
        return None
    rs, ri, ss = found
    private = header.get("RescaleSlope") is None  # RS, RI from (2005,140A), (2005,1409)
    if private and volume.rescale != (1.0, 0.0):
        return None
    if not private and (rs, ri) != tuple(volume.rescale or ()):
        return None  # the volume is not scaled as the first image says: leave it
    return 1.0 / ss, ri / (rs * ss)
