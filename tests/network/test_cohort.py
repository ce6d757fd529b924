"""Cohort pulls: a CSV of queries, one plan, an outcome per row; windows and rate limits end to
end against Orthanc."""

from __future__ import annotations

import collections
import datetime as dt
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dicomflow.errors import ConfigError
from dicomflow.network import (
    PullOptions,
    TokenBucket,
    plan,
    pull,
    read_cohort,
    read_records,
    read_state,
)

from .conftest import lake_files

#: Studies of the corpus files in the ``orthanc`` fixture (tests/network/conftest.py).
MR_STUDY = "1.3.12.2.1107.5.2.32.35131.30000014022817282751500000052"  # PatientID crlab, 2 files
SEG_STUDY = "1.3.6.1.4.1.5962.1.1.0.0.0.1196530851.28319.0.1"  # AccessionNumber 2, 1 file
CT_STUDY = "1.2.826.0.1.3680043.9.4245.1760717064491086528325869788156915668"  # 28 files

COHORT = (
    "PatientID,AccessionNumber,StudyDate\n"
    "crlab,,2014-03-01..2014-03-31\n"  # the MR study, by patient and a date range
    ",2,\n"  # the SEG study, by accession number
    ",NOPE-404,20240101\n"  # nothing
)


def write(tmp_path: Path, text: str, name: str = "cohort.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def studies_in(lake: Path) -> collections.Counter[str]:
    return collections.Counter(p.parent.parent.name for p in lake_files(lake))


# -- reading a cohort (no network) -------------------------------------------------------------


def test_read_cohort_rows_mix_columns_and_date_forms(tmp_path):
    cohort = read_cohort(write(tmp_path, COHORT))
    assert cohort.columns == ("PatientID", "AccessionNumber", "StudyDate")
    assert [r.keys for r in cohort.rows] == [
        {"PatientID": "crlab", "StudyDate": "20140301-20140331"},
        {"AccessionNumber": "2"},
        {"AccessionNumber": "NOPE-404", "StudyDate": "20240101"},
    ]
    assert [r.number for r in cohort.rows] == [1, 2, 3]
    assert cohort.rows[0].cells == {"PatientID": "crlab", "StudyDate": "2014-03-01..2014-03-31"}
    assert cohort.rows[0].query == "PatientID=crlab StudyDate=20140301-20140331"


def test_read_cohort_from_tables_frames_and_rows(tmp_path):
    import pandas as pd
    import polars as pl

    rows = [{"AccessionNumber": "A1", "StudyDate": dt.date(2024, 1, 31)},
            {"PatientID": 7, "AccessionNumber": None}]  # fmt: skip
    expected = [{"AccessionNumber": "A1", "StudyDate": "20240131"}, {"PatientID": "7"}]
    assert [r.keys for r in read_cohort(rows).rows] == expected
    assert [r.keys for r in read_cohort(pd.DataFrame(rows)).rows] == expected
    table = pa.table({"AccessionNumber": ["A1", None], "StudyDate": [dt.date(2024, 1, 31), None],
                      "PatientID": [None, 7]})  # fmt: skip
    assert [r.keys for r in read_cohort(table).rows] == expected
    assert [r.keys for r in read_cohort(pl.from_arrow(table)).rows] == expected
    pq.write_table(table, tmp_path / "c.parquet")
    assert [r.keys for r in read_cohort(tmp_path / "c.parquet").rows] == expected


def test_read_cohort_separators_and_bom(tmp_path):
    semi = write(tmp_path, "\ufeffAccessionNumber;PatientID\nA1;P1\n", "semi.csv")
    assert [r.keys for r in read_cohort(semi).rows] == [
        {"AccessionNumber": "A1", "PatientID": "P1"}
    ]
    tsv = write(tmp_path, "AccessionNumber\tStudyDescription\nA1\tCT CHEST\n", "c.tsv")
    (row,) = read_cohort(tsv).rows
    assert row.keys == {"AccessionNumber": "A1", "StudyDescription": "CT CHEST"}
    assert row.query == 'AccessionNumber=A1 StudyDescription="CT CHEST"'


def test_common_query_joins_every_row():
    cohort = read_cohort(
        [{"PatientID": "P1"}, {"PatientID": "P2", "Modality": "CT"}], "Modality=CT"
    )
    assert [r.keys for r in cohort.rows] == [
        {"Modality": "CT", "PatientID": "P1"},
        {"Modality": "CT", "PatientID": "P2"},
    ]
    with pytest.raises(ConfigError, match=r"row 1: Modality differs from the common query"):
        read_cohort([{"PatientID": "P1", "Modality": "MR"}], "Modality=CT")


def test_read_cohort_refuses_what_it_cannot_query_naming_the_rows(tmp_path):
    with pytest.raises(ConfigError, match=r"not keywords: 'AccesionNumber' \(did you mean Acc"):
        read_cohort(write(tmp_path, "AccesionNumber\nA1\n"))
    bad = "PatientID,StudyDate,SeriesDescription\nP1,2024-13-01,\n,,\nP3,,\n,,T1\n"
    with pytest.raises(ConfigError) as info:
        read_cohort(write(tmp_path, bad))
    message = str(info.value)
    assert "3 row(s) cannot be queried" in message
    assert "row 1: " in message and "StudyDate" in message  # month 13
    assert "row 2 is empty: its study C-FIND would match every study" in message
    assert "row 4 has no patient- or study-level value" in message
    assert "row 3" not in message
    with pytest.raises(ConfigError, match="has no rows"):
        read_cohort(write(tmp_path, "PatientID\n"))
    with pytest.raises(ConfigError, match="does not exist"):
        read_cohort(tmp_path / "missing.csv")
    with pytest.raises(ConfigError, match="more cells than the header"):
        read_cohort(write(tmp_path, "PatientID\nP1,P2\n"))


def test_image_level_key_in_a_row_is_refused_before_any_query():
    with pytest.raises(ConfigError, match=r"row 2: a pull fetches whole series: SOPInstanceUID"):
        rows = [{"PatientID": "P1"}, {"PatientID": "P2", "SOPInstanceUID": "1.2"}]
        plan("NOBODY@127.0.0.1:9", cohort=rows)


# -- against Orthanc ---------------------------------------------------------------------------


def test_cohort_pull_fetches_exactly_the_matched_studies_then_nothing(orthanc, tmp_path):
    cohort = write(tmp_path, COHORT)
    lake = tmp_path / "lake"
    opts = PullOptions(ae_title="COHORT", method="get")
    events = []
    report = pull(orthanc.peer, lake=lake, cohort=cohort, options=opts, progress=events.append)
    assert report.complete, report.table.to_pylist()
    assert studies_in(lake) == {MR_STUDY: 2, SEG_STUDY: 1}
    # one plan: all rows queried first, then one total of de-duplicated series
    kinds = [e.kind for e in events]
    assert kinds.index("planned") > max(i for i, k in enumerate(kinds) if k == "queried")
    assert [e.done for e in events if e.kind == "queried"] == [1, 2, 3]
    (planned,) = [e for e in events if e.kind == "planned"]
    assert planned.total == 2 and "from 3 cohort rows" in planned.detail
    assert report.planned.column("cohort_rows").to_pylist() == [[1], [2]]
    # the outcome table: every row, the no-match one clearly
    outcome = report.cohort.to_pylist()
    assert [(r["row"], r["status"], r["studies"], r["series"]) for r in outcome] == [
        (1, "complete", 1, 1), (2, "complete", 1, 1), (3, "no match", 0, 0),
    ]  # fmt: skip
    assert outcome[0]["study_instance_uids"] == [MR_STUDY] and outcome[0]["present"] == 2
    assert outcome[2]["AccessionNumber"] == "NOPE-404" and outcome[2]["study_instance_uids"] == []
    assert [r["row"] for r in report.unmatched] == [3]
    assert "cohort: 2/3 rows matched" in report.summary()
    # written beside the report
    assert (
        Path(report.plan_path).parent == Path(report.path).parent == Path(report.cohort_path).parent
    )
    assert read_state(str(lake), "cohort").num_rows == 3
    assert read_state(str(lake), "plan").num_rows == 2
    # a rerun fetches nothing
    again = pull(orthanc.peer, lake=lake, cohort=cohort, options=opts)
    assert again.complete and again.fetched == 0
    assert set(again.table.column("status").to_pylist()) == {"already complete"}
    assert [r["status"] for r in again.cohort.to_pylist()] == ["complete", "complete", "no match"]
    assert read_records(str(lake)).num_rows == 3


def test_series_matched_by_several_rows_are_fetched_once(orthanc, tmp_path):
    rows = [{"AccessionNumber": "2"}, {"PatientID": "77654033"}, {"StudyInstanceUID": SEG_STUDY},
            {"StudyInstanceUID": MR_STUDY}]  # fmt: skip
    events = []
    report = pull(orthanc.peer, lake=tmp_path, cohort=rows,
                  options=PullOptions(ae_title="COHORT"), progress=events.append)  # fmt: skip
    assert report.complete and report.table.num_rows == 2
    assert sorted(report.planned.column("cohort_rows").to_pylist()) == [[1, 2, 3], [4]]
    assert [e.total for e in events if e.kind == "planned"] == [2]
    assert [e.kind for e in events].count("series-start") == 2
    assert studies_in(tmp_path) == {MR_STUDY: 2, SEG_STUDY: 1}


def test_cohort_with_a_common_query_and_plan(orthanc, tmp_path):
    rows = [{"PatientID": "crlab"}, {"PatientID": "QMNx85rKkkg"}]
    planned = plan(orthanc.peer, "Modality=CT", cohort=rows)
    assert planned.column("cohort_rows").to_pylist() == [[2]]  # crlab has MR only
    assert planned.column("study_instance_uid").to_pylist() == [CT_STUDY]


# -- rate limits and the window end to end -----------------------------------------------------


def test_a_tiny_rate_budget_schedules_the_retrieves(orthanc, tmp_path, monkeypatch):
    """2 studies an hour, on a clock that moves only when the pull waits: the retrieves are
    scheduled half an hour apart, and the pull completes."""
    rows = [{"AccessionNumber": "2"}, {"PatientID": "crlab"}, {"PatientID": "SCSRUSS"},
            {"PatientID": "H31EXAMPLE"}]  # fmt: skip
    virtual = {"t": 0.0}
    sleeps = []

    def pass_time(seconds):
        sleeps.append(seconds)
        virtual["t"] += seconds
        return False

    gate = PullOptions.gate

    def gate_on_our_clock(self, sleep=None):
        built = gate(self, sleep)
        built.studies = TokenBucket(built.studies.rate, built.studies.capacity,
                                    clock=lambda: virtual["t"])  # fmt: skip
        built.sleep = pass_time
        return built

    monkeypatch.setattr(PullOptions, "gate", gate_on_our_clock)
    opts = PullOptions(ae_title="RATE", method="get", concurrency=1, max_studies_per_hour=2)
    events = []
    report = pull(orthanc.peer, lake=tmp_path, cohort=rows, options=opts, progress=events.append)
    assert report.complete and len(studies_in(tmp_path)) == 4
    assert report.table.column("waited").to_pylist() == [0.0, 1800.0, 1800.0, 1800.0]
    assert sleeps == [1800.0] * 3 and virtual["t"] == 5400.0
    waits = [e for e in events if e.kind == "waiting"]
    assert [e.wait for e in waits] == [1800.0] * 3
    assert "rate limit (2 studies/hour): next retrieve in 30 min" in waits[0].detail


def test_rate_limit_on_the_real_clock_still_completes(orthanc, tmp_path):
    """36,000 studies an hour: study retrieves at least 0.1 s apart; checked generously."""
    rows = [{"AccessionNumber": "2"}, {"PatientID": "crlab"}, {"PatientID": "SCSRUSS"},
            {"PatientID": "H31EXAMPLE"}]  # fmt: skip
    opts = PullOptions(ae_title="RATE", method="get", concurrency=2, max_studies_per_hour=36000)
    report = pull(orthanc.peer, lake=tmp_path, cohort=rows, options=opts)
    assert report.complete and len(studies_in(tmp_path)) == 4
    starts = sorted(r["started"] for r in report.table.to_pylist())
    assert (starts[-1] - starts[0]).total_seconds() >= 0.15  # 0.3 s planned: half of it, at least


def test_instances_rate_limit_completes(orthanc, tmp_path):
    opts = PullOptions(ae_title="RATE", method="get", max_instances_per_second=200)
    report = pull(orthanc.peer, "Modality=CT", tmp_path, opts)  # 28 instances: one retrieve
    assert report.complete and report.fetched == 28


def _closed_window() -> str:
    """A one-hour window that starts two hours from now (local time): closed now."""
    start = dt.datetime.now() + dt.timedelta(hours=2)
    end = start + dt.timedelta(hours=1)
    return f"{start:%H:%M}-{end:%H:%M}"


def test_closed_window_with_stop_retrieves_nothing(orthanc, tmp_path):
    opts = PullOptions(ae_title="NIGHT", window=_closed_window(), outside_window="stop")
    report = pull(orthanc.peer, lake=tmp_path / "api", cohort=[{"AccessionNumber": "2"}],
                  options=opts)  # fmt: skip
    assert not report.complete and "resume later" in report.stopped
    assert report.table.num_rows == 0 and lake_files(tmp_path / "api") == []
    # the command: exit code 3 (stopped early: run it again to resume), nothing retrieved
    cohort = write(tmp_path, COHORT)
    result = subprocess.run(
        [sys.executable, "-m", "dicomflow.cli", "pull", "--pacs", str(orthanc.peer), "--ae",
         "NIGHT", "--cohort", str(cohort), "--lake", str(tmp_path / "cli"), "--window",
         _closed_window(), "--stop-outside-window", "--method", "get"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 3, result.stderr
    assert "outside the window" in result.stderr and "resume later" in result.stderr
    assert "error" not in result.stderr
    assert lake_files(tmp_path / "cli") == []


def test_window_closing_midway_defers_the_rest(orthanc, tmp_path, monkeypatch):
    """The window is open for the pull's start and its first retrieve, then closed (a local
    clock that jumps): the rest is deferred, the report says so, a rerun finishes."""
    rows = [{"AccessionNumber": "2"}, {"PatientID": "crlab"}, {"PatientID": "SCSRUSS"}]
    opts = PullOptions(ae_title="NIGHT", method="get", concurrency=1, window="00:00-23:59",
                       outside_window="stop")  # fmt: skip
    asked = []

    def clock():
        asked.append(1)
        return (
            dt.datetime(2024, 3, 1, 12, 0) if len(asked) <= 2 else dt.datetime(2024, 3, 1, 23, 59)
        )

    gate = PullOptions.gate

    def gate_on_our_clock(self, sleep=None):
        built = gate(self, sleep)
        built.now = clock
        return built

    monkeypatch.setattr(PullOptions, "gate", gate_on_our_clock)
    report = pull(orthanc.peer, lake=tmp_path, cohort=rows, options=opts)
    statuses = report.table.column("status").to_pylist()
    assert statuses == ["complete", "deferred", "deferred"], report.table.to_pylist()
    assert report.stopped and "outside the window 00:00-23:59" in report.stopped
    assert not report.complete and "2 series deferred" in report.summary()
    assert [r["status"] for r in report.cohort.to_pylist()] == ["complete", "deferred", "deferred"]
    assert studies_in(tmp_path) == {SEG_STUDY: 1}
    monkeypatch.undo()
    again = pull(orthanc.peer, lake=tmp_path, cohort=rows, options=PullOptions(ae_title="NIGHT"))
    assert again.complete and again.fetched == 2 + 1


def test_cli_cohort_pull_lists_the_row_that_matched_nothing_and_resumes(orthanc, tmp_path, capsys):
    from dicomflow.cli import main

    cohort = write(tmp_path, COHORT)
    lake = tmp_path / "lake"
    args = ["pull", "--pacs", str(orthanc.peer), "--ae", "COHORT", "--method", "get", "--cohort",
            str(cohort), "--lake", str(lake), "--max-studies-per-hour", "36000"]  # fmt: skip
    assert main(args) == 1  # complete, but a row matched nothing: a finding
    err = capsys.readouterr().err
    assert "queried 3/3 cohort rows" in err and "planned 2 series in 2 studies, from 3" in err
    assert "1 of 3 cohort rows matched nothing" in err
    assert "row 3: AccessionNumber=NOPE-404 StudyDate=20240101" in err
    assert "cohort outcome: " in err and "plan: " in err
    assert studies_in(lake) == {MR_STUDY: 2, SEG_STUDY: 1}
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "2/2 series complete" in err and "(0 fetched now" in err
    outcome = read_state(str(lake), "cohort")
    assert outcome.num_rows == 6 and outcome.column("status").to_pylist().count("no match") == 2
