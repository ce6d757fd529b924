"""The decoded-size guard: crafted codestreams of a few dozen bytes declaring 65535 x 65535 are
refused before any decoder runs, quickly and without allocating what they declare."""

from __future__ import annotations

import io
import struct
import time
import tracemalloc

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate

from dicomflow.codecs import Decoder, PixelFormat, check_frame, decode_frame, decoders_for
from dicomflow.dicom import encode_part10, transfer_syntax
from dicomflow.errors import FrameDecodeError, PixelDataError, PixelSizeError

HUGE = 65535


def _jpeg(marker: int, precision: int, rows: int = HUGE, columns: int = HUGE) -> bytes:
    """SOI, a start-of-frame segment for one component, EOI."""
    sof = struct.pack(">BHHB", precision, rows, columns, 1) + bytes([1, 0x11, 0])
    return b"\xff\xd8" + struct.pack(">BBH", 0xFF, marker, 2 + len(sof)) + sof + b"\xff\xd9"


def _j2k(rows: int = HUGE, columns: int = HUGE, capabilities: int = 0) -> bytes:
    """SOC and a SIZ segment for one 16-bit component (Rsiz bit 14: HTJ2K)."""
    siz = struct.pack(">H", capabilities) + struct.pack(
        ">8I", columns, rows, 0, 0, columns, rows, 0, 0
    )
    siz += struct.pack(">H", 1) + bytes([15, 1, 1])
    return b"\xff\x4f\xff\x51" + struct.pack(">H", 2 + len(siz)) + siz + b"\xff\xd9"


def _rle() -> bytes:
    return struct.pack("<16L", 2, 64, 80, *[0] * 13) + b"\x81\x00" * 16


CRAFTED = {
    "jpeg-baseline": _jpeg(0xC0, 8),
    "jpeg-extended": _jpeg(0xC1, 12),
    "jpeg-lossless-sv1": _jpeg(0xC3, 16),
    "jpeg-ls-lossless": _jpeg(0xF7, 16),
    "jpeg2000-lossless": _j2k(),
    "htj2k-lossless": _j2k(capabilities=0x4000),
    "rle": _rle(),
}


@pytest.fixture
def no_decoder_runs(monkeypatch):
    def refuse(self, data, fmt):
        raise AssertionError(f"decoder {self.name} ran on a refused frame")

    monkeypatch.setattr(Decoder, "decode", refuse)


def _refused(data: bytes, fmt: PixelFormat, syntax: str, **kwargs) -> PixelSizeError:
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(PixelSizeError) as info:
            decode_frame(data, fmt, syntax, **kwargs)
        seconds = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert seconds < 0.5 and peak < 2**20  # arithmetic on a header, nothing allocated
    return info.value


@pytest.mark.parametrize("name", sorted(CRAFTED))
def test_a_frame_declaring_65535_squared_is_refused_by_the_budget(name, no_decoder_runs):
    assert len(CRAFTED[name]) < 200
    bits = 8 if name in ("jpeg-baseline",) else 16
    fmt = PixelFormat(transfer_syntax(name).uid, rows=HUGE, columns=HUGE, bits_allocated=bits,
                      bits_stored=bits)  # fmt: skip
    error = _refused(CRAFTED[name], fmt, name)
    if name == "rle":  # refused first because 96 bytes of RLE cannot expand that far
        assert "bytes of RLE cannot decode to 65535 x 65535" in str(error)
    else:
        assert "decode budget" in str(error) and "max_frame_bytes" in str(error)


@pytest.mark.parametrize("name", sorted(set(CRAFTED) - {"rle"}))
@pytest.mark.parametrize("backend", [None, "pydicom"])
def test_a_codestream_larger_than_rows_columns_is_refused(name, backend, no_decoder_runs):
    if backend and backend not in [d.name for d in decoders_for(name)]:
        pytest.skip(f"{backend} cannot decode {name} here")
    bits = 8 if name == "jpeg-baseline" else 16
    fmt = PixelFormat(transfer_syntax(name).uid, rows=64, columns=64, bits_allocated=bits,
                      bits_stored=bits)  # fmt: skip
    error = _refused(CRAFTED[name], fmt, name, backend=backend)
    assert "codestream is 65535 x 65535 x 1 but the header declares 64 x 64 x 1" in str(error)


def test_short_rle_data_cannot_stand_for_a_huge_frame(no_decoder_runs):
    fmt = PixelFormat("1.2.840.10008.1.2.5", rows=HUGE, columns=HUGE, bits_allocated=8,
                      bits_stored=8)  # fmt: skip
    error = _refused(_rle(), fmt, "rle", max_frame_bytes=2**40)  # not the budget: the size
    assert "bytes of RLE cannot decode to 65535 x 65535 pixels" in str(error)


def test_more_bits_than_bits_allocated_and_no_header(no_decoder_runs):
    fmt = PixelFormat("1.2.840.10008.1.2.4.70", rows=4, columns=4, bits_allocated=8, bits_stored=8)
    with pytest.raises(PixelSizeError, match="16 bits, more than Bits Allocated 8"):
        check_frame(_jpeg(0xC3, 16, 4, 4), fmt, transfer_syntax(fmt.transfer_syntax_uid))
    with pytest.raises(PixelDataError, match="no valid JPEG start-of-frame marker"):
        decode_frame(b"\x00" * 64, fmt, fmt.transfer_syntax_uid)
    j2k = PixelFormat("1.2.840.10008.1.2.4.90", rows=4, columns=4)
    with pytest.raises(PixelDataError, match="no valid JPEG2000 SIZ marker"):
        decode_frame(b"\xff\x4f" + b"\x00" * 64, j2k, j2k.transfer_syntax_uid)


def test_the_budget_is_an_option_of_the_frame_arrays(tmp_path):
    import dicomflow as dfl
    from dicomflow.pixels import PixelOptions, frames

    arr = np.arange(64 * 64, dtype="<u2").reshape(64, 64)
    path = tmp_path / "small.dcm"
    path.write_bytes(encode_part10(_dataset(arr)))
    row = dfl.scan([str(path)], workers=1).to_arrow().to_pylist()[0]
    assert np.array_equal(frames(row).compute()[0], arr)
    tight = frames(row, options=PixelOptions(max_frame_bytes=4096))
    with pytest.raises(FrameDecodeError, match="decode budget of 4,096 bytes"):
        tight.compute(scheduler="synchronous")


def _dataset(arr: np.ndarray, syntax: str = "1.2.840.10008.1.2.1") -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = "1.2.3.4.5"
    ds.Rows, ds.Columns = arr.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit, ds.PixelRepresentation = 15, 0
    ds.PixelData = arr.tobytes()
    return ds


def test_transcode_is_guarded_too():
    """Transcode decodes with pydicom's decoders: the guard runs before them as well."""
    from dicomflow.pipeline import TranscodeError, transcode_dataset

    ds = _dataset(np.zeros((64, 64), "<u2"), "1.2.840.10008.1.2.4.90")
    ds.PixelData = encapsulate([_j2k()])
    ds = pydicom.dcmread(io.BytesIO(encode_part10(ds)))
    tracemalloc.start()
    try:
        with pytest.raises(TranscodeError, match="codestream is 65535 x 65535"):
            transcode_dataset(ds, "rle")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2**20
