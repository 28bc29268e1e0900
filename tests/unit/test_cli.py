"""The `vaeops` command line: user errors are one `error:` line on stderr and exit code 2."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from vaeops import cli
from vaeops.config import ACTIVATION_NAMES

VAEOPS = Path(sys.executable).with_name("vaeops")  # the console script of this environment


def vaeops(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(VAEOPS), *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def run_main(monkeypatch, *args: str) -> int:
    """Call the console entry point in this process, as `vaeops ARGS` would."""
    monkeypatch.setattr(sys, "argv", ["vaeops", *args])
    monkeypatch.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # main() sets it if unset
    with pytest.raises(SystemExit) as caught:
        cli.main()
    return caught.value.code


def test_given_an_unknown_activation_when_training_then_one_error_line_and_exit_2(
    tiny_params_file, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)

    code = run_main(
        monkeypatch,
        "train",
        "--activation",
        "nope",
        "--seed",
        "0",
        "--params",
        str(tiny_params_file),
    )

    assert code == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("error:")
    assert "nope" in lines[0]
    for name in ACTIVATION_NAMES:
        assert name in lines[0]
    assert "Traceback" not in captured.err
    assert captured.out == ""
    assert not (tmp_path / "outputs").exists()  # nothing ran


def test_given_an_unknown_key_when_run_as_a_process_then_exit_2_without_traceback(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("sweep:\n  seeds: [0]\n  baseline:\n    knd: ae\n")

    result = vaeops("data", "fetch", "--params", str(params), cwd=tmp_path)

    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error:") and "sweep.baseline.knd" in lines[0]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "data").exists()


def test_given_a_params_file_with_an_unknown_key_when_run_then_exit_2_naming_the_key(
    tmp_path, monkeypatch, capsys
):
    params = tmp_path / "params.yaml"
    params.write_text("train:\n  epochs: 2\n  epochs_typo: 3\n")

    code = run_main(
        monkeypatch, "train", "--activation", "relu", "--seed", "0", "--params", str(params)
    )

    assert code == 2
    stderr = capsys.readouterr().err
    assert stderr.startswith("error:")
    assert "train.epochs_typo" in stderr
    assert str(params) in stderr


def test_given_a_missing_params_file_when_run_then_exit_2_naming_it(tmp_path, monkeypatch, capsys):
    missing = tmp_path / "nowhere.yaml"

    code = run_main(monkeypatch, "prepare", "--params", str(missing))

    assert code == 2
    stderr = capsys.readouterr().err
    assert stderr.startswith("error:") and str(missing) in stderr


def test_given_no_fetched_data_when_preparing_then_exit_2_saying_fetch_first(
    tiny_params_file, monkeypatch, capsys
):
    code = run_main(monkeypatch, "prepare", "--params", str(tiny_params_file))

    assert code == 2
    stderr = capsys.readouterr().err.strip()
    assert stderr.startswith("error:") and "vaeops data fetch" in stderr
    assert len(stderr.splitlines()) == 1


# What a user runs; the benchmark commands left for `python -m benchmarks`.
USER_COMMANDS = {
    "data",
    "prepare",
    "train",
    "evaluate",
    "summarize",
    "claim-sweeps",
    "classifier",
    "sample-quality",
    "promote",
    "report",
    "pull",
    "generate",
    "where",
    "flow",
    "schedule",
}


def test_given_help_when_run_then_exit_0_listing_exactly_the_user_commands(tmp_path):
    result = vaeops("--help", cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    commands_box = result.stdout.split("Commands")[1]
    listed = set(re.findall(r"^\W+ ([a-z][a-z-]*)  ", commands_box, flags=re.MULTILINE))
    assert listed == USER_COMMANDS
    assert "bench" not in result.stdout
