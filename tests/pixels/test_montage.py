"""Things to look at: ``Volume.montage()``, and the notebook views of volumes and catalogs."""

from __future__ import annotations

import base64
import io
import re

import numpy as np
import pydicom
import pytest
from conftest import CORPUS
from PIL import Image

import dicomflow as dfl
from dicomflow.pixels import apply_window, volumes

SERIES = CORPUS / "series" / "dcm_qa_ct_ge"


@pytest.fixture(scope="module")
def ct():
    (vol,) = [v for v in volumes(str(SERIES)) if v.shape[0] > 4]
    return vol


def test_montage_shows_evenly_spaced_slices_windowed(ct) -> None:
    image = ct.montage(4, columns=2, window=(40, 400), tile=512)
    rows, cols = ct.shape[1:]
    assert image.dtype == np.uint8 and image.shape == (2 * rows, 2 * cols)
    files = sorted(
        SERIES.glob("*.dcm"), key=lambda p: -float(pydicom.dcmread(p).ImagePositionPatient[2])
    )
    # slice k of the montage is file k along the normal, windowed from pydicom's own pixels
    depth = ct.shape[0]
    for tile, k in enumerate(round(i * (depth - 1) / 3) for i in range(4)):
        ds = pydicom.dcmread(
            [p for p in SERIES.glob("*.dcm") if np.allclose(
                [float(v) for v in pydicom.dcmread(p).ImagePositionPatient],
                ct.planes[k].position)][0]
        )  # fmt: skip
        hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        r, c = divmod(tile, 2)
        got = image[r * rows : (r + 1) * rows, c * cols : (c + 1) * cols]
        assert np.array_equal(got, apply_window(hu, 40, 400)), k
    assert len(files) == depth


def test_montage_strides_large_slices_down(ct) -> None:
    image = ct.montage(9, tile=128)
    assert max(image.shape) <= 3 * 128 and image.shape[0] == image.shape[1]


def test_volume_notebook_view_has_the_geometry_and_a_picture(ct) -> None:
    page = ct._repr_html_()
    assert "x".join(str(s) for s in ct.shape) in page.replace(" ", "")
    (uri,) = re.findall(r"src='data:image/png;base64,([^']+)'", page)
    picture = np.asarray(Image.open(io.BytesIO(base64.b64decode(uri))))
    assert np.array_equal(picture, ct.montage(8, tile=128))


def test_a_volume_that_cannot_be_read_still_shows_what_it_is(corpus, tmp_path) -> None:
    """Its files gone after the scan: the notebook view says what it is, without a picture."""
    import shutil

    shutil.copytree(corpus / "series" / "dcm_qa_ct_ge", tmp_path / "ct")
    (vol,) = volumes(str(tmp_path / "ct"))
    shutil.rmtree(tmp_path / "ct")
    page = vol._repr_html_()
    assert "dicomflow Volume" in page and "x".join(map(str, vol.shape)) in page.replace(" ", "")
    assert "no preview" in page and "<img" not in page


def test_catalog_notebook_view_counts_what_it_holds(corpus) -> None:
    cat = dfl.scan(corpus / "modality", workers=1)
    page = cat._repr_html_()  # small and local: read for the view
    table = cat.to_arrow()
    assert f"{table.num_rows:,} files" in page
    modalities = {m for m in table.column("Modality").to_pylist() if m}
    assert all(f"<td>&quot;{m}&quot;</td>" in page or f">{m}<" in page for m in modalities)
    remote = dfl.scan("s3://some-bucket/archive/")._repr_html_()
    assert "not read yet" in remote  # nothing is listed or read for a remote source
