"""Lazy frames: identical to pydicom's pixel_array over the corpus, reading only each frame."""

from __future__ import annotations

import shutil
import tracemalloc
import warnings

import dask
import numpy as np
import pydicom
import pytest
from conftest import CORPUS, catalog_row, catalog_table, manifest

import dicomflow
from dicomflow.codecs import decoders_for
from dicomflow.pixels import (
    FrameDecodeError,
    PixelDataError,
    PixelOptions,
    PixelSizeError,
    frames,
    locate_frames,
)

_IMAGES = [
    m["path"]
    for m in manifest()
    if m["transfer_syntax_uid"] and m["rows"] and not m["path"].startswith("broken/")
]
_BROKEN_IMAGES = [m["path"] for m in manifest() if m["rows"] and m["path"].startswith("broken/")]


def _reference(path):
    """pydicom's pixel_array, or None (with the reason) when pydicom cannot decode it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds = pydicom.dcmread(path, force=True)
            if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
                return None, "no pixel data"
            return ds.pixel_array, None
        except Exception as exc:  # pydicom's own verdict on the file
            return None, f"pydicom cannot decode it: {type(exc).__name__}: {exc}"[:200]


def _same(ours: np.ndarray, ref: np.ndarray) -> None:
    ours = ours.reshape(ref.shape) if ours.shape[0] == 1 and ours.ndim == ref.ndim + 1 else ours
    assert ours.shape == ref.shape
    assert ours.dtype == ref.dtype.newbyteorder("=")
    assert np.array_equal(ours, ref)


@pytest.mark.parametrize("path", _IMAGES)
def test_frames_equal_pydicom_pixel_array(path):
    ref, why = _reference(CORPUS / path)
    if ref is None:
        pytest.skip(why)
    arr = frames(catalog_row(CORPUS / path))
    with dask.config.set(scheduler="synchronous"):
        _same(arr.compute(), ref)


_ENCAPSULATED = [
    (path, name)
    for path in _IMAGES
    for name in [
        d.name for d in decoders_for(catalog_row(CORPUS / path)["transfer_syntax_uid"] or "")
    ]
    if catalog_row(CORPUS / path)["transfer_syntax_uid"]
    not in (
        "1.2.840.10008.1.2",
        "1.2.840.10008.1.2.1",
        "1.2.840.10008.1.2.2",
        "1.2.840.10008.1.2.1.99",
    )
]


@pytest.mark.parametrize(("path", "backend"), _ENCAPSULATED)
def test_every_backend_gives_pydicom_values(path, backend):
    ref, why = _reference(CORPUS / path)
    if ref is None:
        pytest.skip(why)
    arr = frames(catalog_row(CORPUS / path), options=PixelOptions(backend=backend))
    try:
        with dask.config.set(scheduler="synchronous"):
            ours = arr.compute()
    except FrameDecodeError as exc:
        if "colour JPEG is left to pydicom" in str(exc) or "precision" in str(exc):
            pytest.skip(f"{backend} does not handle this kind of frame: {exc}")
        raise
    lossy_jpeg = row_ts(path) in ("1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51")
    if lossy_jpeg and backend != "pydicom":
        # lossy JPEG decoders may round the inverse DCT differently (ISO 10918 allows it)
        diff = np.abs(ours.reshape(ref.shape).astype(np.int64) - ref.astype(np.int64))
        assert diff.max() <= 1
        return
    _same(ours, ref)


def row_ts(path) -> str:
    return catalog_row(CORPUS / path)["transfer_syntax_uid"]


@pytest.mark.parametrize(
    "group",
    [
        [
            "rle/liver_rle.dcm",
            "jpeg2000-lossless/liver_j2k.dcm",
            "deflated-image-frame/liver_deflate.dcm",
        ],
        [
            "explicit-vr-le/liver_nonbyte_aligned.dcm",
            "rle/liver_nonbyte_aligned_rle.dcm",
            "jpeg2000-lossless/liver_nonbyte_aligned_j2k.dcm",
            "deflated-image-frame/liver_nonbyte_aligned_deflate.dcm",
        ],
    ],
)
def test_same_image_in_every_syntax_decodes_the_same(group):
    """Where pydicom 3.0.2 cannot decode (1-bit RLE, Deflated Image Frame), codecs must agree."""
    arrays = [frames(catalog_row(CORPUS / "transfer-syntax" / p)).compute() for p in group]
    assert arrays[0].shape[0] == 3 and arrays[0].max() == 1
    for other in arrays[1:]:
        assert np.array_equal(arrays[0], other)


def test_mr_in_nine_syntaxes_is_one_image():
    arrays = [
        frames(catalog_row(CORPUS / f"series/dcm_qa_ts/{i}.dcm")).compute() for i in range(1, 10)
    ]
    for other in arrays[1:]:
        assert np.array_equal(arrays[0], other)


def test_a_chunk_reads_only_its_frame(monkeypatch):
    import fsspec
    from fsspec.implementations.memory import MemoryFileSystem

    path = CORPUS / "encapsulation/CT0012.fragmented_no_bot_jpeg_ls.80.dcm"
    fs = fsspec.filesystem("memory")
    fs.pipe("/lazy/ct.dcm", path.read_bytes())
    row = catalog_row(path)
    row["uri"] = "memory://lazy/ct.dcm"
    located = locate_frames([row])
    offsets = located["frame_offsets"][0].as_py()
    assert len(offsets) == 3
    reads = []
    original = MemoryFileSystem.cat_file

    def counting(self, path, start=None, end=None, **kwargs):
        reads.append((start, end))
        return original(self, path, start=start, end=end, **kwargs)

    monkeypatch.setattr(MemoryFileSystem, "cat_file", counting)
    arr = frames(located)  # offsets stored in the catalog: nothing read to build the graph
    assert reads == []
    second = arr[1].compute(scheduler="synchronous")
    assert reads == [(offsets[1], offsets[2])]
    assert np.array_equal(second, pydicom.dcmread(path).pixel_array[1])


def test_frame_offsets_from_offset_table_and_scan_agree():
    with_bot = catalog_row(CORPUS / "encapsulation/CT1_UNC.fragmented_bot_jpeg_ls.80.dcm")
    without = catalog_row(CORPUS / "encapsulation/CT1_UNC.fragmented_no_bot_jpeg_ls.80.dcm")
    a = locate_frames([with_bot])["frame_offsets"][0].as_py()
    b = locate_frames([without])["frame_offsets"][0].as_py()
    assert len(a) == len(b) == 2
    assert np.array_equal(frames([with_bot]).compute(), frames([without]).compute())


def test_extended_offset_table_from_the_catalog_is_used(monkeypatch):
    import dicomflow.pixels._locate as locate

    path = CORPUS / "encapsulation/CT0012.fragmented_no_bot_jpeg_ls.80.dcm"
    row = catalog_row(path)
    scanned = locate_frames([row])["frame_offsets"][0].as_py()
    first = scanned[0]
    row["ExtendedOffsetTable"] = np.array([o - first for o in scanned[:-1]], "<u8").tobytes()

    def no_scan(*args, **kwargs):
        raise AssertionError("the fragments were scanned although the table was given")

    monkeypatch.setattr(locate, "_scan", no_scan)
    assert locate_frames([row])["frame_offsets"][0].as_py()[:-1] == scanned[:-1]
    assert np.array_equal(frames([row]).compute(), pydicom.dcmread(path).pixel_array)


def test_forged_header_is_refused_before_allocation(tmp_path):
    src = CORPUS / "transfer-syntax/explicit-vr-le/CT_small.dcm"
    ds = pydicom.dcmread(src)
    ds.Rows = ds.Columns = 65535
    ds.NumberOfFrames = 100000  # ~800 TB declared
    forged = tmp_path / "forged.dcm"
    ds.save_as(forged)
    tracemalloc.start()
    try:
        with pytest.raises(PixelSizeError, match="forged.dcm") as info:
            frames(catalog_row(forged))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 50 * 2**20
    assert isinstance(info.value, dicomflow.DicomflowError)
    assert isinstance(info.value, ValueError)


def test_forged_size_of_a_compressed_frame_is_refused_before_decoding(tmp_path):
    src = CORPUS / "transfer-syntax/jpeg2000-lossless/MR_small_jp2klossless.dcm"
    ds = pydicom.dcmread(src)
    ds.Rows = ds.Columns = 60000  # 7 GB of uint16 for one frame
    forged = tmp_path / "forged_j2k.dcm"
    ds.save_as(forged)
    arr = frames(catalog_row(forged))
    tracemalloc.start()
    try:
        with pytest.raises(FrameDecodeError, match="header declares 60000 x 60000"):
            arr.compute(scheduler="synchronous")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 100 * 2**20


def test_undecodable_frame_names_file_and_frame(tmp_path):
    src = CORPUS / "encapsulation/CT0012.not_fragmented_bot_jpeg_ls.80.dcm"
    broken = tmp_path / "broken.dcm"
    shutil.copy(src, broken)
    row = catalog_row(broken)
    offsets = locate_frames([row])["frame_offsets"][0].as_py()
    data = bytearray(broken.read_bytes())
    start = offsets[1] + 8  # the first fragment of frame 1, after its item header
    data[start : start + 64] = b"\x00" * 64  # wipe its SOI and header
    broken.write_bytes(bytes(data))
    arr = frames(catalog_row(broken))
    assert arr[0].compute(scheduler="synchronous").shape == (512, 512)  # frame 0 is fine
    with pytest.raises(FrameDecodeError) as info:
        arr[1].compute(scheduler="synchronous")
    assert info.value.uri == str(broken) and info.value.frame == 1
    assert "broken.dcm: frame 1:" in str(info.value)
    assert isinstance(info.value, PixelDataError)


def test_truncated_native_file_is_refused(tmp_path):
    src = CORPUS / "transfer-syntax/explicit-vr-le/CT_small.dcm"
    short = tmp_path / "short.dcm"
    short.write_bytes(src.read_bytes()[:-1000])
    with pytest.raises(PixelSizeError, match="short.dcm"):
        frames(catalog_row(short))


def test_inexact_lossy_jpeg_is_fast_and_within_one_grey_level():
    path = CORPUS / "encapsulation/CT0012.fragmented_no_bot_jpeg_baseline.51.dcm"
    ref = pydicom.dcmread(path).pixel_array
    fast = frames(catalog_row(path), options=PixelOptions(exact=False)).compute()
    assert fast.dtype == ref.dtype and fast.shape == ref.shape
    assert np.abs(fast.astype(np.int64) - ref).max() <= 1


@pytest.mark.parametrize(
    "name, expected_first",
    [
        # 8-bit grey: libjpeg-turbo (imagecodecs) equals pydicom's IJG plugin, so it goes first
        ("modality/XA/fo-dicom_HasFragmentSequence.dcm", "imagecodecs"),
        # 12-bit: libjpeg-turbo's 12-bit build rounds differently; pydicom's plugin decodes it
        ("transfer-syntax/jpeg-extended/JPGExtended.dcm", "pydicom"),
    ],
)
def test_exact_lossy_jpeg_uses_libjpeg_turbo_only_where_it_equals_pydicom(
    name, expected_first, monkeypatch
):
    from pydicom.pixels import get_decoder

    from dicomflow.codecs import _jpeg, _pydicom

    if "gdcm" not in get_decoder("1.2.840.10008.1.2.4.50").available_plugins:
        pytest.skip("pydicom's JPEG plugin here is not GDCM's IJG libjpeg")
    path = CORPUS / name
    used = []
    for module, backend in ((_jpeg, "decode_8bit"), (_pydicom, "decode")):
        original = getattr(module, backend)

        def spy(src, fmt, original=original, backend=backend):
            result = original(src, fmt)  # raises when it refuses the frame
            used.append(backend)
            return result

        monkeypatch.setattr(module, backend, spy)
    ref = pydicom.dcmread(path).pixel_array
    arr = frames(catalog_row(path)).compute()
    assert np.array_equal(arr.reshape(ref.shape), ref)
    assert used and used[0] == {"imagecodecs": "decode_8bit", "pydicom": "decode"}[expected_first]


def test_explicit_backend_that_cannot_decode_fails_before_compute():
    row = catalog_row(CORPUS / "transfer-syntax/jpeg2000-lossless/MR_small_jp2klossless.dcm")
    with pytest.raises(PixelDataError, match="available here"):
        frames(row, options=PixelOptions(backend="pyjpegls"))


def test_modality_lut_gives_hounsfield_units():
    path = CORPUS / "transfer-syntax/explicit-vr-le/CT_small.dcm"
    ds = pydicom.dcmread(path)
    hu = frames(catalog_row(path), options=PixelOptions(modality_lut=True)).compute()[0]
    assert hu.dtype == np.float32
    expected = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    assert np.array_equal(hu, expected.astype(np.float32))


def test_monochrome1_inversion():
    path = CORPUS / "modality/DX/highdicom_dx_image.dcm"
    ds = pydicom.dcmread(path)
    assert ds.PhotometricInterpretation == "MONOCHROME1"
    inverted = frames(catalog_row(path), options=PixelOptions(invert_monochrome1=True)).compute()
    assert np.array_equal(inverted[0], (1 << ds.BitsStored) - 1 - ds.pixel_array.astype(np.int64))


def test_palette_colour_to_rgb():
    from pydicom.pixels import apply_color_lut

    path = CORPUS / "transfer-syntax/explicit-vr-le/examples_palette.dcm"
    ds = pydicom.dcmread(path)
    rgb = frames(catalog_row(path), options=PixelOptions(palette=True)).compute()
    assert rgb.shape[-1] == 3
    assert np.array_equal(
        rgb.reshape(apply_color_lut(ds.pixel_array, ds).shape), apply_color_lut(ds.pixel_array, ds)
    )


def test_ybr_kept_when_asked():
    path = CORPUS / "transfer-syntax/explicit-vr-le/SC_ybr_full_422_uncompressed.dcm"
    ds = pydicom.dcmread(path)
    ybr = frames(catalog_row(path), options=PixelOptions(as_rgb=False)).compute()[0]
    rgb = frames(catalog_row(path)).compute()[0]
    assert np.array_equal(rgb, ds.pixel_array)
    assert not np.array_equal(ybr, rgb)


def test_frames_of_many_rows_concatenate():
    paths = sorted((CORPUS / "series/dcm_qa_nih_ge_mr_0004").glob("*.dcm"))[:5]
    arr = frames(catalog_table(paths), options=PixelOptions(frames_per_chunk=2))
    assert arr.shape == (5, 64, 64) and arr.chunks[0] == (2, 2, 1)
    ref = np.stack([pydicom.dcmread(p).pixel_array for p in paths])
    assert np.array_equal(arr.compute(), ref)


def test_frame_keys_depend_on_the_formats_values_not_on_their_objects():
    """Every row of a series has its own (equal) PixelFormat: the dask keys are the same as
    when the rows share one, so equal formats are tokenized once, not once per slice."""
    from dataclasses import replace

    from dicomflow.pixels import row_refs
    from dicomflow.pixels._frames import frames_array

    paths = sorted((CORPUS / "series/dcm_qa_nih_ge_mr_0004").glob("*.dcm"))[:6]
    refs = [ref for row in catalog_table(paths).to_pylist() for ref in row_refs(row)]
    assert len({id(r.fmt) for r in refs}) == len(refs)  # one object per row, all equal
    shared = [replace(r, fmt=refs[0].fmt) for r in refs]
    assert frames_array(refs).name == frames_array(shared).name
    other = [replace(r, fmt=replace(r.fmt, bits_stored=12)) for r in refs]
    assert frames_array(other).name != frames_array(refs).name


def test_frames_refuse_mixed_shapes():
    paths = [
        CORPUS / "transfer-syntax/explicit-vr-le/CT_small.dcm",
        CORPUS / "transfer-syntax/explicit-vr-le/MR_small.dcm",
    ]
    if catalog_row(paths[0])["Rows"] == catalog_row(paths[1])["Rows"]:
        paths[1] = CORPUS / "series/dcm_qa_ts/1.dcm"
    with pytest.raises(PixelDataError, match="volumes"):
        frames(catalog_table(paths))


@pytest.mark.parametrize("path", _BROKEN_IMAGES)
def test_broken_files_raise_our_errors_or_decode(path):
    """Nothing in broken/ may escape as anything but a PixelDataError (or decode fine)."""
    row = catalog_row(CORPUS / path)
    if row["error"] or row["pixel_offset"] is None:
        pytest.skip("no pixel data found in the header")
    try:
        frames(row).compute(scheduler="synchronous")
    except PixelDataError:
        pass
