"""Calibration and frame-level evaluation refuse probabilities that another model than the bundle's made."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from vce.calibration.calibrate import fit_bundle
from vce.calibration.cli import calibrate_app, eval_app
from vce.runtime.bundle import Bundle
from vce.runtime.errors import VCEError
from vce.runtime.formats.framescsv import VideoFrames, write_frames_csv
from vce.runtime.formats.labelcsv import write_label_csv
from vce.runtime.formats.provenance import make_record, write_sidecar

MINE, OTHER = "1" * 64, "2" * 64


@pytest.fixture
def data(tmp_path: Path) -> tuple[Path, Path, Path]:
    """Validation probabilities made by OTHER, their labels, and a bundle of MINE."""
    rng = np.random.default_rng(0)
    (tmp_path / "labels").mkdir()
    videos = []
    for v in range(2):
        y = (rng.random((60, 17)) < 0.2).astype(float)
        videos.append(
            VideoFrames(f"v{v}", np.arange(60), np.clip(y * 0.7 + rng.random((60, 17)) * 0.3, 0, 1))
        )
        write_label_csv(tmp_path / "labels" / f"v{v}.csv", np.arange(60), y)
    csv = tmp_path / "val_probs.csv"
    write_frames_csv(csv, videos)
    write_sidecar(csv, make_record(csv, made_by="vce-train fit", model={"weights_sha256": OTHER}))
    bundle = Bundle.create(tmp_path / "bundle")
    bundle.manifest.model["weights_sha256"] = MINE
    bundle.save()
    return csv, tmp_path / "labels", bundle.root


FIT = ["--folds", "0", "--medians", "1", "--min-runs", "1", "--max-gaps", "0", "--no-plot"]


def test_calibrate_fit_refuses_another_models_probabilities(data) -> None:
    csv, labels, bundle = data
    before = (bundle / "manifest.json").read_text()
    res = CliRunner().invoke(
        calibrate_app, ["fit", str(csv), "--labels", str(labels), "--bundle", str(bundle), *FIT]
    )
    assert isinstance(res.exception, VCEError)  # run_cli turns it into one line and exit 2
    assert "was made by another model" in str(res.exception) and "--allow-other-model" in str(res.exception)
    assert (bundle / "manifest.json").read_text() == before
    res = CliRunner().invoke(
        calibrate_app,
        ["fit", str(csv), "--labels", str(labels), "--bundle", str(bundle), *FIT, "--allow-other-model"],
    )
    assert res.exit_code == 0, res.output
    assert "vce-calibrate: warning:" in res.output and "used anyway" in res.output
    with pytest.raises(VCEError, match="another model"):
        fit_bundle(csv, labels, bundle, plot=None, folds=0)


def test_eval_frames_refuses_another_models_probabilities_with_a_bundle(data) -> None:
    csv, labels, bundle = data
    res = CliRunner().invoke(eval_app, ["frames", str(csv), str(labels), "--bundle", str(bundle)])
    assert isinstance(res.exception, VCEError) and "was made by another model" in str(res.exception)
    res = CliRunner().invoke(
        eval_app, ["frames", str(csv), str(labels), "--bundle", str(bundle), "--allow-other-model", "--json"]
    )
    assert res.exit_code == 0 and "used anyway" in res.output
    res = CliRunner().invoke(eval_app, ["frames", str(csv), str(labels), "--threshold", "0.5"])
    assert res.exit_code == 0  # without a bundle there is nothing to compare with
