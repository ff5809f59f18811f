"""``vce-demo`` end to end, in its quick configuration (the full one is benchmarked in bench/)."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from vce.export.demo import DemoConfig, run_demo
from vce.runtime.bundle import Bundle
from vce.runtime.errors import VCEError


@pytest.mark.slow
def test_demo_runs_every_step_and_scores_the_heldout_video(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    cfg = DemoConfig.quick()
    result = run_demo(tmp_path / "demo", cfg)
    out, err = capfd.readouterr()
    # it says up front what it writes, and that the training frames go once the model is trained
    assert out.splitlines()[0].startswith(f"vce-demo writes into {tmp_path / 'demo'}/: about ")
    assert "deleted once the model is trained (--keep-frames keeps them)" in out.splitlines()[0]
    assert not (tmp_path / "demo" / "data" / "frames").exists()
    assert sorted(p.name for p in (tmp_path / "demo" / "data" / "labels").iterdir())[0] == "synth_000.csv"
    assert re.search(r"; \d+ MB in .*demo/", out)
    # the training step talks: one line per epoch with the loss, the validation AP and an ETA
    epochs = [line for line in err.splitlines() if line.startswith("epoch ")]
    assert len(epochs) == cfg.epochs, err
    assert re.match(r"epoch 1/2  loss \d\.\d{4}  val macro AP \d\.\d{3}  \d+\.\d s  ETA \d", epochs[0])
    assert epochs[-1].endswith("training done")
    files = result.files
    for name in ("events", "per-frame probabilities", "timeline", "ground truth"):
        assert Path(files[name]).is_file(), name
    assert sorted(p.name for p in Path(files["held-out videos"]).iterdir()) == ["heldout_000.mp4"]
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


def test_keep_frames_keeps_the_training_frames(tmp_path: Path) -> None:
    """--keep-frames: the frames stay, in the chosen format (a 1-epoch run on tiny videos)."""
    cfg = dataclasses.replace(DemoConfig.quick(), train_videos=2, val_videos=1, frames=40, epochs=1)
    run_demo(tmp_path / "demo", cfg, keep_frames=True)
    frames = sorted((tmp_path / "demo" / "data" / "frames" / "synth_000").iterdir())
    assert len(frames) == 40 and frames[0].name == "frame_000000.jpg"


def test_several_heldout_videos_are_scored_together(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """The held-out score is a mean over videos (one short video's temporal mAP swings with rounding)."""
    cfg = dataclasses.replace(
        DemoConfig.quick(), train_videos=2, val_videos=1, frames=40, epochs=1, heldout_videos=2
    )
    result = run_demo(tmp_path / "demo", cfg)
    events = json.loads(Path(result.files["events"]).read_text())
    assert [v["video_id"] for v in events["videos"]] == ["heldout_000", "heldout_001"]
    assert "(mean over 2 held-out video(s))" in capfd.readouterr().out
    assert DemoConfig().heldout_videos == 4
