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
