"""Diffusion series for the tests: real corpus MR files with each vendor's diffusion attributes
written in (the corpus has no diffusion series of these vendors). dcm2niix reads the same files
and is the reference."""

from __future__ import annotations

import copy
import struct
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid

#: b-values and (patient, LPS) directions of the generated volumes
BVALS = [0.0, 1000.0, 1000.0, 2000.0]
DIRECTIONS = [(0.0, 0.0, 0.0), (0.6, 0.48, 0.64), (-0.267, 0.534, 0.802), (0.0, -0.8, 0.6)]


def csa_with(raw: bytes, values: dict[str, list[str]]) -> bytes:
    """A copy of a CSA header (SV10) whose fields named in ``values`` hold those items; every
    other field is copied byte for byte, and a field keeps its number of item slots."""
    count = struct.unpack_from("<I", raw, 8)[0]
    out = bytearray(raw[:16])
    pos = 16
    for _ in range(count):
        head = raw[pos : pos + 84]
        name = head[:64].split(b"\x00", 1)[0].decode("latin-1")
        items = struct.unpack_from("<i", head, 76)[0]
        start = pos
        pos += 84
        for _ in range(items):
            length = struct.unpack_from("<i", raw, pos + 4)[0]
            pos += 16 + (length + 3) // 4 * 4
        if name not in values:
            out += raw[start:pos]
            continue
        new = values[name]
        slots = max(items, len(new))
        out += head[:64] + struct.pack("<i", len(new)) + head[68:76] + struct.pack("<i", slots)
        out += head[80:84]
        for i in range(slots):
            value = (new[i].encode("latin-1") + b"\x00") if i < len(new) else b""
            out += struct.pack("<iiii", len(value), len(value), 77, len(value))
            out += value + b"\x00" * ((4 - len(value) % 4) % 4)
    out += raw[pos:]
    return bytes(out)


def siemens_mosaic_dwi(corpus: Path, out: Path) -> Path:
    """The Siemens mosaic EPI series, four volumes with CSA ``B_value`` and
    ``DiffusionGradientDirection`` (two copies of each real mosaic)."""
    out.mkdir(parents=True, exist_ok=True)
    files = sorted((corpus / "series/dcm_qa_nih_siemens_mr_0003").glob("*.dcm"))
    for t in range(len(BVALS)):
        ds = pydicom.dcmread(files[t % len(files)])
        block = ds.private_block(0x0029, "SIEMENS CSA HEADER")
        fields = {"B_value": [f"{BVALS[t]:.8f}"]}
        if BVALS[t]:
            fields["DiffusionGradientDirection"] = [f"{v:.8f}" for v in DIRECTIONS[t]]
        block[0x10].value = csa_with(bytes(block[0x10].value), fields)
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.AcquisitionNumber = t + 1
        ds.InstanceNumber = t + 1
        ds.AcquisitionTime = f"1224{58 + t * 0:02d}.{t:06d}"
        ds.save_as(out / f"dwi{t}.dcm")
    return out


def enhanced_dwi(corpus: Path, out: Path) -> Path:
    """The Siemens XA enhanced series (one volume per file) with the standard MR Diffusion
    Sequence (0018,9117) in every frame."""
    out.mkdir(parents=True, exist_ok=True)
    files = sorted((corpus / "multiframe/enhanced-mr-siemens-xa10").glob("*.dcm"))
    for t, path in enumerate(files[: len(BVALS)]):
        ds = pydicom.dcmread(path)
        for frame in ds.PerFrameFunctionalGroupsSequence:
            item = Dataset()
            item.DiffusionBValue = BVALS[t]
            item.DiffusionDirectionality = "DIRECTIONAL" if BVALS[t] else "NONE"
            if BVALS[t]:
                direction = Dataset()
                direction.DiffusionGradientOrientation = list(DIRECTIONS[t])
                item.DiffusionGradientDirectionSequence = Sequence([direction])
            frame.MRDiffusionSequence = Sequence([item])
        ds.save_as(out / path.name)
    return out


def ge_dwi(corpus: Path, out: Path) -> Path:
    """The GE EPI series (10 time points of 15 slices), its first four time points with GE's
    b-value (0043,1039) and gradient (0019,10BB-BD)."""
    out.mkdir(parents=True, exist_ok=True)
    files = sorted((corpus / "series/dcm_qa_nih_ge_mr_0004").glob("*.dcm"))
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    by_position: dict[float, list[int]] = {}
    for i, ds in enumerate(headers):
        by_position.setdefault(round(float(ds.ImagePositionPatient[2]), 2), []).append(i)
    for members in by_position.values():
        members.sort(key=lambda i: int(headers[i].InstanceNumber))
        for t, i in enumerate(members[: len(BVALS)]):
            ds = pydicom.dcmread(files[i])
            parm = ds.private_block(0x0043, "GEMS_PARM_01")
            slop = list(parm[0x39].value)
            slop[0] = int(BVALS[t]) + 1000000000
            parm[0x39].value = slop
            acq = ds.private_block(0x0019, "GEMS_ACQU_01")
            for offset, value in zip((0xBB, 0xBC, 0xBD), DIRECTIONS[t], strict=True):
                acq[offset].value = f"{value:.6f}"
            ds.save_as(out / files[i].name)
    return out


def philips_dwi(corpus: Path, out: Path) -> Path:
    """The Philips DWI image, as 3 slices x 4 volumes with Philips' b-value (2001,1003) and
    gradient (2005,10B0-B2) (RL, AP, FH)."""
    out.mkdir(parents=True, exist_ok=True)
    source = pydicom.dcmread(next((corpus / "modality/MR").glob("*.dcm")))
    iop = np.array([float(v) for v in source.ImageOrientationPatient])
    normal = np.cross(iop[:3], iop[3:])
    ipp = np.array([float(v) for v in source.ImagePositionPatient])
    series = generate_uid()
    number = 0
    for t in range(len(BVALS)):
        for z in range(3):
            ds = copy.deepcopy(source)
            ds.SeriesInstanceUID = series
            ds.SOPInstanceUID = generate_uid()
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            number += 1
            ds.InstanceNumber = number
            ds.ImagePositionPatient = [f"{v:.4f}" for v in ipp + normal * 3.0 * z]
            ds.AcquisitionNumber = 1
            ds.TemporalPositionIdentifier = t + 1
            imaging = ds.private_block(0x2001, "Philips Imaging DD 001", create=True)
            imaging.add_new(0x03, "FL", BVALS[t])
            mr = ds.private_block(0x2005, "Philips MR Imaging DD 001", create=True)
            rl, ap, fh = DIRECTIONS[t]  # LPS x is R->L, y is A->P, z is F->H
            for offset, value in zip((0xB0, 0xB1, 0xB2), (rl, ap, fh), strict=True):
                mr.add_new(offset, "FL", float(value))
            ds.save_as(out / f"im{number:03d}.dcm")
    return out
