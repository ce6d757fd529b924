"""De-identified outputs stay valid: corpus files ``dciodvfy`` passes must still pass.

``dciodvfy`` (Debian package dicom3tools) checks an instance against its IOD. A representative
subset of the corpus (every modality folder that has files passing it, all native transfer
syntaxes, JPEG-LS, multi-frame, overlays, SR, SEG, RT Dose, palettes) is de-identified with the
Basic Profile and with a rich set of Options, written as Part 10 files, and checked again.
"""

from __future__ import annotations

import shutil
import subprocess
import warnings

import pydicom
import pytest

from dicomflow.anonymize import Deidentifier, DeidOptions
from dicomflow.dicom import encode_part10

from .conftest import SECRET, SHARED

CORPUS = SHARED / "corpus"
#: Files with no dciodvfy error before de-identification (checked again by the test).
FILES = [
    "modality/CT/highdicom_ct_image.dcm",
    "modality/PALETTE/hotiron.dcm",
    "modality/PALETTE/pet20step.dcm",
    "modality/RTDOSE/rtdose.dcm",
    "modality/RTDOSE/rtdose_expb_1frame.dcm",
    "modality/SEG/highdicom_seg_image_ct_binary.dcm",
    "modality/SEG/highdicom_seg_image_ct_true_fractional.dcm",
    "modality/SM/highdicom_sm_image.dcm",
    "modality/SM/highdicom_sm_image_jpegls.dcm",
    "modality/SR/highdicom_sr_document.dcm",
    "modality/SR/highdicom_sr_document_with_multiple_groups.dcm",
    "multiframe/fo-dicom_MOVEKNEE.dcm",
    "transfer-syntax/explicit-vr-be/CT1_UNC.explicit_big_endian.dcm",
    "transfer-syntax/explicit-vr-be/MR_small_bigendian.dcm",
    "transfer-syntax/explicit-vr-le/CT_small.dcm",
    "transfer-syntax/explicit-vr-le/MR_small.dcm",
    "transfer-syntax/explicit-vr-le/examples_overlay.dcm",
    "transfer-syntax/explicit-vr-le/liver_nonbyte_aligned.dcm",
    "transfer-syntax/implicit-vr-le/CT1_UNC.implicit_little_endian.dcm",
    "transfer-syntax/implicit-vr-le/MR_small_implicit.dcm",
]
ENGINES = {
    "basic": Deidentifier(SECRET),
    "options": Deidentifier(
        SECRET,
        DeidOptions.from_names(
            [
                "retain-safe-private",
                "retain-device-identity",
                "retain-institution-identity",
                "retain-patient-characteristics",
                "retain-longitudinal-modified-dates",
                "clean-descriptors",
                "clean-structured-content",
                "clean-graphics",
            ]
        ),
    ),
}
DCIODVFY = shutil.which("dciodvfy")


def _errors(path) -> set[str]:
    run = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, timeout=60)
    return {line.strip() for line in (run.stdout + run.stderr).splitlines()
            if line.startswith("Error")}  # fmt: skip


@pytest.mark.skipif(DCIODVFY is None, reason="dciodvfy (Debian dicom3tools) is not installed")
@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_no_new_dciodvfy_errors(engine: str, tmp_path) -> None:
    if not CORPUS.is_dir():
        pytest.skip(f"corpus not found at {CORPUS}")
    checked, gained = 0, {}
    for relative in FILES:
        source = CORPUS / relative
        assert _errors(source) == set(), f"{relative} no longer passes dciodvfy before de-id"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out, _ = ENGINES[engine].deidentify(pydicom.dcmread(source))
        target = tmp_path / relative.replace("/", "_")
        target.write_bytes(encode_part10(out))
        new = _errors(target)
        if new:
            gained[relative] = sorted(new)
        checked += 1
    assert checked >= 15
    assert gained == {}, gained
