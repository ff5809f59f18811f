"""``vce-demo`` end to end, in its quick configuration (the full one is benchmarked in bench/)."""

from __future__ import annotations

import dataclasses
import inspect
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

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
    # the training step talks: one line per epoch with the loss and an ETA, and the validation AP
    # after the epochs it validates (every `val_every` and the last)
    epochs = [line for line in err.splitlines() if line.startswith("epoch ")]
    assert len(epochs) == cfg.epochs == 2 and cfg.val_every > 1, err
    assert re.match(r"epoch 1/2  loss \d\.\d{4}  \d+\.\d s  ETA \d", epochs[0])
    assert re.match(r"epoch 2/2  loss \d\.\d{4}  val macro AP \d\.\d{3}  \d+\.\d s  training done", epochs[1])
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


class _Called(Exception):
    """Raised by a recorded function once it has recorded its call: nothing runs beyond it."""


def _record(
    monkeypatch: pytest.MonkeyPatch, calls: list[dict[str, object]], module: object, name: str
) -> None:
    real = getattr(module, name)
    signature = inspect.signature(real)

    def recorder(*args: object, **kwargs: object) -> object:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        callbacks = {k for k, p in signature.parameters.items() if "Callable" in str(p.annotation)}
        calls.append({k: v for k, v in bound.arguments.items() if k not in callbacks})  # they differ
        raise _Called

    monkeypatch.setattr(module, name, recorder)


def test_printed_commands_parse_to_what_the_demo_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each step's printed command, parsed by the real command line, makes the same call as the demo."""
    import vce.calibration.calibrate as calibrate
    import vce.calibration.groundtruth as groundtruth
    import vce.calibration.metric as metric
    import vce.export.bundle_io as bundle_io
    import vce.runtime.cli as run_cli
    import vce.runtime.run as run_module
    import vce.train.factory as factory
    import vce.train.synth as synth
    import vce.train.trainer as trainer
    from vce.calibration.cli import calibrate_app, eval_app
    from vce.calibration.search import SearchSpace
    from vce.export.cli import app as export_app
    from vce.export.demo import DemoFolders, demo_steps
    from vce.train.cli import app as train_app

    apps = {"vce-train": train_app, "vce-export": export_app, "vce-calibrate": calibrate_app,
            "vce-eval": eval_app, "vce-run": run_cli.app}  # fmt: skip
    calls: list[dict[str, object]] = []
    for module, name in [
        (synth, "write_dataset"), (trainer, "fit"), (bundle_io, "write_bundle"), (calibrate, "fit_bundle"),
        (run_module, "run"), (run_cli, "run"), (groundtruth, "build_ground_truth"), (metric, "score_files"),
    ]:  # fmt: skip
        _record(monkeypatch, calls, module, name)
    monkeypatch.setattr(factory, "resolve_model", lambda *a, **k: ("the model", {"source": "run"}))
    monkeypatch.setattr(bundle_io, "check_output_folder", lambda *a, **k: None)
    cfg = dataclasses.replace(DemoConfig(), seed=7)
    folders = DemoFolders(tmp_path / "demo")
    folders.data.mkdir(parents=True)  # `vce-train fit` checks that --data exists before it imports torch
    steps = demo_steps(cfg, folders)
    assert [k for k, s in steps.items() if not s.argv] == ["heldout"]
    for key, step in steps.items():
        if not step.argv:
            continue
        calls.clear()
        with pytest.raises(_Called):
            step.call()
        res = CliRunner().invoke(apps[step.argv[0]], list(shlex.split(step.command())[1:]))
        assert isinstance(res.exception, _Called), (key, step.command(), res.output)
        demo_call, cli_call = calls
        if key == "synth":  # the command line shows a progress bar, the demo prints its own lines
            assert cli_call.pop("progress") is True and demo_call.pop("progress") is False
        if key == "calibrate":  # fit_bundle reads space=None as the default search space
            demo_call["space"] = demo_call["space"] or SearchSpace()
        assert cli_call == demo_call, (key, step.command())
    # the held-out folder's layout and the run options the demo prints
    assert steps["run"].argv[-2:] == ("--backend", "ort-cpu")
    assert "--seed 7" in steps["fit"].command() and "--folds 2" in steps["calibrate"].command()
