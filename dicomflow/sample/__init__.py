"""A small, deterministic sample DICOM archive with identifying values planted in it.

:func:`make_sample` writes four patients, six studies and ten series (about 130 files) into a
folder laid out like a scanner export (``PAT001/STU001/SER001/IM00001.dcm``): CT stacks (int16,
Hounsfield rescale), MR stacks (uint16, T1 and T2 style, one oblique), one multi-frame Enhanced CT,
one series in Implicit VR Little Endian, one in RLE Lossless, private blocks (one with a private
sequence of undefined length), three broken files, and identifying values in the places that
de-identification tools are known to miss. The same seed gives byte-identical files on every
machine: every UID, date, name and pixel comes from the seed, never from the clock.

The header and pixel builders (:func:`build_header`, :func:`set_instance`,
:func:`phantom_slice`) are also what ``benchmarks/synth.py`` uses to write archives of any size.

Examples
--------
>>> import tempfile
>>> from dicomflow.sample import make_sample
>>> info = make_sample(tempfile.mkdtemp())
>>> len(info.files), len(info.broken)
(129, 3)
>>> info.planted["PAT002 PatientName"]
'MÜLLER^JÜRGEN'
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import EnhancedCTImageStorage, ImplicitVRLittleEndian, RLELossless

from ._headers import (
    INSTANCE_KEYWORDS,
    _item,
    build_header,
    phantom_slice,
    set_instance,
    slice_offset,
    slice_position,
)
from ._model import (
    _PATIENT_PLANTED,
    _SERIES_PLANTED,
    _STUDY_PLANTED,
    PLANTED_KEYWORDS,
    PLANTED_PRIVATE,
    Patient,
    SampleInfo,
    Series,
    Study,
    _ds,
    derive_uid,
    make_patient,
    make_series,
    make_study,
    seeded_rng,
)
from ._mutants import MUTATIONS, Mutant, mutants

__all__ = [
    "INSTANCE_KEYWORDS",
    "MUTATIONS",
    "PLANTED_KEYWORDS",
    "PLANTED_PRIVATE",
    "Mutant",
    "Patient",
    "SampleInfo",
    "Series",
    "Study",
    "build_header",
    "derive_uid",
    "make_patient",
    "make_sample",
    "make_series",
    "make_study",
    "mutants",
    "phantom_slice",
    "seeded_rng",
    "set_instance",
    "slice_offset",
    "slice_position",
]


def _encode(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


_IMAGE_PIXEL = (
    "Rows", "Columns", "SamplesPerPixel", "BitsAllocated", "BitsStored", "PixelRepresentation",
    "PhotometricInterpretation", "NumberOfFrames",
)  # fmt: skip


def _set_pixels(ds: Dataset, series: Series, pixels: np.ndarray) -> None:
    if series.transfer_syntax == RLELossless:
        from pydicom.encaps import encapsulate

        from ..codecs import PixelFormat, encode_frame

        row = {k: ds.get(k) for k in _IMAGE_PIXEL} | {"transfer_syntax_uid": RLELossless}
        fmt = PixelFormat.from_row(row)
        frames = pixels if fmt.number_of_frames > 1 else pixels[np.newaxis]
        # pydicom's own numpy RLE encoder, frame by frame: the bytes do not depend on what
        # else is installed
        encoded = [encode_frame(frame, fmt, RLELossless, encoder="pydicom") for frame in frames]
        ds.PixelData = encapsulate(encoded)
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True
        ds.file_meta.TransferSyntaxUID = RLELossless
    else:
        ds.PixelData = pixels.tobytes()


def _stack_instance(series: Series, index: int, header: Dataset) -> bytes:
    rng = seeded_rng(series.seed, "pixels", series.folder, index)
    set_instance(header, series, index)
    _set_pixels(header, series, phantom_slice(series, slice_offset(series, index), rng))
    return _encode(header)


def _enhanced_ct(series: Series) -> bytes:
    """Return the encoded multi-frame Enhanced CT object of ``series`` (one frame per slice)."""
    ds = build_header(series)
    set_instance(ds, series, 0)
    shared = Dataset()
    shared.PixelMeasuresSequence = [
        _item(
            PixelSpacing=ds.PixelSpacing,
            SliceThickness=ds.SliceThickness,
            SpacingBetweenSlices=ds.SpacingBetweenSlices,
        )
    ]
    shared.PlaneOrientationSequence = [_item(ImageOrientationPatient=ds.ImageOrientationPatient)]
    shared.PixelValueTransformationSequence = [
        _item(RescaleIntercept=ds.RescaleIntercept, RescaleSlope=ds.RescaleSlope, RescaleType="HU")
    ]
    shared.FrameVOILUTSequence = [_item(WindowCenter=ds.WindowCenter, WindowWidth=ds.WindowWidth)]
    shared.CTImageFrameTypeSequence = [_item(FrameType=["ORIGINAL", "PRIMARY", "AXIAL", "NONE"])]
    moved = (
        "PixelSpacing SliceThickness SpacingBetweenSlices SliceLocation ImageOrientationPatient "
        "ImagePositionPatient RescaleIntercept RescaleSlope RescaleType WindowCenter WindowWidth "
        "WindowCenterWidthExplanation ImageType"
    )
    for keyword in moved.split():
        delattr(ds, keyword)
    dimensions = derive_uid(series.seed, "dimensions", series.folder)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = EnhancedCTImageStorage
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL", "NONE"]
    ds.ContentQualification = "PRODUCT"
    ds.PresentationLUTShape = "IDENTITY"
    ds.NumberOfFrames = series.slices
    ds.SharedFunctionalGroupsSequence = [shared]
    ds.DimensionOrganizationType = "3D"
    ds.DimensionOrganizationSequence = [_item(DimensionOrganizationUID=dimensions)]
    ds.DimensionIndexSequence = [
        _item(
            DimensionIndexPointer=pointer,
            FunctionalGroupPointer=0x00209111,
            DimensionOrganizationUID=dimensions,
        )
        for pointer in (0x00209056, 0x00209057)
    ]
    frames, per_frame = [], []
    for index in range(series.slices):
        position = slice_position(series, index)
        per_frame.append(
            _item(
                FrameContentSequence=[
                    _item(
                        StackID="1",
                        InStackPositionNumber=index + 1,
                        DimensionIndexValues=[1, index + 1],
                    )
                ],
                PlanePositionSequence=[_item(ImagePositionPatient=[_ds(p) for p in position])],
            )
        )
        rng = seeded_rng(series.seed, "pixels", series.folder, index)
        frames.append(phantom_slice(series, slice_offset(series, index), rng))
    ds.PerFrameFunctionalGroupsSequence = per_frame
    ds.PixelData = np.stack(frames).tobytes()
    return _encode(ds)


def planted_values(series: Series) -> dict[str, str]:
    """Return the identifying values in every file of ``series``, keyed ``"<folder> <what>"``."""
    study, patient = series.study, series.study.patient
    values = {f"{patient.folder} {key}": getattr(patient, key) for key in _PATIENT_PLANTED}
    values[f"{patient.folder} OtherPatientIDsSequence PatientID"] = patient.OtherPatientID
    values |= {f"{study.folder} {key}": getattr(study, key) for key in _STUDY_PLANTED}
    values[f"{study.folder} RequestAttributesSequence RequestedProcedureID"] = (
        study.RequestedProcedureID
    )
    values[f"{study.folder} RequestAttributesSequence ScheduledProcedureStepID"] = (
        study.ScheduledProcedureStepID
    )
    values[f"{study.folder} ReferencedStudySequence ReferencedSOPInstanceUID"] = (
        study.prior_study_uid
    )
    values[f"{series.folder} DateOfLastCalibration (= StudyDate)"] = study.StudyDate
    values[f"{series.folder} SeriesDate"] = study.StudyDate
    values[f"{series.folder} AcquisitionDateTime"] = f"{study.StudyDate}{series.SeriesTime}.000000"
    values |= {f"{series.folder} {key}": getattr(series, key) for key in _SERIES_PLANTED}
    values[f"{series.folder} private (0011,xx10) DICOMFLOW SAMPLE"] = patient.PatientName
    values[f"{series.folder} private sequence (0011,xx12) note"] = series.private_note
    return values


def _sample_series(seed: int) -> list[Series]:
    """Return the ten series of the sample archive, in folder order."""
    pat = [make_patient(seed, index) for index in range(4)]
    chest = make_study(pat[0], 0, seed=seed, exam="CT CHEST")
    brain = make_study(pat[0], 1, seed=seed, exam="MR BRAIN")
    abdomen = make_study(pat[1], 0, seed=seed, exam="CT ABDOMEN")
    knee = make_study(pat[2], 0, seed=seed, exam="MR KNEE")
    head = make_study(pat[3], 0, seed=seed, exam="CT HEAD")
    follow_up = make_study(pat[3], 1, seed=seed, exam="CT HEAD", prior=head)
    return [
        make_series(chest, 0, seed=seed, kind="CT", slices=20, matrix=128),
        make_series(
            chest, 1, seed=seed, kind="CT", slices=12, transfer_syntax=ImplicitVRLittleEndian
        ),
        make_series(brain, 0, seed=seed, kind="T1", slices=16),
        make_series(brain, 1, seed=seed, kind="T2", slices=16),
        make_series(abdomen, 0, seed=seed, kind="CT", slices=20, transfer_syntax=RLELossless),
        make_series(abdomen, 1, seed=seed, kind="CT", slices=8, enhanced=True),
        make_series(knee, 0, seed=seed, kind="T1", slices=12),
        make_series(knee, 1, seed=seed, kind="T2", slices=12),
        make_series(head, 0, seed=seed, kind="CT", slices=10),
        make_series(follow_up, 0, seed=seed, kind="CT", slices=10),
    ]


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _truncated(series: Series) -> bytes:
    """Return an extra instance of ``series`` cut inside its header, in the private sequence."""
    data = _stack_instance(series, series.slices, build_header(series))
    return data[: data.index(b"\x11\x00\x12\x10") + 16]


def _write_broken(root: Path, series: list[Series]) -> list[Path]:
    truncated, empty, text = series[0], series[7], series[9]
    return [
        _write(
            root / truncated.folder / f"IM{truncated.slices + 1:05d}.dcm", _truncated(truncated)
        ),
        _write(root / empty.folder / f"IM{empty.slices + 1:05d}.dcm", b""),
        _write(
            root / text.folder / f"IM{text.slices + 1:05d}.dcm",
            b"Export log: 10 images sent to PACS, 0 failed.\nThis file is not DICOM.\n",
        ),
    ]


def make_sample(dest: str | Path, *, seed: int = 0) -> SampleInfo:
    """Write the sample archive under ``dest`` and say what was written.

    Parameters
    ----------
    dest : str or Path
        A local folder, created if missing. Files already there with the same names are
        overwritten; others are left alone.
    seed : int, optional
        Everything (UIDs, names, dates, pixels) derives from it: the same seed writes
        byte-identical files on every machine.

    Returns
    -------
    SampleInfo
        The files written, the broken ones, and every identifying value planted.

    Examples
    --------
    >>> import tempfile
    >>> info = make_sample(tempfile.mkdtemp(), seed=1)
    >>> sorted({path.parts[-4] for path in info.files})
    ['PAT001', 'PAT002', 'PAT003', 'PAT004']
    """
    root = Path(dest)
    files: list[Path] = []
    planted: dict[str, str] = {}
    planted_in: dict[str, list[Path]] = {}
    all_series = _sample_series(seed)
    for series in all_series:
        if series.enhanced:
            written = [_write(root / series.folder / "IM00001.dcm", _enhanced_ct(series))]
        else:
            header = build_header(series)
            written = [
                _write(
                    root / series.folder / f"IM{index + 1:05d}.dcm",
                    _stack_instance(series, index, header),
                )
                for index in range(series.slices)
            ]
        files += written
        for key, value in planted_values(series).items():
            planted[key] = value
            planted_in.setdefault(key, []).extend(written)
    broken = _write_broken(root, all_series)
    return SampleInfo(
        root=root,
        files=tuple(sorted(files)),
        broken=tuple(broken),
        planted=planted,
        planted_in={key: tuple(paths) for key, paths in planted_in.items()},
    )


def _main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m dicomflow.sample", description=__doc__.split("\n")[0]
    )
    parser.add_argument("dest", help="folder to write the sample archive into")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    info = make_sample(args.dest, seed=args.seed)
    print(f"{len(info.files)} files and {len(info.broken)} broken files under {info.root}")


if __name__ == "__main__":
    _main()
