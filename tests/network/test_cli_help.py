"""``dicomflow echo|find|pull|receive --help`` shows every option's default."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys

import pytest

from dicomflow.cli import build_parser

COMMANDS = ("echo", "find", "pull", "receive")


def subcommand(name: str) -> argparse.ArgumentParser:
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return sub.choices[name]


def help_of(name: str, capsys, monkeypatch) -> str:
    """What ``dicomflow NAME --help`` prints, whitespace made single spaces (lines wrap)."""
    monkeypatch.setenv("COLUMNS", "100")
    with pytest.raises(SystemExit) as done:
        build_parser().parse_args([name, "--help"])
    assert done.value.code == 0
    return re.sub(r"\s+", " ", capsys.readouterr().out)


@pytest.mark.parametrize("name", COMMANDS)
def test_every_option_shows_its_default(name, capsys, monkeypatch):
    text = help_of(name, capsys, monkeypatch)
    checked = 0
    for action in subcommand(name)._actions:
        if action.dest == "help" or action.required:
            continue
        if isinstance(action, argparse._StoreTrueAction):  # a switch: off unless given
            assert action.default is False
            continue
        flag = action.option_strings[-1]  # the last alias: its help follows it
        # the option's own entry: from its flag to the next option's entry
        entry = re.search(rf"(?:^|\s){re.escape(flag)}\b.*?(?= --?[a-z][\w-]* |$)", text)
        assert entry, flag
        if action.default in (None, "", []):
            assert "default: " in entry.group(0), (flag, entry.group(0))  # what "none" means
        else:
            assert f"(default: {action.default})" in entry.group(0), (flag, entry.group(0))
        checked += 1
    assert checked >= 2


def test_the_values_shown_are_the_values_used():
    """The command itself (a process of its own) prints the defaults the parser applies."""
    pull = subcommand("pull").parse_args(["--pacs", "A@h:1", "--lake", "x"])
    assert (pull.port, pull.method, pull.retries, pull.fsync, pull.concurrency) == (
        11113, "auto", 3, "batch", 2,
    )  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-m", "dicomflow.cli", "pull", "--help"],
        capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "100"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    text = re.sub(r"\s+", " ", result.stdout)
    for value in ("(default: 11113)", "(default: auto)", "(default: 3)", "(default: batch)"):
        assert value in text
