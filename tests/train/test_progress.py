"""Training talks while it runs: one line per epoch (loss, validation AP, seconds, ETA) in any log."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from vce.train.progress import LiveBar
from vce.train.trainer import FitConfig, _duration, _epoch_line, fit


def test_fit_prints_a_line_per_epoch_with_loss_and_eta(
    synth_data: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    cfg = FitConfig(
        data=str(synth_data), out=str(tmp_path / "run"), model="tiny", variant="paper", epochs=2,
        batch_size=8, stride=6, val_stride=10, seed=1, progress=True,
    )  # fmt: skip
    fit(cfg)
    out, err = capfd.readouterr()
    lines = err.splitlines()
    assert (
        lines[0].startswith("training tiny on cpu: ") and "steps of 8 per epoch, epochs 1-2 of 2" in lines[0]
    )
    epoch = [line for line in lines if line.startswith("epoch ")]
    assert len(epoch) == 2, err
    assert re.fullmatch(r"epoch 1/2  loss \d\.\d{4}  val macro AP \d\.\d{3}  \d+\.\d s  ETA \d+s", epoch[0])
    assert epoch[1].endswith("training done")
    # not a terminal: no live bar, nothing on stdout (not even the empty line a transient bar leaves)
    assert out == "" and "━" not in err


def test_epoch_line_eta_is_the_mean_epoch_time_times_the_epochs_left() -> None:
    entry = {"epoch": 3, "train_loss": 0.25, "val_macro_ap": 0.5, "seconds": 10.0}
    # epochs 1-3 run in 30 s in this process: 10 s each, 13 left
    assert _epoch_line(entry, 16, 0, 30.0).endswith("ETA 2m 10s")
    # resumed after epoch 2: only this process's epoch counts (30 s for 1 epoch), 13 left
    assert _epoch_line(entry, 16, 2, 30.0).endswith("ETA 6m 30s")
    assert "val macro AP n/a" in _epoch_line({**entry, "val_macro_ap": float("nan")}, 16, 0, 30.0)
    assert (_duration(59.4), _duration(61), _duration(3600)) == ("59s", "1m 01s", "60m 00s")


def test_live_bar_is_silent_when_stderr_is_not_a_terminal(capfd: pytest.CaptureFixture[str]) -> None:
    bar = LiveBar("work", 3)
    bar.advance()
    bar.advance(2, description="work done")
    bar.stop()
    assert capfd.readouterr() == ("", "")
