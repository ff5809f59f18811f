"""Resuming continues exactly: 2 epochs straight == 1 epoch + resume + 1 epoch (tiny model, CPU)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vce.runtime.errors import VCEError
from vce.train.trainer import FitConfig, fit


def test_resume_is_exact(synth_data: Path, tmp_path: Path) -> None:
    base = dict(
        data=str(synth_data),
        model="tiny",
        variant="diff",
        epochs=2,
        batch_size=8,
        stride=4,
        val_stride=6,
        progress=False,
        cache=str(tmp_path / "cache"),  # decoded once, mapped by the other runs
    )
    straight = fit(FitConfig(out=str(tmp_path / "a"), **base))
    first = fit(FitConfig(out=str(tmp_path / "b"), stop_after=1, **base))
    assert first.epochs_run == 1
    assert len(list((tmp_path / "cache").glob("crops-*.u8"))) == 2  # train + validation crops, reused
    resumed = fit(resume=str(tmp_path / "b"))
    assert resumed.epochs_run == 2
    wa, wb = (
        load_file(str(tmp_path / "a" / "model.safetensors")),
        load_file(str(tmp_path / "b" / "model.safetensors")),
    )
    assert wa.keys() == wb.keys()
    assert max(float((wa[k].double() - wb[k].double()).abs().max()) for k in wa) <= 1e-6
    sa = torch.load(tmp_path / "a" / "train_state.pt", weights_only=True)
    sb = torch.load(tmp_path / "b" / "train_state.pt", weights_only=True)
    assert (
        max(float((sa["model"][k].double() - sb["model"][k].double()).abs().max()) for k in sa["model"])
        <= 1e-6
    )
    assert sa["global_step"] == sb["global_step"]
    assert straight.val_macro_ap == pytest.approx(resumed.val_macro_ap, abs=1e-6)
    assert (tmp_path / "a" / "val_probs.csv").read_text() == (tmp_path / "b" / "val_probs.csv").read_text()
    with pytest.raises(VCEError, match="already finished"):
        fit(resume=str(tmp_path / "b"))


def test_resume_errors(tmp_path: Path) -> None:
    with pytest.raises(VCEError, match="no training state"):
        fit(resume=str(tmp_path))
    (tmp_path / "train_state.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(VCEError, match="unreadable"):
        fit(resume=str(tmp_path))


def test_validating_every_n_epochs_trains_the_same_weights(synth_data: Path, tmp_path: Path) -> None:
    """--val-every 2 over 3 epochs validates after epochs 2 and 3 only; the weights and the validation
    outputs equal validating after every epoch, and a run stopped between validations resumes from
    the last validated epoch to the same end."""
    import json

    base = dict(data=str(synth_data), model="tiny", variant="diff", epochs=3, batch_size=8, stride=4,
                val_stride=6, progress=False, cache=str(tmp_path / "cache"))  # fmt: skip
    every = fit(FitConfig(out=str(tmp_path / "every"), **base))
    sparse = fit(FitConfig(out=str(tmp_path / "sparse"), val_every=2, **base))
    history = json.loads((tmp_path / "sparse" / "train_log.json").read_text())["history"]
    assert [("val_macro_ap" in e) for e in history] == [False, True, True]
    assert [e["train_loss"] for e in history] == [
        e["train_loss"] for e in json.loads((tmp_path / "every" / "train_log.json").read_text())["history"]
    ]
    assert sparse.val_macro_ap == every.val_macro_ap
    for name in ("model.safetensors", "val_probs.csv"):
        assert (tmp_path / "sparse" / name).read_bytes() == (tmp_path / "every" / name).read_bytes(), name
    stopped = fit(FitConfig(out=str(tmp_path / "stopped"), val_every=2, stop_after=1, **base))
    assert stopped.epochs_run == 1  # the last epoch of this process is validated and saved
    fit(resume=str(tmp_path / "stopped"))
    assert (tmp_path / "stopped" / "model.safetensors").read_bytes() == (
        tmp_path / "every" / "model.safetensors"
    ).read_bytes()
    with pytest.raises(VCEError, match="--val-every must be >= 1"):
        FitConfig(out=str(tmp_path / "x"), val_every=0, **base)
