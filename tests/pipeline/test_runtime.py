"""The stage runtime: what each way a stage can end becomes, the same for every source."""

from __future__ import annotations

import errno
import sys
from dataclasses import fields
from pathlib import Path

import pytest

import dicomflow as dfl
from dicomflow.dicom import split_part10
from dicomflow.network import Lake
from dicomflow.pipeline import OUTPUT_TYPE, Instance, Outcome, Output, Skip, run_stages, stage_name
from dicomflow.sample import make_sample

sys.path.insert(0, str(Path(__file__).parent))
import stages_for_tests as st  # noqa: E402


def keep(instance: Instance) -> Instance:
    instance.counts["kept"] = 1
    return instance


def drop(instance: Instance) -> None:
    return None


def refuse(instance: Instance) -> Instance:
    raise Skip("not for us")


def explode(instance: Instance) -> Instance:
    raise ValueError("no Modality")


def fill_disk(instance: Instance) -> Instance:
    raise OSError(errno.ENOSPC, "No space left on device", "/out/x.dcm")


class Collect:
    """A sink writing nothing, recording one output per instance."""

    name = "collect"

    def write(self, instance: Instance) -> list[Output]:
        return [Output.of_bytes(self.name, f"mem://{instance.uri}", b"abc")]


class Broken:
    name = "broken"

    def write(self, instance: Instance) -> list[Output]:
        raise PermissionError("read-only")


def test_a_clean_run_is_done_with_the_outputs() -> None:
    inst = Instance("a.dcm")
    outcome = run_stages([keep], inst, sinks=[Collect()])
    assert isinstance(outcome, Outcome)
    assert (outcome.status, outcome.stage, outcome.reason) == ("done", None, None)
    assert outcome.instance is inst and inst.counts == {"kept": 1}
    assert [o.path for o in outcome.outputs] == ["mem://a.dcm"]
    assert outcome.outputs[0].record() == {
        "sink": "collect", "path": "mem://a.dcm", "size": 3,
        "sha256": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
    }  # fmt: skip
    assert outcome.seconds >= 0 and not outcome.disk_full
    assert [f.name for f in OUTPUT_TYPE] == [f.name for f in fields(Output)]
    assert Output.of_parts("x", "p", [b"a", memoryview(b"bc")]) == Output.of_bytes("x", "p", b"abc")


def test_none_drops_naming_the_stage() -> None:
    outcome = run_stages([keep, drop, explode], Instance("a.dcm"), sinks=[Collect()])
    assert (outcome.status, outcome.stage, outcome.reason) == ("skipped", "drop", "dropped by drop")
    assert outcome.dropped and outcome.instance is None and not outcome.outputs
    assert run_stages([dfl.map(drop)], Instance("a")).reason == "dropped by map(drop)"


def test_skip_gives_its_message() -> None:
    outcome = run_stages([refuse], Instance("a.dcm"))
    assert (outcome.status, outcome.stage, outcome.reason) == ("skipped", "refuse", "not for us")
    assert outcome.exception == "Skip" and not outcome.dropped


def test_an_exception_fails_with_its_type_and_message() -> None:
    outcome = run_stages([keep, explode], Instance("a.dcm"))
    assert (outcome.status, outcome.stage) == ("failed", "explode")
    assert outcome.reason == "ValueError: no Modality" and outcome.exception == "ValueError"
    assert not outcome.disk_full


def test_a_failing_sink_keeps_what_earlier_sinks_wrote() -> None:
    outcome = run_stages([], Instance("a.dcm"), sinks=[Collect(), Broken()])
    assert (outcome.status, outcome.stage) == ("failed", "broken")
    assert outcome.reason == "PermissionError: read-only"
    assert [o.sink for o in outcome.outputs] == ["collect"]


def test_a_full_disk_is_a_failure_that_says_so() -> None:
    outcome = run_stages([fill_disk], Instance("a.dcm"))
    assert outcome.status == "failed" and outcome.disk_full
    assert outcome.reason == "no space left: [Errno 28] No space left on device: '/out/x.dcm'"
    other = run_stages([lambda i: open("/nonexistent/dir/x", "rb")], Instance("a.dcm"))
    assert other.reason.startswith("FileNotFoundError: ") and not other.disk_full


def test_interrupts_are_not_per_instance_failures() -> None:
    def interrupt(instance: Instance) -> Instance:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_stages([interrupt], Instance("a.dcm"))


def test_stage_names() -> None:
    assert stage_name(dfl.map(st.stamp)) == "map(stamp)"
    assert stage_name(keep) == "keep"
    assert stage_name(Collect()) == "collect"

    class Unnamed:
        def __call__(self, instance):
            return instance

    assert stage_name(Unnamed()) == "Unnamed"


@pytest.fixture(scope="module")
def one_file(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("one")
    info = make_sample(root / "sample")
    one = root / "src" / "one.dcm"
    one.parent.mkdir()
    one.write_bytes(info.files[0].read_bytes())
    return one


@pytest.mark.parametrize("stage", [explode, fill_disk, drop, refuse], ids=lambda s: s.__name__)
def test_lake_and_pipeline_give_the_same_reason(one_file: Path, tmp_path: Path, stage) -> None:
    report = (
        (dfl.pipeline(dfl.scan(one_file.parent)) | dfl.map(stage))
        .write(dfl.writers.Part10Folder(str(tmp_path / "out")))
        .execute(workers=1, manifest=tmp_path / "m")
    )
    (row,) = report.manifest.to_pylist()
    sop_class, sop, ts, body = split_part10(one_file.read_bytes())
    with Lake(tmp_path / "lake", stages=[dfl.map(stage)]) as lake:
        landed = lake.receive(sop_class=sop_class, sop_instance=sop, transfer_syntax=ts,
                              dataset=body, calling_ae="MODALITY")  # fmt: skip
        stats = lake.stats
    assert landed.stage == row["stage"] == f"map({stage.__name__})"
    if row["status"] == "failed":
        assert landed.status == "failed" and landed.reason == row["reason"]
        assert landed.sop_instance_uid == sop and stats.failed == 1
    elif stage is drop:
        assert landed.status == "dropped" and landed.reason == row["reason"]
    else:  # the lake's reason for a Skip names the stage, as it always did
        assert landed.status == "dropped" and landed.reason == f"{row['stage']}: {row['reason']}"
    if stage is fill_disk:
        assert report.stopped == row["reason"]


def test_a_full_disk_in_a_stage_stops_the_run(tmp_path: Path) -> None:
    make_sample(tmp_path / "src")
    report = (
        dfl.pipeline(dfl.scan(tmp_path / "src"))
        | dfl.map(fill_disk)
    ).execute(workers=1, batch_size=4)  # fmt: skip
    rows = report.manifest.to_pylist()
    assert report.stopped and report.stopped.startswith("no space left: ")
    assert [r["stage"] for r in rows if r["status"] == "failed" and r["stage"] != "scan"] == [
        "map(fill_disk)"
    ]
    assert {r["reason"] for r in rows if r["stage"] == "run"} == {
        f"not processed: the run stopped early ({report.stopped})"
    }
    assert len(rows) == dfl.scan(tmp_path / "src").to_arrow().num_rows
