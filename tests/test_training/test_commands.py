"""The training commands reach ``xdrec`` through the entry point, not through an import."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream.cli import main


def test_training_commands_are_plugged_into_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    listed = capsys.readouterr().out
    assert all(name in listed for name in ("evaluate", "model", "trainer"))

    assert main(["model", "list", "--store", str(tmp_path / "store")]) == 0
    assert capsys.readouterr().out == ""


def test_evaluate_without_a_dataset_says_what_is_missing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["evaluate", "--out", str(tmp_path)]) == 1
    assert "--dataset is required" in capsys.readouterr().err


def test_evaluate_refuses_a_negative_epoch_count(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["evaluate", "--dataset", str(tmp_path), "--out", str(tmp_path), "--train-epochs", "-1"]
    assert main(args) == 1
    assert "--train-epochs must be 0" in capsys.readouterr().err
