"""Geometry on synthetic stacks: sorting, spacing, gaps, duplicates, tilt, affines."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dicomflow.pixels import GeometryError, Grid, analyse_stack, normal_of, parse_csa, shift_image

AXIAL = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]


def _rotation(a: float, b: float) -> np.ndarray:
    ca, sa, cb, sb = np.cos(a), np.sin(a), np.cos(b), np.sin(b)
    rz = np.array([[ca, -sa, 0], [sa, ca, 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, cb, -sb], [0, sb, cb]])
    return rz @ rx


@settings(max_examples=60, deadline=None)
@given(
    a=st.floats(-3.1, 3.1),
    b=st.floats(-3.1, 3.1),
    n=st.integers(2, 40),
    spacing=st.floats(0.3, 8.0),
    seed=st.integers(0, 2**16),
)
def test_any_oblique_stack_sorts_along_its_normal(a, b, n, spacing, seed):
    r = _rotation(a, b)
    iop = [*r[:, 0], *r[:, 1]]
    normal = normal_of(iop)
    origin = np.array([10.0, -20.0, 30.0])
    positions = origin + np.outer(np.arange(n) * spacing, normal)
    shuffled = np.random.default_rng(seed).permutation(n)
    report = analyse_stack(positions[shuffled], iop)
    assert np.array_equal(shuffled[report.order], np.arange(n))
    assert report.spacing == pytest.approx(spacing, rel=1e-6)
    assert not report.irregular and report.missing == 0 and report.duplicates == 0
    assert report.tilt_degrees < 1e-3
    grid = Grid(origin, r[:, 0], r[:, 1], report.step, (0.7, 0.9), (n, 8, 8))
    # voxel (column 3, row 5, slice k) lands where the slice's own geometry puts it
    k = n - 1
    expected = positions[k] + 3 * 0.9 * r[:, 0] + 5 * 0.7 * r[:, 1]
    assert np.allclose(grid.affine @ [3, 5, k, 1], [*expected, 1], atol=1e-6)
    # the NIfTI affine describes the same point with rows flipped, in RAS
    ras = grid.nifti_affine() @ [3, 8 - 1 - 5, k, 1]
    assert np.allclose(ras[:3], expected * [-1, -1, 1], atol=1e-6)


def test_gaps_duplicates_and_irregular_spacing():
    z = [0.0, 2.0, 4.0, 4.0, 8.0, 10.0, 13.0]
    positions = np.array([[0.0, 0.0, v] for v in z])
    report = analyse_stack(positions, AXIAL)
    assert report.duplicates == 1
    assert report.missing == 1  # 4 -> 8 is two spacings
    assert report.irregular  # 10 -> 13 is 1.5 spacings
    assert report.spacing == pytest.approx(2.0)
    assert len(report.warnings) == 3


def test_gantry_tilt_is_measured():
    tilt = np.radians(20.0)
    col = [0.0, np.cos(tilt), -np.sin(tilt)]
    positions = np.array([[0.0, 0.0, 5.0 * k] for k in range(10)])  # table moves along z
    report = analyse_stack(positions, [1.0, 0.0, 0.0, *col])
    assert report.tilt_degrees == pytest.approx(20.0, abs=1e-6)
    assert np.allclose(report.step, [0, 0, 5.0])  # the true (sheared) step between slices


@pytest.mark.parametrize(
    "iop",
    [[1, 0, 0, 1, 0, 0], [0, 0, 0, 0, 1, 0], [1, 0, 0, 0.5, 0.5, 0], [np.nan] * 6, [1, 0, 0]],
)
def test_malformed_orientation_is_an_error_not_an_affine(iop):
    with pytest.raises(GeometryError):
        analyse_stack(np.zeros((3, 3)) + np.arange(3)[:, None], iop)


def test_positions_that_are_not_numbers_are_an_error():
    with pytest.raises(GeometryError):
        analyse_stack(np.array([[0, 0, 0], [0, 0, np.nan]]), AXIAL)


def test_shift_image_is_exact_for_whole_pixels_and_linear_between():
    img = np.arange(12, dtype=np.float32).reshape(3, 4)
    out = shift_image(img, 2, 1, (6, 6))
    assert np.array_equal(out[2:5, 1:5], img)
    assert np.all(out[:2] == img.min())
    half = shift_image(img, 0.5, 0, (4, 4))
    assert half[1, 0] == pytest.approx((img[0, 0] + img[1, 0]) / 2)


def test_csa_parser_reads_fields_and_survives_garbage():
    def field(name: str, values: list[str]) -> bytes:
        head = name.encode().ljust(64, b"\0") + np.array([len(values)], "<i4").tobytes()
        head += b"DS\0\0" + np.array([3, len(values), 77], "<i4").tobytes()
        body = b""
        for v in values:
            raw = v.encode() + b"\0"
            body += np.array([len(raw), len(raw), 77, len(raw)], "<i4").tobytes()
            body += raw.ljust((len(raw) + 3) // 4 * 4, b"\0")
        return head + body

    raw = b"SV10\4\3\2\1" + np.array([2, 77], "<i4").tobytes()
    raw += field("SliceNormalVector", ["0.1", "0.2", "0.97"]) + field("Empty", [])
    assert parse_csa(raw) == {"SliceNormalVector": ["0.1", "0.2", "0.97"], "Empty": []}
    assert parse_csa(raw[:100]) == {}
    assert parse_csa(b"\xff" * 40) == {}
