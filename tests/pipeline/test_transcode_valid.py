"""Transcode outputs a validator accepts (issue 11, item 8), on corpus files: data sets stored
without File Meta are transcoded, SOP UIDs found only in the File Meta are used, UIDs that are
not UIDs are refused, lossy JPEG decodes to RGB as DCMTK's dcmdjpeg writes it, and Icon Image
Sequence pixels are stored as the output's transfer syntax allows."""

from __future__ import annotations

import importlib.util
import io
import os
import shutil
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset

import dicomflow as dfl
from dicomflow.dicom import encode_part10
from dicomflow.pipeline import Instance, Transcode, run_stages, transcode_dataset

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("DICOMFLOW_SHARED", REPO.parent / "shared"))
CORPUS = SHARED / "corpus"
DCMDJPEG = shutil.which("dcmdjpeg")
#: lossy JPEG colour files of the corpus: YBR_FULL and YBR_FULL_422 (subsampled) ones
LOSSY_JPEG_COLOUR = [
    "transfer-syntax/jpeg-baseline/SC_rgb_jpeg_dcmtk.dcm",
    "transfer-syntax/jpeg-baseline/SC_rgb_dcmtk_+eb+cy+s2.dcm",
    "transfer-syntax/jpeg-baseline/SC_rgb_dcmtk_+eb+cy+n1.dcm",
    "transfer-syntax/jpeg-extended/JPEGExtended_3s_1f_u_08_08.dcm",
    "transfer-syntax/explicit-vr-le/examples_ybr_color.dcm",
    "modality/XC/fo-dicom_JPEGwithIcon.dcm",
]

pytestmark = [
    pytest.mark.skipif(not CORPUS.is_dir(), reason=f"corpus not found at {CORPUS}"),
    pytest.mark.filterwarnings("ignore::UserWarning"),
]


def _read(path: Path | bytes) -> pydicom.FileDataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(io.BytesIO(path) if isinstance(path, bytes) else path, force=True)


def _written(ds: Dataset) -> pydicom.FileDataset:
    """``ds`` as the Part 10 folder sink writes it, read back."""
    return _read(encode_part10(ds))


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """The inputs ``benchmarks/dciodvfy_outputs.py`` generates (encapsulated icons), imported
    by path: ``benchmarks/`` is not a package."""
    name = "dicomflow_benchmarks_dciodvfy_outputs"
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / "dciodvfy_outputs.py")
    assert spec and spec.loader
    module: ModuleType = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
        yield module.generate(tmp_path_factory.mktemp("generated"))
    finally:
        del sys.modules[name]


# -- data sets without File Meta ---------------------------------------------------------------


@pytest.mark.parametrize("target", ["explicit-vr-le", "rle", "jpeg-ls-lossless"])
def test_a_data_set_without_file_meta_is_transcoded(target: str) -> None:
    """CR-MONO1-10-chest: no preamble, no File Meta, implicit VR (ACR-NEMA style)."""
    path = CORPUS / "broken/CR-MONO1-10-chest"
    source = _read(path)
    assert "TransferSyntaxUID" not in source.file_meta
    outcome = run_stages([Transcode(target)], Instance(str(path)))
    assert outcome.done, outcome.reason
    back = _written(outcome.instance.dataset)
    assert back.file_meta.TransferSyntaxUID == dfl.Transcode(target).uid
    assert back.file_meta.MediaStorageSOPInstanceUID == source.SOPInstanceUID
    source.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2"  # how pydicom read it
    np.testing.assert_array_equal(back.pixel_array, source.pixel_array)


@pytest.mark.parametrize(
    "relpath", ["modality/RTSTRUCT/rtstruct.dcm", "broken/ExplVR_BigEndNoMeta.dcm"]
)
def test_raw_data_sets_without_pixels_keep_their_values(relpath: str) -> None:
    """Implicit VR little endian and explicit VR big endian data sets without File Meta."""
    source = _read(CORPUS / relpath)
    outcome = run_stages([Transcode("explicit-vr-le")], Instance(str(CORPUS / relpath)))
    assert outcome.done, outcome.reason
    back = _written(outcome.instance.dataset)
    assert back.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    for element in source:
        if element.VR != "SQ":
            assert back[element.tag].value == element.value, element


def test_encapsulated_pixels_without_a_transfer_syntax_are_refused() -> None:
    """Nothing says how such pixels were compressed: a clear reason, not a guess."""
    ds = _read(CORPUS / "transfer-syntax/jpeg-ls-lossless/MR_small_jpeg_ls_lossless.dcm")
    raw = io.BytesIO()
    ds.file_meta = FileMetaDataset()
    pydicom.dcmwrite(raw, ds, implicit_vr=False, little_endian=True)  # no preamble, no meta
    with pytest.raises(dfl.TranscodeError, match="encapsulated Pixel Data without"):
        transcode_dataset(_read(raw.getvalue()), "explicit-vr-le")


# -- SOP UIDs ----------------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["rle", "explicit-vr-le"])
def test_uids_only_in_file_meta_are_used(target: str) -> None:
    ds = _read(CORPUS / "transfer-syntax/explicit-vr-le/CT_small.dcm")
    sop_class, sop_instance = ds.SOPClassUID, ds.SOPInstanceUID
    del ds.SOPClassUID, ds.SOPInstanceUID
    back = _written(transcode_dataset(ds, target))
    assert back.file_meta.MediaStorageSOPClassUID == sop_class
    assert back.file_meta.MediaStorageSOPInstanceUID == sop_instance


def test_a_lossy_output_of_meta_only_uids_is_a_new_derived_instance() -> None:
    ds = _read(CORPUS / "transfer-syntax/explicit-vr-le/CT_small.dcm")
    sop_class, sop_instance = ds.SOPClassUID, ds.SOPInstanceUID
    del ds.SOPClassUID, ds.SOPInstanceUID
    back = _written(transcode_dataset(ds, "jpeg2000", lossy=True))
    assert back.SOPInstanceUID != sop_instance and back.SOPInstanceUID.startswith("2.25.")
    assert back.file_meta.MediaStorageSOPInstanceUID == back.SOPInstanceUID
    reference = back.SourceImageSequence[-1]
    assert reference.ReferencedSOPInstanceUID == sop_instance
    assert reference.ReferencedSOPClassUID == sop_class


@pytest.mark.parametrize("bad", ["1.2.840.113619.2.x", "1.2.840 113619", "1." + "2" * 70])
def test_invalid_uids_fail_the_instance_and_leave_the_data_set(bad: str) -> None:
    """Transcode refuses, with a reason in the manifest, rather than copy garbage into the
    File Meta; the data set is not corrected either (its UIDs are its identity)."""
    ds = _read(CORPUS / "transfer-syntax/explicit-vr-le/CT_small.dcm")
    ds.SOPInstanceUID = bad
    outcome = run_stages([Transcode("rle")], Instance.from_dataset(ds))
    assert outcome.status == "failed" and outcome.stage == "transcode"
    assert outcome.exception == "FileMetaError"
    assert "SOP Instance UID" in outcome.reason and "not a valid UID" in outcome.reason
    assert ds.SOPInstanceUID == bad and ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"


# -- lossy JPEG colour -------------------------------------------------------------------------


@pytest.mark.skipif(DCMDJPEG is None, reason="DCMTK's dcmdjpeg is not installed")
@pytest.mark.parametrize("target", ["explicit-vr-le", "rle", "jpeg-ls-lossless"])
@pytest.mark.parametrize("relpath", LOSSY_JPEG_COLOUR)
def test_lossy_jpeg_decodes_to_rgb_as_dcmdjpeg_does(relpath: str, target: str, tmp_path) -> None:
    """Label and samples agree, and agree with DCMTK: RGB, the values dcmdjpeg writes."""
    source = CORPUS / relpath
    assert _read(source).PhotometricInterpretation in ("YBR_FULL", "YBR_FULL_422")
    reference = tmp_path / "dcmdjpeg.dcm"
    subprocess.run([DCMDJPEG, str(source), str(reference)], check=True, capture_output=True)
    expected = _read(reference)
    assert expected.PhotometricInterpretation == "RGB"
    back = _written(transcode_dataset(_read(source), target))
    assert back.PhotometricInterpretation == "RGB" and back.PlanarConfiguration == 0
    # the two IJG-derived decoders may round the inverse DCT differently by one level
    difference = back.pixel_array.astype(int) - expected.pixel_array.astype(int)
    assert np.abs(difference).max() <= 1
    assert back.LossyImageCompression == "01"


def test_native_ybr_is_not_converted() -> None:
    """Only lossy JPEG's colour transform is undone: uncompressed YBR_FULL_422 becomes
    YBR_FULL (every sample at full size), its values kept."""
    ds = _read(CORPUS / "transfer-syntax/explicit-vr-le/SC_ybr_full_422_uncompressed.dcm")
    back = _written(transcode_dataset(ds, "rle"))
    assert back.PhotometricInterpretation == "YBR_FULL"


# -- Icon Image Sequence -----------------------------------------------------------------------


def _icon_pixels(item: Dataset, syntax: str) -> np.ndarray:
    """An icon item's pixels, decoded by pydicom alone."""
    icon = Dataset(dict(item.items()))
    icon.file_meta = FileMetaDataset()
    icon.file_meta.TransferSyntaxUID = syntax
    return icon.pixel_array


@pytest.mark.parametrize(
    "name, target",
    [
        ("icon-jpeg-in-jpeg.dcm", "explicit-vr-le"),
        ("icon-jpeg-in-jpeg.dcm", "rle"),
        ("icon-rle-in-rle.dcm", "explicit-vr-le"),
        ("icon-rle-in-rle.dcm", "jpeg-ls-lossless"),
    ],
)
def test_an_encapsulated_icon_is_stored_native_in_another_syntax(generated, name, target):
    source = _read(generated[name])
    source_icon = source.IconImageSequence[0]
    assert source_icon["PixelData"].is_undefined_length
    expected = _icon_pixels(source_icon, source.file_meta.TransferSyntaxUID)
    back = _written(transcode_dataset(source, target))
    icon = back.IconImageSequence[0]
    assert not icon["PixelData"].is_undefined_length  # native: PS3.5 8.2
    assert (icon.Rows, icon.Columns, icon.BitsAllocated) == (
        source_icon.Rows,
        source_icon.Columns,
        8,
    )
    assert icon.PhotometricInterpretation == "MONOCHROME2"
    np.testing.assert_array_equal(_icon_pixels(icon, "1.2.840.10008.1.2.1"), expected)


def test_an_encapsulated_icon_stays_when_the_syntax_does(generated) -> None:
    source = _read(generated["icon-rle-in-rle.dcm"])
    out = transcode_dataset(source, "rle")
    assert out.IconImageSequence[0].PixelData == source.IconImageSequence[0].PixelData


@pytest.mark.parametrize("target", ["explicit-vr-le", "jpeg-ls-lossless"])
def test_a_native_icon_is_kept_as_it_is(target: str) -> None:
    """The corpus JPEG file with a native PALETTE COLOR icon: valid in any syntax."""
    source = _read(CORPUS / "modality/XC/fo-dicom_JPEGwithIcon.dcm")
    back = _written(transcode_dataset(source, target))
    icon, source_icon = back.IconImageSequence[0], source.IconImageSequence[0]
    assert icon.PixelData == source_icon.PixelData
    assert icon.PhotometricInterpretation == "PALETTE COLOR"


def test_a_big_endian_icon_becomes_little_endian() -> None:
    """An OW icon of a big endian file: the image's samples and the icon's both swapped."""
    source = _read(CORPUS / "transfer-syntax/explicit-vr-be/MR_small_bigendian.dcm")
    icon = Dataset()
    icon.SamplesPerPixel, icon.PhotometricInterpretation = 1, "MONOCHROME2"
    icon.Rows = icon.Columns = 8
    icon.BitsAllocated, icon.BitsStored, icon.HighBit, icon.PixelRepresentation = 16, 12, 11, 0
    values = (np.arange(64) * 50).astype(">u2")
    icon.PixelData = values.tobytes()
    icon["PixelData"].VR = "OW"
    source.IconImageSequence = [icon]
    source = _read(encode_part10(source))  # written and read back big endian
    back = _written(transcode_dataset(source, "explicit-vr-le"))
    got = np.frombuffer(back.IconImageSequence[0].PixelData, "<u2")
    np.testing.assert_array_equal(got, values.astype("<u2"))
    np.testing.assert_array_equal(back.pixel_array, source.pixel_array)
