"""The package's copies of the standard's tables still equal ``../shared/standard``."""

from __future__ import annotations

import csv
import gzip
import importlib.util
import io
from pathlib import Path

import pytest
from pydicom.datadict import DicomDictionary, keyword_for_tag

import dicomflow.anonymize as tables

from .conftest import REPO

DATA = REPO / "dicomflow" / "anonymize" / "data"


def _build_module():
    spec = importlib.util.spec_from_file_location("deid_build", DATA / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


BUILD = _build_module()


@pytest.mark.parametrize("name", BUILD.COPIED)
def test_copy_equals_shared(shared: Path, name: str) -> None:
    assert (DATA / name).read_bytes() == (shared / "standard" / name).read_bytes()


def test_reduced_type_tables_equal_a_fresh_build(shared: Path) -> None:
    built = BUILD.build_tables(shared / "standard")
    assert set(built) == {BUILD.COMPOUND_TYPES, BUILD.MODULE_EVIDENCE, BUILD.UNLISTED_TYPES}
    for name, text in built.items():
        assert gzip.decompress((DATA / name).read_bytes()).decode("utf-8") == text, name


def test_profile_table_shape() -> None:
    rows = tables.profile_rows()
    assert len(rows) == 657
    codes = set(tables.action_codes())
    assert {r.basic for r in rows} <= codes
    assert {c for r in rows for c in r.options.values()} <= {"K", "C"}
    assert [r.kind for r in rows].count("mask") == 3
    assert [r.kind for r in rows].count("private_rule") == 1


def test_safe_private_and_cid7050() -> None:
    assert len(tables.safe_private()) == 479
    assert ("113100" in tables.method_codes()) and len(tables.method_codes()) == 13


def test_unlisted_keep_list_is_public_text_and_not_in_table() -> None:
    listed = {r.value for r in tables.profile_rows() if r.kind == "exact"}
    with open(DATA / "unlisted-keep.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        tag = tables.parse_tag(row["tag"])
        assert tag in DicomDictionary and keyword_for_tag(tag) == row["keyword"]
        assert tag not in listed, row
        assert row["reason"]


def test_sop_class_table_maps_ct() -> None:
    assert tables.iod_for_sop_class("1.2.840.10008.5.1.4.1.1.2") == "CT Image"
    rows = list(csv.DictReader(io.StringIO((DATA / "sop-class-to-iod.csv").read_text())))
    assert len(rows) == 180


def test_each_iods_rows_are_the_lines_of_that_iod() -> None:
    """The per-IOD tables are searched for one IOD's lines (the first few IODs of a run) or
    grouped once: either way the rows of each IOD are its lines of the file, in order."""
    from dicomflow.anonymize import _tables

    for name in ("iod-compound-types.csv.gz", "iod-module-evidence.csv.gz",
                 "iod-unlisted-types.csv.gz"):  # fmt: skip
        rows = list(csv.DictReader(io.StringIO(gzip.decompress((DATA / name).read_bytes())
                                               .decode("utf-8"), newline="")))  # fmt: skip
        by_iod: dict[str, list[dict[str, str]]] = {}
        for row in rows:
            by_iod.setdefault(next(iter(row.values())), []).append(row)
        assert len(by_iod) > 10
        for ciod in [*sorted(by_iod), "No Such IOD", "CT Image"]:
            assert _tables._iod_rows(name, ciod) == by_iod.get(ciod, []), (name, ciod)
