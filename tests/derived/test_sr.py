"""TID 1500 in and out: measurement rows checked against highdicom's own parser."""

from __future__ import annotations

import shutil
import subprocess

import highdicom as hd
import pytest

import dicomflow as dfl

from .conftest import CORPUS

SR = CORPUS / "modality" / "SR"


def _highdicom_rows(path):
    content = hd.sr.srread(path).content
    groups = [
        *content.get_image_measurement_groups(),
        *content.get_planar_roi_measurement_groups(),
        *content.get_volumetric_roi_measurement_groups(),
    ]
    meas, evals = set(), set()
    for g in groups:
        for m in g.get_measurements():
            meas.add((g.tracking_identifier, g.tracking_uid, m.name.value, m.value, m.unit.value))
        for q in g.get_qualitative_evaluations():
            evals.add((g.tracking_identifier, q.name.value, q.value.value))
    return meas, evals


def _ours(path):
    meas, evals = dfl.read_measurements(path)
    m = {
        (
            r["TrackingIdentifier"],
            r["TrackingUID"],
            r["ConceptName"].split(":")[1],
            r["value"],
            r["unit"],
        )
        for r in meas.to_pylist()
    }
    e = {
        (r["TrackingIdentifier"], r["ConceptName"].split(":")[1], r["value"].split(":")[1])
        for r in evals.to_pylist()
    }
    return meas, evals, m, e


def test_corpus_report_matches_highdicom() -> None:
    path = SR / "highdicom_sr_document_with_multiple_groups.dcm"
    meas, evals, m, e = _ours(path)
    expected_m, expected_e = _highdicom_rows(path)
    assert m == expected_m and len(m) == 4
    assert e == expected_e and len(e) == 5
    rows = meas.to_pylist()
    assert {r["ObserverName"] for r in rows} == {"Doe^John"}
    vertebra = next(r for r in rows if r["TrackingIdentifier"] == "Vertebra0001")
    assert vertebra["Finding"] == "SCT:51282000" and vertebra["unit"] == "mm3"
    assert vertebra["ReferencedSOPInstanceUID"]


def test_finding_site_is_a_column_not_an_evaluation() -> None:
    meas, evals = dfl.read_measurements(SR / "highdicom_sr_document.dcm")
    assert meas.num_rows == 1 and evals.num_rows == 0
    row = meas.to_pylist()[0]
    assert row["FindingSiteMeaning"] == "Cervico-thoracic spine"
    assert (row["value"], row["unit"]) == (1.7, "cm2")


def _table(vol_uid: str) -> list[dict]:
    return [
        {
            "TrackingIdentifier": "Lesion1",
            "Finding": "SCT:52988006",
            "FindingMeaning": "Lesion",
            "FindingSite": "SCT:10200004",
            "FindingSiteMeaning": "Liver",
            "ConceptName": "SCT:410668003",
            "ConceptMeaning": "Length",
            "value": 12.5,
            "unit": "mm",
        },
        {
            "TrackingIdentifier": "Lesion1",
            "ConceptName": "SCT:118565006",
            "ConceptMeaning": "Volume",
            "value": 830.0,
            "unit": "mm3",
        },
        {
            "TrackingIdentifier": "Lesion2",
            "ConceptName": "SCT:410668003",
            "ConceptMeaning": "Length",
            "value": 4.25,
            "unit": "mm",
        },
    ]


def test_report_round_trip(ct_series, tmp_path) -> None:
    paths, vol = ct_series
    out = dfl.write_measurement_report(_table(""), paths[0], tmp_path / "sr.dcm")
    meas, _, m, _ = _ours(out)
    hd_m, _ = _highdicom_rows(out)
    assert m == hd_m
    got = sorted(
        (r["TrackingIdentifier"], r["ConceptMeaning"], r["value"], r["unit"])
        for r in meas.to_pylist()
    )
    assert got == sorted(
        (r["TrackingIdentifier"], r["ConceptMeaning"], r["value"], r["unit"]) for r in _table("")
    )
    lesion = [r for r in meas.to_pylist() if r["TrackingIdentifier"] == "Lesion1"]
    assert {r["FindingSiteMeaning"] for r in lesion} == {"Liver"}
    import pydicom

    src = pydicom.dcmread(paths[0])
    assert {r["ReferencedSOPInstanceUID"] for r in meas.to_pylist()} == {src.SOPInstanceUID}


EVALUATIONS = [
    {
        "TrackingIdentifier": "Lesion1",
        "ConceptName": "SCT:246116008",
        "ConceptMeaning": "Lesion morphology",
        "value": "SCT:49608001",
        "value_meaning": "Irregular",
    },
    {
        "TrackingIdentifier": "Lesion2",
        "ConceptName": "SCT:246116008",
        "ConceptMeaning": "Lesion morphology",
        "value": "SCT:255507004",
        "value_meaning": "Round",
    },
]


def test_evaluations_round_trip(ct_series, tmp_path) -> None:
    paths, _ = ct_series
    out = dfl.write_measurement_report(
        _table(""), paths[0], tmp_path / "sr.dcm", evaluations=EVALUATIONS
    )
    _, evals, _, e = _ours(out)
    _, hd_e = _highdicom_rows(out)
    assert e == hd_e
    got = {(r["TrackingIdentifier"], r["ConceptName"], r["value"]) for r in evals.to_pylist()}
    assert got == {(r["TrackingIdentifier"], r["ConceptName"], r["value"]) for r in EVALUATIONS}


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy (dicom3tools) missing")
def test_written_report_has_no_dciodvfy_error(ct_series, tmp_path) -> None:
    paths, _ = ct_series
    out = dfl.write_measurement_report(
        _table(""), paths[0], tmp_path / "sr.dcm", evaluations=EVALUATIONS
    )
    run = subprocess.run(["dciodvfy", str(out)], capture_output=True, text=True)
    errors = [ln for ln in (run.stdout + run.stderr).splitlines() if ln.startswith("Error")]
    assert errors == []


def test_not_an_sr_is_refused(ct_series) -> None:
    paths, _ = ct_series
    with pytest.raises(dfl.DerivedObjectError, match="not an SR"):
        dfl.read_measurements(paths[0])


def test_measurements_on_a_segment_round_trip(ct_series, tmp_path) -> None:
    import numpy as np
    import pydicom

    paths, vol = ct_series
    lab = np.zeros(vol.shape, dtype=np.uint8)
    lab[1:3, 2:6, 2:6] = 1
    lab[3:5, 8:12, 8:12] = 2
    seg_path = dfl.write_seg(lab, vol, tmp_path / "seg.dcm")
    table = [{**r, "ReferencedSegmentNumber": 2 if r["TrackingIdentifier"] == "Lesion1" else None}
             for r in _table("")]  # fmt: skip
    out = dfl.write_measurement_report(table, paths[0], tmp_path / "sr.dcm", segmentation=seg_path)
    meas, _, m, _ = _ours(out)
    hd_m, _ = _highdicom_rows(out)
    assert m == hd_m
    seg_uid = pydicom.dcmread(seg_path).SOPInstanceUID
    groups = hd.sr.srread(out).content.get_volumetric_roi_measurement_groups()
    assert [g.tracking_identifier for g in groups] == ["Lesion1"]
    assert groups[0].referenced_segment.referenced_sop_instance_uid == seg_uid
    assert list(groups[0].referenced_segment.referenced_segment_numbers) == [2]
    rows = meas.to_pylist()
    lesion1 = [r for r in rows if r["TrackingIdentifier"] == "Lesion1"]
    assert {(r["ReferencedSOPInstanceUID"], r["ReferencedSegmentNumber"]) for r in lesion1} == {
        (seg_uid, 2)
    }
    if shutil.which("dciodvfy"):
        run = subprocess.run(["dciodvfy", str(out)], capture_output=True, text=True)
        assert [ln for ln in (run.stdout + run.stderr).splitlines() if ln.startswith("Error")] == []
