"""A small CT series written with pydicom, and its dicomflow volume, for the derived tests."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid

import dicomflow as dfl

CORPUS = Path(
    os.environ.get(
        "DICOMFLOW_CORPUS",
        Path(os.environ.get("DICOMFLOW_SHARED", Path(__file__).resolve().parents[3] / "shared"))
        / "corpus",
    )
)

#: the synthetic series: 6 slices of 20 x 24 pixels, 0.8 x 0.7 mm, 2.5 mm apart, origin below
SLICES, ROWS, COLUMNS = 6, 20, 24
SPACING = (0.8, 0.7)  # row spacing, column spacing
STEP = 2.5
ORIGIN = np.array([-30.0, -40.0, 100.0])


def write_ct_series(
    folder: Path,
    *,
    shuffle: bool = True,
    modality: str = "CT",
    orientation: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
) -> list[Path]:
    """Write the series (instance files in a shuffled order, so that sorting matters).

    ``modality`` is CT or MR; ``orientation`` is the Image Orientation (Patient).
    """
    normal = np.cross(orientation[:3], orientation[3:])
    sop_class = MRImageStorage if modality == "MR" else CTImageStorage
    folder.mkdir(parents=True, exist_ok=True)
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    paths = []
    order = [3, 0, 5, 1, 4, 2] if shuffle else list(range(SLICES))
    for n, k in enumerate(order):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = sop_class
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        path = folder / f"ct{n}.dcm"
        ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID = sop_class
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Test^CT", "P1", "", "O"
        ds.StudyDate, ds.StudyTime, ds.AccessionNumber, ds.ReferringPhysicianName = (
            "20240101",
            "120000",
            "A1",
            "",
        )
        ds.StudyID, ds.SeriesNumber, ds.InstanceNumber = "1", 1, k + 1
        ds.Modality, ds.Manufacturer, ds.PositionReferenceIndicator = modality, "dicomflow-test", ""
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImagePositionPatient = [float(v) for v in ORIGIN + normal * k * STEP]
        ds.ImageOrientationPatient = list(orientation)
        ds.PixelSpacing = list(SPACING)
        ds.SliceThickness = STEP
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = ROWS, COLUMNS
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope, ds.KVP = 0, 1, 120
        ds.AcquisitionNumber = 1
        pixels = np.arange(ROWS * COLUMNS, dtype=np.int16).reshape(ROWS, COLUMNS) + 100 * k
        ds.PixelData = pixels.tobytes()
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def ct_series(tmp_path_factory) -> tuple[list[Path], object]:
    """(instance paths, dicomflow Volume) of the synthetic CT series."""
    folder = tmp_path_factory.mktemp("ct")
    paths = write_ct_series(folder)
    vols = dfl.volumes(dfl.scan([str(p) for p in paths], workers=1))
    assert len(vols) == 1
    return paths, vols[0]
