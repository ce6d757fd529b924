"""Transcode over the real corpus: lossless targets give back every pixel, outputs are valid
Part 10 files (pydicom, DCMTK's dcmdump and decoders read them), lossy targets only on request and
then marked as PS3.3 asks, undecodable sources fail with a clear error."""

from __future__ import annotations

import importlib
import io
import json
import os
import pickle
import shutil
import subprocess
import warnings
from functools import cache
from pathlib import Path

import numpy as np
import pydicom
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import generate_frames, parse_basic_offsets
from pydicom.uid import ExplicitVRLittleEndian, RLELossless, SecondaryCaptureImageStorage

from dicomflow.dicom import encode_part10
from dicomflow.errors import ConfigError
from dicomflow.pipeline import (
    TARGETS,
    Instance,
    Transcode,
    TranscodeError,
    encoders,
    transcode_dataset,
)

transcode_module = importlib.import_module("dicomflow.pipeline._transcode")  # white-box tests
SHARED = Path(os.environ.get("DICOMFLOW_SHARED", Path(__file__).resolve().parents[3] / "shared"))
CORPUS = SHARED / "corpus"
LOSSLESS = [
    "implicit-vr-le",
    "explicit-vr-le",
    "deflated",
    "rle",
    "jpeg-ls-lossless",
    "jpeg2000-lossless",
    "htj2k-lossless",
]
LOSSY = ["jpeg-baseline", "jpeg2000", "jpeg-ls-near-lossless"]
NATIVE = {"implicit-vr-le", "explicit-vr-le", "deflated"}
#: DCMTK decoders, an independent check of what we encode (DCMTK has no JPEG 2000 decoder)
DCMTK_DECODER = {"rle": "dcmdrle", "jpeg-ls-lossless": "dcmdjpls", "jpeg-baseline": "dcmdjpeg"}
_TEXT = {".txt", ".csv", ".md", ".json", ".nii", ".gz", ".rst", ".bval", ".bvec"}

pytestmark = [
    pytest.mark.skipif(not CORPUS.is_dir(), reason=f"corpus not found at {CORPUS}"),
    pytest.mark.filterwarnings("ignore::UserWarning"),
]


def _read(path: Path, **kwargs) -> Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return dcmread(path, force=True, **kwargs)


def representatives() -> list[str]:
    """The smallest file of each kind of image in the corpus: source transfer syntax,
    photometric interpretation, bits allocated/stored, signedness, samples, multi-frame."""
    if not CORPUS.is_dir():
        return []
    smallest: dict[tuple, tuple[int, str]] = {}
    for path in sorted(CORPUS.rglob("*")):
        if not path.is_file() or path.suffix.lower() in _TEXT:
            continue
        try:
            ds = _read(path, defer_size="1 KB")
            ts = str(ds.file_meta.get("TransferSyntaxUID", ""))
        except Exception:  # noqa: BLE001 - not DICOM
            continue
        if "PixelData" not in ds or not ts:
            continue
        keywords = ("PhotometricInterpretation", "BitsAllocated", "BitsStored")
        key = (ts, *(str(ds.get(k)) for k in keywords), str(ds.get("PixelRepresentation")))
        key += (str(ds.get("SamplesPerPixel")), str(ds.get("NumberOfFrames", 1)) != "1")
        size = path.stat().st_size
        if key not in smallest or size < smallest[key][0]:
            smallest[key] = (size, str(path.relative_to(CORPUS)))
    return sorted(name for _, name in smallest.values())


REPRESENTATIVES = representatives()


@cache
def source(relpath: str) -> tuple[Dataset, np.ndarray]:
    """A corpus dataset and its pixels as pydicom decodes them; skip what pydicom cannot
    decode, or cannot write back even unchanged."""
    ds = _read(CORPUS / relpath)
    try:
        reference = ds.pixel_array
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"pydicom cannot decode it: {str(exc)[:80]}")
    if not ds.get("SOPInstanceUID") or not ds.get("SOPClassUID"):
        pytest.skip("no SOP Instance/Class UID: not storable as a Part 10 file")
    try:
        ds.save_as(io.BytesIO())
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"pydicom cannot write it back unchanged: {str(exc)[:80]}")
    return ds, reference


def dcmdump_ok(path: Path) -> None:
    if shutil.which("dcmdump") is None:
        return
    done = subprocess.run(["dcmdump", "-q", str(path)], capture_output=True)
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-500:]


def same_pixels(got: np.ndarray, want: np.ndarray) -> None:
    assert got.shape == want.shape
    assert (got.dtype.kind, got.dtype.itemsize) == (want.dtype.kind, want.dtype.itemsize)
    assert np.array_equal(got, want)


def write(tmp_path: Path, ds: Dataset, name: str = "out.dcm") -> Path:
    path = tmp_path / name
    path.write_bytes(encode_part10(ds))
    return path


def dcmtk_decoded(tmp_path: Path, path: Path, target: str) -> np.ndarray | None:
    tool = shutil.which(DCMTK_DECODER.get(target, ""))
    if tool is None:
        return None
    out = tmp_path / "dcmtk.dcm"
    done = subprocess.run([tool, str(path), str(out)], capture_output=True)
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-500:]
    return dcmread(out).pixel_array


# -- lossless: every kind of corpus image, every target ----------------------------------------


def test_corpus_has_the_kinds_we_need():
    assert len(REPRESENTATIVES) > 50
    joined = " ".join(REPRESENTATIVES)
    for folder in ("multiframe/", "transfer-syntax/jpeg2000", "transfer-syntax/rle/"):
        assert folder in joined


@pytest.mark.parametrize("target", LOSSLESS)
@pytest.mark.parametrize("relpath", REPRESENTATIVES)
def test_lossless_round_trip(relpath, target, tmp_path):
    ds, reference = source(relpath)
    before = fingerprint(ds)
    try:
        out = transcode_dataset(ds, target)
    except TranscodeError as exc:
        # PS3.5 8.2 and the codecs: encapsulated syntaxes hold 8- and 16-bit samples only here
        assert target not in NATIVE and int(ds.BitsAllocated) not in (8, 16), str(exc)
        assert "cannot hold" in str(exc)
        return
    path = write(tmp_path, out)
    back = dcmread(path)
    assert back.file_meta.TransferSyntaxUID == TARGETS[target]
    assert back.SOPInstanceUID == ds.SOPInstanceUID  # lossless: the same instance
    same_pixels(back.pixel_array, reference)
    dcmdump_ok(path)
    if ds.file_meta.TransferSyntaxUID != TARGETS[target]:  # (else the source's own codestream)
        by_dcmtk = dcmtk_decoded(tmp_path, path, target)
        if by_dcmtk is not None:
            same_pixels(by_dcmtk, reference)
    assert fingerprint(ds) == before  # the source dataset is untouched


def _native_sources() -> list[str]:
    out = []
    for relpath in REPRESENTATIVES:
        meta = _read(CORPUS / relpath, stop_before_pixels=True).file_meta
        if str(meta.get("TransferSyntaxUID", "")) in ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1"):
            out.append(relpath)
    return out


NATIVE_SOURCES = _native_sources()


@pytest.mark.parametrize("relpath", NATIVE_SOURCES)
def test_native_frames_read_in_place_equal_pydicoms_decoder(relpath):
    """Plain native Pixel Data skips pydicom's decoder: the frames must be what it gives."""
    from pydicom.pixels import get_decoder

    ds = _read(CORPUS / relpath)
    ts = ds.file_meta.TransferSyntaxUID
    fast = transcode_module._native_frames(ds, ts)
    if fast is None:
        pytest.skip("not plain native pixel data: left to pydicom's decoder")
    decoder = get_decoder(ts)
    count = 0
    for index, (frame, fmt) in enumerate(fast):
        want, meta = decoder.as_array(ds, index=index, as_rgb=False)
        same_pixels(frame, want.astype(want.dtype.newbyteorder("="), copy=False))
        assert fmt.photometric_interpretation == meta.get(
            "photometric_interpretation", ds.PhotometricInterpretation
        )
        count += 1
    assert count == int(ds.get("NumberOfFrames", 1) or 1)


@pytest.mark.parametrize("target", ["rle", "jpeg-ls-lossless", "explicit-vr-le"])
@pytest.mark.parametrize("relpath", REPRESENTATIVES[::7])
def test_part10_bytes_are_pydicoms_bytes(relpath, target):
    """encode_part10 writes copied elements as bytes: the file must be the one pydicom writes."""
    ds, _ = source(relpath)
    try:
        out = transcode_dataset(ds, target)
    except TranscodeError:
        pytest.skip("the target cannot hold this image")
    fast = encode_part10(out)
    buffer = io.BytesIO()
    out.save_as(buffer, enforce_file_format=True)  # encode_part10 set the meta and preamble
    assert fast == buffer.getvalue()


def fingerprint(ds: Dataset) -> tuple:
    keywords = ("PhotometricInterpretation", "BitsAllocated", "SOPInstanceUID")
    meta = str(ds.file_meta.TransferSyntaxUID)
    return (meta, len(ds.PixelData), *(ds.get(k) for k in keywords))


SAMPLES = {
    "ct-int16": "transfer-syntax/explicit-vr-le/CT_small.dcm",
    "mr-12bit-jpeg2000": "transfer-syntax/jpeg2000-lossless/fo-dicom_GH064.dcm",
    "mr-multiframe-int16": "multiframe/fo-dicom_mr_brucker.dcm",
    "rgb-rle-2frame": "transfer-syntax/rle/SC_rgb_rle_2frame.dcm",
    "ybr-jpeg": "transfer-syntax/jpeg-baseline/SC_rgb_dcmtk_+eb+cy+s2.dcm",
}


@pytest.mark.parametrize("sample", sorted(SAMPLES))
@pytest.mark.parametrize(
    ("target", "encoder"),
    [(t, e) for t in LOSSLESS if t not in NATIVE for e in encoders(t)],
)
def test_every_installed_encoder_is_exact(target, encoder, sample, tmp_path):
    ds, reference = source(SAMPLES[sample])
    try:
        out = transcode_dataset(ds, target, encoder=encoder)
    except TranscodeError as exc:  # imagecodecs' JPEG-LS codes full-width samples only
        assert (encoder, target) == ("imagecodecs", "jpeg-ls-lossless"), str(exc)
        assert int(ds.BitsStored) < int(ds.BitsAllocated)
        pytest.skip(str(exc))
    back = dcmread(write(tmp_path, out))
    same_pixels(back.pixel_array, reference)


@settings(max_examples=60, deadline=None)
@given(
    rows=st.integers(1, 6),
    columns=st.integers(1, 300),  # runs longer than the 128 bytes one PackBits run holds
    samples=st.sampled_from([1, 3]),
    dtype=st.sampled_from(["u1", "u2", "i2"]),
    runs=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_rle_encoder_round_trips_any_frame(rows, columns, samples, dtype, runs, seed):
    if "imagecodecs" not in encoders("rle"):
        pytest.skip("imagecodecs is not installed")
    if samples == 3 and dtype == "i2":
        dtype = "u2"  # colour is unsigned
    rng = np.random.default_rng(seed)
    info = np.iinfo(dtype)
    shape = (rows, columns, samples) if samples == 3 else (rows, columns)
    arr = rng.integers(info.min, info.max, size=shape, endpoint=True, dtype=dtype)
    if runs:  # long runs, and runs that a row boundary must cut
        arr = np.repeat(arr[:, :1], columns, axis=1)
    ds = synthetic(arr)
    out = transcode_dataset(ds, "rle", encoder="imagecodecs")
    back = dcmread(io.BytesIO(encode_part10(out)))
    assert np.array_equal(back.pixel_array, arr)


def synthetic(arr: np.ndarray, frames: int = 1) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = "1.2.3.4"
    ds.Rows, ds.Columns = arr.shape[-3:-1] if arr.ndim - (frames > 1) == 3 else arr.shape[-2:]
    ds.SamplesPerPixel = 3 if arr.ndim - (frames > 1) == 3 else 1
    ds.PhotometricInterpretation = "RGB" if ds.SamplesPerPixel == 3 else "MONOCHROME2"
    if ds.SamplesPerPixel == 3:
        ds.PlanarConfiguration = 0
    ds.BitsAllocated = ds.BitsStored = 8 * arr.dtype.itemsize
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = int(arr.dtype.kind == "i")
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.PixelData = arr.astype(arr.dtype.newbyteorder("<")).tobytes()
    ds["PixelData"].VR = "OB" if arr.dtype.itemsize == 1 else "OW"
    return ds


# -- multi-frame: offset tables ----------------------------------------------------------------


def test_multiframe_gets_a_basic_offset_table(tmp_path):
    arr = np.arange(6 * 16 * 24, dtype="<i2").reshape(6, 16, 24) - 1000
    out = transcode_dataset(synthetic(arr, frames=6), "jpeg-ls-lossless")
    back = dcmread(write(tmp_path, out))
    offsets = parse_basic_offsets(back.PixelData)
    frames = list(generate_frames(back.PixelData, number_of_frames=6))
    assert len(offsets) == 6 and offsets[0] == 0
    assert np.diff(offsets).tolist() == [8 + len(f) for f in frames[:-1]]
    assert "ExtendedOffsetTable" not in back
    same_pixels(back.pixel_array, arr)


def test_extended_offset_table_past_the_32_bit_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(transcode_module, "_BOT_LIMIT", 0)  # as if the frames passed 4 GiB
    arr = (np.arange(5 * 16 * 24) % 251).astype("u1").reshape(5, 16, 24)
    out = transcode_dataset(synthetic(arr, frames=5), "rle")
    path = write(tmp_path, out)
    back = dcmread(path)
    assert parse_basic_offsets(back.PixelData) == []
    offsets = np.frombuffer(back.ExtendedOffsetTable, "<u8")
    lengths = np.frombuffer(back.ExtendedOffsetTableLengths, "<u8")
    frames = list(generate_frames(back.PixelData, number_of_frames=5))
    assert lengths.tolist() == [len(f) for f in frames]
    assert np.diff(offsets).tolist() == [8 + len(f) for f in frames[:-1]]
    same_pixels(back.pixel_array, arr)
    dcmdump_ok(path)


# -- lossy -------------------------------------------------------------------------------------


@pytest.mark.parametrize("target", LOSSY)
def test_lossy_targets_need_lossy_true(target):
    ds, _ = source(SAMPLES["ct-int16"])
    with pytest.raises(ConfigError, match="lossy"):
        Transcode(target)
    with pytest.raises(ConfigError, match="lossy"):
        transcode_dataset(ds, target)


def test_bad_options_are_config_errors():
    with pytest.raises(ConfigError, match="unknown transcode target"):
        Transcode("jpeg-xl")
    with pytest.raises(ConfigError, match="not of"):
        Transcode("rle", quality=80)
    with pytest.raises(ConfigError, match="quality"):
        Transcode("jpeg-baseline", lossy=True, quality=0)
    with pytest.raises(ConfigError, match="no encoder"):
        Transcode("rle", encoder="kakadu")
    assert issubclass(ConfigError, ValueError) and issubclass(TranscodeError, ValueError)


LOSSY_CASES = {
    "jpeg2000": ("transfer-syntax/explicit-vr-le/CT_small.dcm", {"ratio": 8}),
    "jpeg-ls-near-lossless": ("transfer-syntax/explicit-vr-le/CT_small.dcm", {"near": 3}),
    "jpeg-baseline": ("transfer-syntax/rle/SC_rgb_rle.dcm", {"quality": 85}),
}


@pytest.mark.parametrize("target", LOSSY)
def test_lossy_output_is_marked_and_gets_a_new_uid(target, tmp_path):
    relpath, options = LOSSY_CASES[target]
    ds, reference = source(relpath)
    out = transcode_dataset(ds, target, lossy=True, **options)
    path = write(tmp_path, out)
    back = dcmread(path)
    assert back.file_meta.TransferSyntaxUID == TARGETS[target]
    assert back.LossyImageCompression == "01"
    method = {"jpeg-baseline": "ISO_10918_1", "jpeg2000": "ISO_15444_1"}
    assert back.LossyImageCompressionMethod == method.get(target, "ISO_14495_1")
    compressed = sum(map(len, generate_frames(back.PixelData, number_of_frames=1)))
    assert float(back.LossyImageCompressionRatio) == pytest.approx(
        reference.nbytes / compressed, rel=0.01
    )
    new_uid = back.SOPInstanceUID
    assert new_uid != ds.SOPInstanceUID and new_uid.startswith("2.25.")
    assert back.file_meta.MediaStorageSOPInstanceUID == new_uid
    assert back.ImageType[0] == "DERIVED"
    assert back.DerivationCodeSequence[-1].CodeValue == "113040"
    reference_item = back.SourceImageSequence[-1]
    assert reference_item.ReferencedSOPInstanceUID == ds.SOPInstanceUID
    assert reference_item.PurposeOfReferenceCodeSequence[0].CodeValue == "121320"
    pixels = back.pixel_array
    assert pixels.shape == reference.shape
    error = np.abs(pixels.astype(np.int64) - reference.astype(np.int64))
    if target == "jpeg-ls-near-lossless":
        assert error.max() <= options["near"]
    else:
        assert error.mean() < 0.05 * (int(reference.max()) - int(reference.min()) + 1)
    if target == "jpeg-baseline":
        assert back.PhotometricInterpretation == "YBR_FULL_422"
    dcmdump_ok(path)
    by_dcmtk = dcmtk_decoded(tmp_path, path, target)
    if by_dcmtk is not None:
        assert np.abs(by_dcmtk.astype(int) - pixels.astype(int)).max() <= 2
    # reruns give the same UID and the same bytes
    again = transcode_dataset(ds, target, lossy=True, **options)
    assert encode_part10(again) == path.read_bytes()


def test_lossy_values_are_appended_to_earlier_ones():
    ds, _ = source(SAMPLES["ct-int16"])
    earlier = transcode_dataset(ds, "jpeg-ls-near-lossless", lossy=True, near=1)
    earlier = dcmread(io.BytesIO(encode_part10(earlier)))
    out = transcode_dataset(earlier, "jpeg2000", lossy=True)
    assert list(out.LossyImageCompressionMethod) == ["ISO_14495_1", "ISO_15444_1"]
    assert len(out.LossyImageCompressionRatio) == 2
    assert len(out.SourceImageSequence) == len(ds.get("SourceImageSequence", [])) + 2
    assert "; Lossy compression" in out.DerivationDescription


def test_decoding_a_lossy_syntax_keeps_the_lossy_flag():
    ds, _ = source("transfer-syntax/jpeg-baseline/SC_rgb_jpeg_dcmtk.dcm")
    out = transcode_dataset(ds, "rle")
    assert out.LossyImageCompression == "01"
    assert out.SOPInstanceUID == ds.SOPInstanceUID


def test_derived_uid_is_a_valid_deterministic_uuid_uid():
    derived_uid = transcode_module.derived_uid
    uid = derived_uid("1.2.3.4", "salt")
    assert uid == derived_uid("1.2.3.4", "salt") != derived_uid("1.2.3.5", "salt")
    assert pydicom.uid.UID(uid).is_valid and len(uid) <= 64
    value = int(uid.split(".")[2])
    assert (value >> 76) & 0xF == 8 and (value >> 62) & 0x3 == 2


# -- bad input, other instances ----------------------------------------------------------------


@pytest.mark.parametrize(
    "relpath",
    [
        "transfer-syntax/deflated-image-frame/liver_deflate.dcm",  # no decoder for the syntax
        "broken/JPEG2000-embedded-sequence-delimiter.dcm",  # a corrupt codestream
    ],
)
def test_undecodable_pixels_raise_a_clear_error(relpath):
    ds = _read(CORPUS / relpath)
    with pytest.raises(TranscodeError, match="cannot decode the .* pixels"):
        transcode_dataset(ds, "rle")


def test_instances_without_pixels_keep_their_dataset():
    ds = _read(CORPUS / "modality/SR/test-SR.dcm")
    assert "PixelData" not in ds
    out = transcode_dataset(ds, "jpeg2000-lossless")
    assert out.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert dcmread(io.BytesIO(encode_part10(out))).SOPInstanceUID == ds.SOPInstanceUID
    implicit = transcode_dataset(ds, "implicit-vr-le")
    assert implicit.file_meta.TransferSyntaxUID == pydicom.uid.ImplicitVRLittleEndian


def test_big_endian_source_becomes_little_endian(tmp_path):
    ds, reference = source("transfer-syntax/explicit-vr-be/MR_small_bigendian.dcm")
    for target in ("explicit-vr-le", "rle"):
        back = dcmread(write(tmp_path, transcode_dataset(ds, target), f"{target}.dcm"))
        same_pixels(back.pixel_array, reference)
        assert back.PatientName == ds.PatientName


# -- the stage, the pipeline, the command ------------------------------------------------------


def test_stage_config_is_json_and_rebuilds_the_stage():
    from dicomflow.pipeline import build_stage

    stage = Transcode("jpeg2000", lossy=True, ratio=12.5)
    config = json.loads(json.dumps(stage.config()))
    expected = {"type": "transcode", "target": "1.2.840.10008.1.2.4.91", "lossy": True}
    assert config == expected | {"ratio": 12.5}
    assert build_stage(config) == Transcode("1.2.840.10008.1.2.4.91", lossy=True, ratio=12.5)
    assert pickle.loads(pickle.dumps(stage)) == stage
    assert stage.name == "transcode"


def test_stage_transcodes_an_instance():
    path = CORPUS / SAMPLES["mr-12bit-jpeg2000"]
    instance = Transcode("rle")(Instance(str(path)))
    assert instance.dataset.file_meta.TransferSyntaxUID == RLELossless
    same_pixels(instance.dataset.pixel_array, source(SAMPLES["mr-12bit-jpeg2000"])[1])


def corpus_folder(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    undecodable = "transfer-syntax/deflated-image-frame/liver_deflate.dcm"
    names = [SAMPLES[k] for k in ("ct-int16", "mr-12bit-jpeg2000", "rgb-rle-2frame")]
    for name in [*names, undecodable]:
        shutil.copy(CORPUS / name, src / Path(name).name)
    return src


def test_pipeline_fails_undecodable_instances_and_writes_the_rest(tmp_path):
    from dicomflow.catalog import scan
    from dicomflow.pipeline import pipeline
    from dicomflow.writers import Part10Folder

    src = corpus_folder(tmp_path)
    job = (pipeline(scan(str(src))) | Transcode("jpeg-ls-lossless")).write(
        Part10Folder(str(tmp_path / "out"))
    )
    report = job.execute(workers=1)
    rows = {Path(r["source_uri"]).name: r for r in report.manifest.to_pylist()}
    assert rows["liver_deflate.dcm"]["status"] == "failed"
    assert rows["liver_deflate.dcm"]["stage"] == "transcode"
    assert "cannot decode" in rows["liver_deflate.dcm"]["reason"]
    written = sorted((tmp_path / "out").rglob("*.dcm"))
    assert len(written) == report.done == 3
    for path in written:
        back = dcmread(path)
        assert back.file_meta.TransferSyntaxUID == TARGETS["jpeg-ls-lossless"]
        back.pixel_array  # noqa: B018 - decodes


def test_cli_transcodes_a_folder(tmp_path, capsys):
    from dicomflow.cli import main

    src = corpus_folder(tmp_path)
    dst = tmp_path / "out"
    assert main(["transcode", str(src), str(dst), "--to", "rle", "--workers", "1", "-q"]) == 1
    err = capsys.readouterr().err
    assert "3 done" in err and "1 failed" in err and "liver_deflate.dcm" in err
    assert len(list(dst.rglob("*.dcm"))) == 3
    assert main(["transcode", str(src), str(dst), "--to", "jpeg-baseline", "-q"]) == 2
    assert "lossy" in capsys.readouterr().err
