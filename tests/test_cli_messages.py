"""Mistakes a user makes get one line saying what is wrong, exit 2, and no traceback."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from dicomflow.cli import main


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens there once the socket is closed


def _pipeline(tmp_path: Path, corpus: Path, expr: str) -> str:
    path = tmp_path / "p.toml"
    path.write_text(
        f'[source]\nscan = "{corpus / "modality" / "CT"}"\n[[stages]]\ntype = "filter"\n'
        f'expr = "{expr}"\n[[sinks]]\ntype = "folder"\nroot = "{tmp_path / "out"}"\n'
    )
    return str(path)


CASES = {
    "missing secret file": (
        lambda t, c: ["deid", str(c / "modality/CT"), str(t / "o"), "--secret-file",
                      str(t / "nokey")],
        "cannot be read",
    ),
    "missing lookup table": (
        lambda t, c: ["deid", str(c / "modality/CT"), str(t / "o"), "--secret-env", "DFL_KEY",
                      "--lookup", str(t / "nolookup.csv"), "-q"],
        "lookup table",
    ),
    "unreachable S3 endpoint": (
        lambda t, c: ["scan", "s3://bucket/x", "-o", str(t / "a.parquet"), "--storage-options",
                      json.dumps({"endpoint_url": f"http://127.0.0.1:{_closed_port()}",
                                  "key": "k", "secret": "s",
                                  "config_kwargs": {"retries": {"max_attempts": 1}}})],
        "cannot list 's3://bucket/x'",
    ),
    "bad filter expression": (
        lambda t, c: ["run", _pipeline(t, c, "Modality = = CT")],
        "not a valid expression",
    ),
    "pipeline file that is not TOML": (
        lambda t, c: ["run", str(t / "bad.toml")],
        "not a valid pipeline file",
    ),
    "demo into a file": (lambda t, c: ["demo", str(t / "afile")], "is a file"),
    "scan to CSV": (
        lambda t, c: ["scan", str(c / "modality/CT"), "-o", str(t / "x.csv")],
        "scan writes Parquet",
    ),
    "unknown column": (
        lambda t, c: ["scan", str(c / "modality/CT"), "-o", str(t / "x.parquet"), "--columns",
                      "NotAKeyword"],
        "unknown column",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_mistake_is_one_clear_line(case, tmp_path, corpus, monkeypatch, capsys) -> None:
    monkeypatch.setenv("DFL_KEY", "a project secret of some length")
    (tmp_path / "bad.toml").write_text("[source\nscan =")
    (tmp_path / "afile").write_text("")
    argv, expected = CASES[case]
    assert main(argv(tmp_path, corpus)) == 2  # raises (and fails) on any traceback
    err = capsys.readouterr().err
    assert "error:" in err and expected in err, err
    assert "Traceback" not in err
