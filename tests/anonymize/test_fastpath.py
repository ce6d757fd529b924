"""The byte-level de-identification path writes exactly what the engine writes, or stands aside.

``Deidentify`` on an instance nobody parsed de-identifies its encoded bytes directly
(``Instance.encoded``); on a parsed instance it runs the engine on the pydicom Dataset. Both
must give the same Part 10 object byte for byte and the same counts, on every corpus file and
on files with identifying values planted where the profile keeps them; where the byte path
does not handle a file or a setting, the stage uses the engine (``encoded`` is ``None``).
"""

from __future__ import annotations

import csv
import io
import json
import warnings
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset

from dicomflow.anonymize import Deidentify, Recipe
from dicomflow.cli import main
from dicomflow.dicom import encode_part10, top_values
from dicomflow.pipeline import Instance, read_manifests
from dicomflow.writers import Part10Folder

from .conftest import SECRET

RICH = [
    "retain-device-identity", "retain-longitudinal-modified-dates", "clean-descriptors",
    "clean-graphics", "retain-patient-characteristics", "retain-institution-identity",
]  # fmt: skip


def _corpus(shared: Path) -> list[Path]:
    with open(shared / "corpus" / "MANIFEST.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [shared / "corpus" / r["path"] for r in rows]


def _both(stage: Deidentify, data: bytes) -> tuple[object, object, bool]:
    """(byte path result, engine result, whether the byte path ran): each the output bytes
    and counts, or the type of the error raised."""
    fast = Instance("", _raw=data)
    try:
        stage(fast)
        encoded = fast.encoded
        got: object = (encoded, fast.counts) if encoded is not None else None
    except Exception as exc:  # noqa: BLE001 - the engine's error, raised through the stage
        encoded, got = None, type(exc)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            slow = Instance.from_dataset(pydicom.dcmread(io.BytesIO(data), force=True))
            stage(slow)
            want: object = (encode_part10(slow.dataset), slow.counts)
        except Exception as exc:  # noqa: BLE001 - refused: the byte path must refuse too
            want = type(exc)
    if got is None:  # the stage used the engine itself: compare that
        got = want
    return got, want, encoded is not None


@pytest.mark.parametrize("options", [[], RICH, ["retain-uids", "retain-longitudinal-full-dates"]])
def test_same_bytes_and_counts_as_the_engine_on_the_corpus(shared: Path, options) -> None:
    paths = _corpus(shared)
    if options:
        paths = paths[::3]  # every folder still
    stage = Deidentify(secret=SECRET, options=options)
    fast = 0
    for path in paths:
        got, want, ran = _both(stage, path.read_bytes())
        assert got == want, path
        fast += ran
    # the byte path is no corner case: it handles most of the corpus
    assert fast >= len(paths) // 2, (fast, len(paths))


def test_planted_values_in_kept_attributes_are_masked_the_same(shared: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(shared / "corpus" / "series" / "dcm_qa_ct_ge" / "01.dcm")
    ds.PatientName, ds.PatientID = "Doe^Johnathan", "4711235"
    ds.InstitutionName = "Mercy West"
    ds.ImageType = [*ds.ImageType, "DOE JOHNATHAN"]
    ds.BodyPartExamined = "4711235"
    ds.ConvolutionKernel = "MERCY WEST"
    item = Dataset()
    item.CodeMeaning = "Johnathan Doe"
    ds.AnatomicRegionSequence = [item]
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    stage = Deidentify(secret=SECRET)
    first = None
    for _ in range(2):  # again through the same stage: what it remembers of the first
        got, want, ran = _both(stage, buffer.getvalue())
        assert ran and got == want
        data, counts = got  # type: ignore[misc]
        for value in (b"DOE JOHNATHAN", b"4711235", b"MERCY WEST", b"Johnathan Doe"):
            assert value not in data
        assert counts["deid.masked.ImageType"] == 1
        assert counts["deid.masked.CodeMeaning"] == 1
        assert first is None or got == first
        first = got


def test_sample_archive_with_private_blocks(sample_archive) -> None:
    paths = sorted(Path(p) for p in sample_archive.files)
    for options in ([], ["retain-safe-private"]):
        stage = Deidentify(secret=SECRET, options=options)
        for path in paths:
            got, want, _ = _both(stage, path.read_bytes())
            assert got == want, path


def test_settings_the_byte_path_leaves_to_the_engine(shared: Path, tmp_path: Path) -> None:
    data = (shared / "corpus" / "series" / "dcm_qa_ct_ge" / "01.dcm").read_bytes()
    plain = Instance("", _raw=data)
    Deidentify(secret=SECRET)(plain)
    assert plain.encoded is not None
    recipe = Recipe.from_toml('[recipe]\nremove = ["PatientAge"]\n')
    for stage in (
        Deidentify(secret=SECRET, recipe=recipe),
        Deidentify(secret=SECRET, crosswalk=str(tmp_path / "private" / "crosswalk.parquet")),
        Deidentify(secret=SECRET, lookup={"PatientID": {"x": "y"}}),
    ):
        instance = Instance("", _raw=data)
        stage(instance)
        assert instance.encoded is None and instance.dataset.PatientIdentityRemoved == "YES"


def test_replaced_bytes_are_what_every_sink_sees(shared: Path) -> None:
    """A sink that lands an unparsed instance's ``raw`` lands the de-identified bytes."""
    data = (shared / "corpus" / "series" / "dcm_qa_ct_ge" / "01.dcm").read_bytes()
    original = pydicom.dcmread(io.BytesIO(data))
    instance = Instance("", _raw=data)
    Deidentify(secret=SECRET)(instance)
    assert instance.parsed and instance.raw == instance.encoded != data
    assert instance.sop_instance_uid != original.SOPInstanceUID
    ds = instance.dataset  # parsed from the de-identified bytes
    assert ds.PatientID != original.PatientID and ds.PatientIdentityRemoved == "YES"
    assert instance.encoded is None  # parsed: the dataset may change, the bytes would be stale


def test_cli_deid_writes_the_engines_bytes(sample_archive, tmp_path: Path, secret_file) -> None:
    out = tmp_path / "share"
    rc = main(["deid", str(sample_archive.root), str(out), "--secret-file", str(secret_file)])
    assert rc == 1  # the sample holds a few broken files, which fail by themselves
    rows = [r for r in read_manifests(str(out) + ".manifests").to_pylist() if r["outputs"]]
    assert len(rows) >= 100
    stage = Deidentify(secret_file=str(secret_file))
    for row in rows:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            slow = Instance.from_dataset(pydicom.dcmread(row["source_uri"]))
        stage(slow)
        written = Path(row["outputs"][0]["path"]).read_bytes()
        assert written == encode_part10(slow.dataset), row["source_uri"]
        assert json.loads(row["counts"]) == slow.counts


def test_a_malformed_file_fails_as_the_engine_fails(shared: Path) -> None:
    data = (shared / "corpus" / "series" / "dcm_qa_ct_ge" / "01.dcm").read_bytes()
    cut = data[: len(data) // 3]
    got, want, ran = _both(Deidentify(secret=SECRET), cut)
    assert not ran and got == want


@pytest.mark.parametrize(
    "template",
    [
        "{PatientID}/{StudyInstanceUID}/{SeriesInstanceUID}/{SOPInstanceUID}.dcm",
        "{Modality}/{StudyDate}-{InstanceNumber}/{SOPInstanceUID}.dcm",  # IS: from the data set
        "{ImageType}/{SOPInstanceUID}.dcm",  # several values: read from the data set
        "{NoSuchKeyword}{PatientName}/{SOPInstanceUID}.dcm",
    ],
)
def test_part10_folder_names_encoded_bytes_as_the_dataset(shared, tmp_path, template) -> None:
    data = (shared / "corpus" / "series" / "dcm_qa_ct_ge" / "01.dcm").read_bytes()
    stage = Deidentify(secret=SECRET)
    fast = stage(Instance("", _raw=data))
    assert fast.encoded is not None
    slow = stage(Instance.from_dataset(pydicom.dcmread(io.BytesIO(data))))
    written = []
    for name, instance in (("fast", fast), ("slow", slow)):
        root = tmp_path / name
        [output] = Part10Folder(str(root), template=template).write(instance)
        written.append((Path(output.path).relative_to(root), Path(output.path).read_bytes()))
    assert written[0] == written[1]


def test_the_byte_paths_top_values_are_what_a_walk_reads(shared: Path) -> None:
    """A sink names a file from the values the byte path hands over with its bytes: they are
    what `top_values` reads from those bytes, for every top-level tag and absent ones."""
    stage = Deidentify(secret=SECRET)
    checked = 0
    for path in _corpus(shared)[::2]:
        instance = Instance("", _raw=path.read_bytes())
        try:
            stage(instance)
        except Exception:  # noqa: BLE001, S112 - refused by the engine: nothing handed over
            continue
        if instance.encoded is None:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(io.BytesIO(instance.encoded))
        tags = frozenset(int(t) for t in ds.keys()) | {0x00100021, 0x00200011, 0x7FE00010}
        assert instance.top_values(tags) == top_values(instance.encoded, tags), path
        checked += 1
    assert checked >= 10
