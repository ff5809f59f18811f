"""``vce-demo`` end to end, in its quick configuration (the full one is benchmarked in bench/)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from vce.export.demo import DemoConfig, run_demo
from vce.runtime.bundle import Bundle
from vce.runtime.errors import VCEError


@pytest.mark.slow
def test_demo_runs_every_step_and_scores_the_heldout_video(tmp_path: Path) -> None:
    result = run_demo(tmp_path / "demo", DemoConfig.quick())
    files = result.files
    for name in ("events", "per-frame probabilities", "timeline", "ground truth", "held-out video"):
        assert Path(files[name]).is_file(), name
    events = json.loads(Path(files["events"]).read_text())
    assert [v["video_id"] for v in events["videos"]] == ["heldout_000"]
    bundle = Bundle.load(files["bundle"])  # hashes verified
    assert bundle.manifest.calibration, "calibration was not written into the bundle"
    assert 0.0 <= result.map95 <= result.map50 <= 1.0
    # even the short training learns: frame-level AP well above the label prevalence (chance)
    assert result.val_macro_ap > result.val_prevalence + 0.2
    assert set(result.steps) >= {
        "train the small differential-attention model (CPU)",
        "export the ONNX bundle",
    }


def test_demo_refuses_a_folder_it_did_not_write(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(VCEError, match="not an earlier demo folder"):
        run_demo(tmp_path, DemoConfig.quick())
    assert (tmp_path / "precious.txt").read_text() == "keep me"
    proc = subprocess.run(
        [sys.executable, "-c", "from vce.export.demo import main; main()", "--out", str(tmp_path), "--quick"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("vce-demo: error:") and "Traceback" not in proc.stderr
