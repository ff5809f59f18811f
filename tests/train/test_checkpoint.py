"""vce checkpoints: model.safetensors + model_config.json, strict loading, clear errors."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

from vce.runtime.errors import VCEError
from vce.train.checkpoint import CONFIG_FILE, WEIGHTS_FILE, load_model, read_checkpoint_meta, save_model
from vce.train.factory import create_model


def _images() -> torch.Tensor:
    return torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize(
    "overrides",
    [dict(variant="paper", contrastive=True), dict(variant="diff", head="linear", diff_blocks=[1])],
    ids=["paper-contrastive", "diff-linear"],
)
def test_roundtrip(tmp_path, overrides) -> None:
    torch.manual_seed(0)
    model = create_model("tiny", **overrides).eval()
    with torch.no_grad():
        model.head.fc.bias.normal_()  # make sure loaded weights are the saved ones, not a fresh init
    out = save_model(model, tmp_path / "run", extra={"epoch": 3, "val_macro_ap": 0.5})
    assert out == tmp_path / "run"
    assert sorted(p.name for p in out.iterdir()) == sorted([CONFIG_FILE, WEIGHTS_FILE])
    meta = json.loads((out / CONFIG_FILE).read_text())
    assert meta["format"] == "vce-model" and meta["version"] == 1
    assert meta["model"] == model.config.to_dict() and meta["extra"] == {"epoch": 3, "val_macro_ap": 0.5}
    assert meta["weights_sha256"] == hashlib.sha256((out / WEIGHTS_FILE).read_bytes()).hexdigest()
    for path in (out, out / WEIGHTS_FILE):
        loaded = load_model(path)
        assert not loaded.training and loaded.config == model.config
        with torch.no_grad():
            assert torch.equal(loaded(_images()), model(_images()))
    assert read_checkpoint_meta(out)["extra"]["epoch"] == 3
    again = create_model("tiny", pretrained=out)  # the factory takes checkpoints too (train mode)
    assert again.training and torch.equal(again.head.fc.bias, model.head.fc.bias)


def test_saves_the_given_state_dict(tmp_path) -> None:
    model = create_model("tiny")
    ema = {k: v + 1.0 if v.is_floating_point() else v for k, v in model.state_dict().items()}
    save_model(model, tmp_path, state_dict=ema)
    loaded = load_model(tmp_path)
    assert torch.equal(loaded.head.fc.weight, model.head.fc.weight + 1.0)
    with pytest.raises(VCEError, match="missing 1"):
        save_model(model, tmp_path / "bad", state_dict={k: v for k, v in ema.items() if k != "head.fc.bias"})
    with pytest.raises(VCEError, match="JSON"):
        save_model(model, tmp_path / "bad", extra={"x": object()})


def test_load_errors(tmp_path) -> None:
    with pytest.raises(VCEError, match="does not exist"):
        load_model(tmp_path / "nothing")
    with pytest.raises(VCEError, match="missing"):
        load_model(tmp_path)  # an empty folder
    model = create_model("tiny")
    save_model(model, tmp_path / "a")
    (tmp_path / "a" / CONFIG_FILE).write_text("{not json")
    with pytest.raises(VCEError, match="cannot read"):
        load_model(tmp_path / "a")
    save_model(model, tmp_path / "b")
    meta = json.loads((tmp_path / "b" / CONFIG_FILE).read_text())
    meta["model"]["depth"] = 3  # weights no longer fit
    (tmp_path / "b" / CONFIG_FILE).write_text(json.dumps(meta))
    with pytest.raises(VCEError, match="do not fit"):
        load_model(tmp_path / "b")
    save_model(model, tmp_path / "c")
    (tmp_path / "c" / WEIGHTS_FILE).write_bytes(b"garbage")
    with pytest.raises(VCEError, match="cannot read weights"):
        load_model(tmp_path / "c")
    with pytest.raises(VCEError, match="not a vce checkpoint"):
        load_model(__file__)


def test_load_overrides_keep_shapes(tmp_path) -> None:
    save_model(create_model("tiny"), tmp_path)
    assert load_model(tmp_path, dropout=0.0).head.dropout.p == 0.0
    with pytest.raises(VCEError, match="do not fit"):
        load_model(tmp_path, head="linear")
