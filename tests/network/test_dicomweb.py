"""QIDO-RS, WADO-RS (instances and frames) and STOW-RS against Orthanc's DICOMweb plugin."""

from __future__ import annotations

import http.server
import threading
import warnings

import numpy as np
import pyarrow as pa
import pytest
from pydicom import dcmread

from dicomflow.network import DicomWeb, DicomWebError, StowSink, find, read_records
from dicomflow.network.dicomweb import frames_array, retrieve_frames
from dicomflow.pipeline import Instance

from .conftest import dataset_bytes, lake_files, originals_by_uid

CT_SERIES_FILES = 28


@pytest.fixture(scope="module")
def web(orthanc) -> DicomWeb:
    return DicomWeb(orthanc.dicomweb)


@pytest.fixture(scope="module")
def ct_series(web) -> dict:
    table = web.search("series", "Modality=CT")
    rows = [r for r in table.to_pylist() if r["NumberOfSeriesRelatedInstances"] == CT_SERIES_FILES]
    assert rows
    return rows[0]


def test_qido_search_is_typed_like_find(web, orthanc, ct_series):
    studies = web.search("study", {"StudyInstanceUID": ct_series["study_instance_uid"]})
    dimse = find(orthanc.peer, {"StudyInstanceUID": ct_series["study_instance_uid"]},
                 level="study")  # fmt: skip
    assert studies.schema == dimse.schema
    assert studies.to_pylist() == dimse.to_pylist()
    series = web.search("series", study=ct_series["study_instance_uid"], columns=["SeriesNumber"])
    assert series.schema.field("SeriesNumber").type == pa.int64()
    images = web.search("instance", study=ct_series["study_instance_uid"],
                        series=ct_series["series_instance_uid"], limit=5)  # fmt: skip
    assert images.num_rows == 5 and images.column("sop_instance_uid").null_count == 0
    assert web.search("study", "PatientID=NOBODY").num_rows == 0


def test_wado_into_lake_bytes_equal(web, ct_series, round_trip_files, tmp_path):
    count, size = web.retrieve_into(tmp_path, ct_series["study_instance_uid"],
                                    ct_series["series_instance_uid"])  # fmt: skip
    assert count == CT_SERIES_FILES and size > 0
    originals = originals_by_uid(round_trip_files)
    files = lake_files(tmp_path)
    assert len(files) == CT_SERIES_FILES
    for path in files:
        assert dataset_bytes(path.read_bytes()) == originals[path.stem]
    assert set(read_records(str(tmp_path)).column("source").to_pylist()) == {"wado-rs"}


def test_wado_instances_and_frames(web, ct_series):
    study, series = ct_series["study_instance_uid"], ct_series["series_instance_uid"]
    instances = list(web.iter_instances(study, series))
    assert len(instances) == CT_SERIES_FILES
    inst = instances[0]
    ds = inst.dataset
    sop = ds.SOPInstanceUID
    (native,) = retrieve_frames(web.options.url, study, series, sop, [1],
                                transfer_syntax="1.2.840.10008.1.2.1")  # fmt: skip
    assert native == ds.PixelData
    (as_stored,) = web.retrieve_frames(study, series, sop, [1])
    assert as_stored == ds.PixelData  # uncompressed: the same bytes
    arr = frames_array(web, study, series, sop, frames=1, rows=ds.Rows, columns=ds.Columns,
                       dtype="<i2" if ds.PixelRepresentation else "<u2")  # fmt: skip
    assert arr.chunks[0] == (1,)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = ds.pixel_array
    np.testing.assert_array_equal(arr.compute()[0], expected)


def test_stow_sink_then_qido(web, orthanc, corpus):
    path = corpus / "modality" / "PT" / "tcia_acrin-flt-breast_1.dcm"
    sink = StowSink(web)
    (out,) = sink.write(Instance(str(path)))
    assert out.size == path.stat().st_size
    sop = dcmread(path, stop_before_pixels=True).SOPInstanceUID
    try:
        found = web.search("instance", {"SOPInstanceUID": sop})
        assert found.column("sop_instance_uid").to_pylist() == [sop]
        assert sink.config()["type"] == "stow-rs"
    finally:
        orthanc.delete_instance(sop)


def test_errors_and_auth_headers(web):
    with pytest.raises(DicomWebError) as info:
        web.retrieve_instance("1.2.3", "4.5.6", "7.8.9")
    assert info.value.status_code == 404
    seen = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            seen.update(self.headers)
            self.send_response(200)
            self.send_header("Content-Type", "application/dicom+json")
            self.end_headers()
            self.wfile.write(b"[]")

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        client = DicomWeb(f"http://127.0.0.1:{server.server_port}/dicom-web", token="s3cret",
                          headers={"X-Project": "lake"})  # fmt: skip
        assert client.search("study").num_rows == 0
        assert "s3cret" not in repr(client.options) and "s3cret" not in str(client.options.config())
    finally:
        server.shutdown()
    assert seen["Authorization"] == "Bearer s3cret" and seen["X-Project"] == "lake"
