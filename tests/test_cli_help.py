"""The help of every command line, as a user reads it at 80 and 100 columns.

On/off flags take no value: their help must not show one (Typer's Rich help printed ``--mp4 <bool>``
and ``--help <bool>``); ``vce-run``'s help is tested with ``vce-run`` (tests/runtime).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from vce.calibration.cli import calibrate_app, eval_app
from vce.export.cli import app as export_app
from vce.export.demo import app as demo_app
from vce.train.cli import app as train_app
from vce.train.config import available_configs

APPS: dict[str, tuple[typer.Typer, list[str]]] = {
    "vce-train": (train_app, ["synth", "fit", "predict"]),
    "vce-export": (export_app, ["onnx", "fp16", "trt", "parity"]),
    "vce-calibrate": (calibrate_app, ["fit", "int8"]),
    "vce-eval": (eval_app, ["score", "gt", "frames"]),
    "vce-demo": (demo_app, []),
}
CASES = [(prog, cmd) for prog, (_, cmds) in APPS.items() for cmd in [None, *cmds]]


def _words(text: str) -> str:
    """The help's words, one space apart, without the panels' borders (wrapped text joins up)."""
    return " ".join(text.replace("│", " ").split())


def _help(prog: str, command: str | None, columns: int) -> str:
    app, _ = APPS[prog]
    args = [command, "--help"] if command else ["--help"]
    res = CliRunner().invoke(app, args, env={"COLUMNS": str(columns)}, prog_name=prog)
    assert res.exit_code == 0, res.output
    return res.output


@pytest.mark.parametrize("columns", [80, 100])
@pytest.mark.parametrize(("prog", "command"), CASES)
def test_flags_show_no_value_and_help_fits(prog: str, command: str | None, columns: int) -> None:
    text = _help(prog, command, columns)
    assert "<bool>" not in text
    assert all(len(line) <= columns for line in text.splitlines()), text
    assert "…" not in text, "an option name or value was cut off"
    assert "Show this message and exit." in _words(text)


def test_flags_still_parse_as_flags(tmp_path: Path) -> None:
    res = CliRunner().invoke(
        train_app, ["synth", str(tmp_path / "s"), "--videos", "1", "--frames", "8", "--size", "64", "--mp4"]
    )
    assert res.exit_code == 0, res.output
    assert (tmp_path / "s" / "videos" / "synth_000.mp4").is_file()
    fit_help = _help("vce-train", "fit", 100)
    line = next(line for line in fit_help.splitlines() if "--augment" in line)
    assert "--no-augment" in line and "<bool>" not in line


def test_model_help_names_every_config() -> None:
    assert {"tiny", "small", "biomedclip"} <= set(available_configs())
    fit_help = _words(_help("vce-train", "fit", 100))
    assert "model config: " + " | ".join(available_configs()) in fit_help
    onnx_help = _words(_help("vce-export", "onnx", 100))
    assert "model spec with random weights: " + ", ".join(available_configs()) in onnx_help


def test_synth_prints_no_empty_line_first(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "vce.train.cli", "synth", str(tmp_path / "s"), "--videos", "1", "--frames", "8",
         "--size", "64"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert proc.stdout == f"wrote 1 videos x 8 frames to {tmp_path / 's'}\n"
    assert proc.stderr == ""
