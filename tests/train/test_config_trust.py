"""Model configs from checkpoints are untrusted (issue 11, hole 6): only known, local architectures
of bounded size are built; a hub name or a URL never reaches timm (no network), and an absurd size is
refused before anything is allocated."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from vce.runtime.errors import VCEError
from vce.train.config import ModelConfig, available_configs, get_config


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any connection attempt fails the test (what reaching for the hub would do first)."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("vce tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")


def _config(**fields: Any) -> dict[str, Any]:
    return {**get_config("tiny").to_dict(), **fields}


def _checkpoint(folder: Path, **fields: Any) -> Path:
    """A vce checkpoint folder whose model_config.json carries ``fields`` (weights never reached)."""
    from vce.train.checkpoint import CONFIG_FILE, FORMAT, VERSION, WEIGHTS_FILE

    folder.mkdir()
    meta = {"format": FORMAT, "version": VERSION, "model": _config(**fields)}
    (folder / CONFIG_FILE).write_text(json.dumps(meta))
    (folder / WEIGHTS_FILE).write_bytes(b"not reached")
    return folder


HUB_NAMES = [
    "hf-hub:attacker/evil-model",
    "hf_hub:attacker/evil-model",
    "https://example.org/evil.pth",
    "timm/vit_base_patch16_224",
    "/tmp/evil/vit",
    "vit_base_patch16_224.augreg_in21k",
    "local-dir:/tmp/evil",
]


@pytest.mark.parametrize("name", HUB_NAMES)
def test_hub_names_and_remote_paths_are_refused_without_network(name: str, no_network: None) -> None:
    with pytest.raises(VCEError, match="timm_model"):
        ModelConfig.from_dict(_config(timm_model=name))


def test_a_checkpoint_naming_the_hub_is_refused_by_export_and_load(tmp_path: Path, no_network: None) -> None:
    from vce.train.checkpoint import load_model
    from vce.train.factory import resolve_model

    ckpt = _checkpoint(tmp_path / "run", timm_model="hf-hub:attacker/evil-model")
    for load in (load_model, lambda p: resolve_model(str(p))):
        with pytest.raises(VCEError, match="hub names, URLs and paths are refused"):
            load(ckpt)


def test_the_tower_refuses_a_hub_name_too(no_network: None) -> None:
    """An open_clip folder's vision_cfg names its timm model: checked the same way."""
    from vce.train.tower import tower_arch

    with pytest.raises(VCEError, match="hub names, URLs and paths are refused"):
        tower_arch("hf-hub:attacker/evil-model")
    with pytest.raises(VCEError, match="not a timm architecture"):
        tower_arch("vit_does_not_exist_anywhere")


def test_depth_100000_is_refused_instantly(tmp_path: Path) -> None:
    from vce.train.checkpoint import load_model

    t0 = time.perf_counter()
    with pytest.raises(VCEError, match=r"depth must be an integer in 1\.\.64, got 100000"):
        ModelConfig.from_dict(_config(depth=100000))
    with pytest.raises(VCEError, match="depth must be"):
        load_model(_checkpoint(tmp_path / "run", depth=100000))
    assert time.perf_counter() - t0 < 1.0


BAD_FIELDS: list[tuple[dict[str, Any], str]] = [
    ({"depth": "12"}, "depth must be an integer"),
    ({"depth": 12.0}, "depth must be an integer"),
    ({"depth": True}, "depth must be an integer"),
    ({"width": 1 << 20, "heads": 4}, "width must be an integer in 8..4096"),
    ({"heads": 0}, "heads must be an integer in 1..64"),
    ({"image_size": 100_000}, "image_size must be an integer in 8..2048"),
    ({"image_size": 0}, "image_size must be an integer"),
    ({"patch_size": 1, "image_size": 1024}, "tokens"),
    ({"patch_size": 30}, "not a multiple of patch_size"),
    ({"mlp_ratio": 1000.0}, "mlp_ratio must be a number in"),
    ({"mlp_ratio": float("nan")}, "mlp_ratio must be a number in"),
    ({"embed_dim": 10**9}, "embed_dim must be an integer"),
    ({"se_hidden": 10**9}, "se_hidden must be an integer"),
    ({"lambda_init": "0.8"}, "lambda_init must be"),
    ({"diff_blocks": [0, "1"]}, "diff_blocks"),
    ({"contrastive": "yes"}, "contrastive must be true or false"),
    ({"labels": "mouth"}, "labels must be a list"),
    ({"preprocess": {"image_size": 224, "channel_order": "BGR"}}, "channel_order must be one of 'RGB'"),
    ({"preprocess": {"image_size": 224, "flip": True}}, "flip is not a field"),
    ({"width": 4096, "depth": 64, "heads": 64, "mlp_ratio": 16.0}, "parameters"),
]


@pytest.mark.parametrize(("fields", "expect"), BAD_FIELDS)
def test_config_fields_are_typed_and_bounded(fields: dict[str, Any], expect: str) -> None:
    t0 = time.perf_counter()
    with pytest.raises(VCEError, match=expect):
        ModelConfig.from_dict(_config(**fields))
    assert time.perf_counter() - t0 < 1.0


@pytest.mark.parametrize("name", available_configs())
def test_the_shipped_configs_are_valid(name: str) -> None:
    cfg = get_config(name)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
