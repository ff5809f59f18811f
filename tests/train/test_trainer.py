"""The fit loop on the tiny model: outputs, EMA weights, parameter groups, learning."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from vce.runtime.formats.framescsv import COLUMNS, read_frames_csv
from vce.train.ema import ModelEMA
from vce.train.trainer import FitConfig, fit, param_groups

FAST = dict(model="tiny", variant="diff", batch_size=8, stride=4, val_stride=3, progress=False)


@pytest.fixture(scope="module")
def one_epoch(synth_data: Path, tmp_path_factory: pytest.TempPathFactory):
    run = tmp_path_factory.mktemp("run")
    result = fit(FitConfig(data=str(synth_data), out=str(run), epochs=1, **FAST))
    return run, result


def test_val_probs_carry_the_identity_of_the_saved_weights(one_epoch) -> None:
    from vce.runtime.formats.provenance import read_provenance
    from vce.train.checkpoint import weights_sha256

    run, _ = one_epoch
    prov, why = read_provenance(run / "val_probs.csv")
    assert prov is not None, why
    recorded = json.loads((run / "model_config.json").read_text())["weights_sha256"]
    assert prov.weights_sha256 == recorded == weights_sha256(run) and prov.made_by == "vce-train fit"


def test_run_folder_contents(one_epoch) -> None:
    run, result = one_epoch
    for name in (
        "model.safetensors",
        "model_config.json",
        "train_state.pt",
        "val_probs.csv",
        "val_labels.csv",
    ):
        assert (run / name).is_file(), name
    header = (run / "val_probs.csv").read_text().splitlines()[0].split(",")
    assert header == list(COLUMNS)
    probs, labels = read_frames_csv(run / "val_probs.csv"), read_frames_csv(run / "val_labels.csv")
    assert list(probs) == list(labels) == result.history[0]["val_videos"]
    video = next(iter(probs))
    assert np.array_equal(probs[video].frames, np.arange(0, 60, 3))  # every 3rd frame of the held-out video
    assert set(np.unique(labels[video].values)) <= {0.0, 1.0}
    p = probs[video].values
    assert p.min() >= 0 and p.max() <= 1
    state = torch.load(run / "train_state.pt", weights_only=True)  # loads safely
    assert state["epoch"] == 1 and "optimizer" in state and "ema" in state
    log = json.loads((run / "train_log.json").read_text())
    assert log["history"][0]["val_macro_ap"] == pytest.approx(result.val_macro_ap)


def test_deployed_weights_are_the_ema(one_epoch) -> None:
    from safetensors.torch import load_file

    from vce.train.checkpoint import load_model, read_checkpoint_meta

    run, _ = one_epoch
    state = torch.load(run / "train_state.pt", weights_only=True)
    saved = load_file(str(run / "model.safetensors"))
    shadow = state["ema"]["shadow"]
    name = next(k for k in shadow if k.startswith("head."))
    assert torch.equal(saved[name], shadow[name])
    assert not torch.equal(saved[name], state["model"][name])  # live weights differ from the average
    model = load_model(run)  # rebuilt from model_config.json alone
    assert model.config.name == "tiny" and model.config.variant == "diff"
    assert read_checkpoint_meta(run)["extra"]["ema"] is True


def test_predictions_in_run_match_checkpoint(one_epoch, synth_data: Path, tmp_path: Path) -> None:
    from vce.train.predict import predict_dataset

    run, result = one_epoch
    video = result.history[0]["val_videos"][0]
    out = tmp_path / "p.csv"
    n = predict_dataset(run, synth_data, out, stride=3, videos=[video], progress=False)
    assert n == 20
    ours = read_frames_csv(out)[video]
    theirs = read_frames_csv(run / "val_probs.csv")[video]
    assert np.array_equal(ours.frames, theirs.frames)
    assert np.allclose(ours.values, theirs.values, atol=2e-6)


def test_ema_update_by_hand() -> None:
    m = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        m.weight.fill_(0.0)
    ema = ModelEMA(m, 0.9, warmup=False)
    with torch.no_grad():
        m.weight.fill_(1.0)
    ema.update(m)
    ema.update(m)
    assert float(ema.shadow["weight"]) == pytest.approx(1 - 0.9**2)
    warm = ModelEMA(m, 0.999)
    assert warm.current_decay() == pytest.approx(0.1)  # (1 + 0) / (10 + 0)
    warm.updates = 100_000
    assert warm.current_decay() == 0.999


def test_param_groups_follow_the_paper() -> None:
    from vce.train.factory import create_model

    model = create_model("tiny", variant="paper")
    backbone, head = param_groups(model, 3e-4, 0.3)
    assert backbone["lr"] == pytest.approx(9e-5) and head["lr"] == pytest.approx(3e-4)
    names = {id(p): n for n, p in model.named_parameters()}
    head_names = [names[id(p)] for p in head["params"]]
    assert any("lambda_" in n for n in head_names) and any(n.startswith("head.") for n in head_names)
    assert all(
        names[id(p)].startswith("visual.") and "lambda_" not in names[id(p)] for p in backbone["params"]
    )
    assert len(backbone["params"]) + len(head["params"]) == len(list(model.parameters()))


@pytest.mark.gpu
def test_amp_fit_on_cuda(synth_data: Path, tmp_path: Path) -> None:
    result = fit(FitConfig(data=str(synth_data), out=str(tmp_path / "run"), epochs=1, device="cuda", **FAST))
    state = torch.load(tmp_path / "run" / "train_state.pt", weights_only=True)
    assert state["scaler"], "AMP on CUDA keeps a GradScaler state"
    assert result.history[0]["skipped_steps"] == 0 and np.isfinite(result.val_macro_ap)


@pytest.mark.slow
def test_tiny_model_learns_synthetic_labels(tmp_path: Path) -> None:
    """A quick version of the learning check: frame-level macro AP far above the prevalence (chance)."""
    from vce.train.synth import write_dataset

    data = tmp_path / "d"
    write_dataset(data, videos=3, frames=200, seed=42, size=96)
    result = fit(
        FitConfig(
            data=str(data),
            out=str(tmp_path / "run"),
            model="tiny",
            variant="diff",
            epochs=6,
            batch_size=32,
            stride=1,
            val_stride=2,
            lr=2e-3,
            backbone_lr_mult=1.0,
            augment=False,
            progress=False,
        )
    )
    assert result.val_macro_ap > result.val_prevalence + 0.25
