"""The `vce-train` command-line contract: synth, fit, predict, one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from vce.runtime.formats.framescsv import COLUMNS, read_frames_csv
from vce.runtime.labels import LABELS
from vce.train.cli import app

runner = CliRunner()


def test_synth_contract(tmp_path: Path) -> None:
    out = tmp_path / "s"
    res = runner.invoke(
        app, ["synth", str(out), "--videos", "2", "--frames", "12", "--seed", "3", "--mp4", "--size", "64"]
    )
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (out / "frames").iterdir()) == ["synth_000", "synth_001"]
    assert (out / "frames" / "synth_001" / "frame_000011.png").is_file()
    assert (out / "labels" / "synth_000.csv").read_text().splitlines()[0] == ",".join(["frame", *LABELS])
    assert (out / "videos" / "synth_000.mp4").stat().st_size > 0


def test_fit_then_predict(synth_data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    res = runner.invoke(
        app,
        [
            "fit",
            "--data",
            str(synth_data),
            "--model",
            "tiny",
            "--variant",
            "paper",
            "--epochs",
            "1",
            "--out",
            str(run),
            "--batch-size",
            "8",
            "--stride",
            "6",
            "--val-stride",
            "10",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "validation macro AP" in res.output
    for name in ("model.safetensors", "model_config.json", "val_probs.csv", "val_labels.csv"):
        assert (run / name).is_file()
    out = tmp_path / "pred.csv"
    res = runner.invoke(
        app,
        ["predict", "--checkpoint", str(run), "--data", str(synth_data), "--out", str(out), "--stride", "30"],
    )
    assert res.exit_code == 0, res.output
    assert out.read_text().splitlines()[0].split(",") == list(COLUMNS)
    probs = read_frames_csv(out)
    assert sorted(probs) == ["synth_000", "synth_001", "synth_002"]
    from vce.runtime.formats.provenance import read_provenance
    from vce.train.checkpoint import weights_sha256

    prov, why = read_provenance(out)
    assert prov is not None and prov.weights_sha256 == weights_sha256(run), why
    assert np.array_equal(probs["synth_000"].frames, [0, 30])


def test_errors_are_one_line(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "vce.train.cli",
            "fit",
            "--data",
            str(tmp_path / "missing"),
            "--out",
            str(tmp_path / "r"),
            "--model",
            "tiny",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vce-train: error:") and "missing" in lines[0]
