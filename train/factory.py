"""create_model: a VCEClassifier from a config, with random or pretrained weights.

``pretrained``:
- None: random weights (the full-size ``biomedclip`` config builds offline);
- an open_clip folder (``open_clip_config.json`` + weights), ``local-dir:/path`` or ``hf-hub:org/name``
  (network): BiomedCLIP's image-tower weights, transferred into the differential attention. The
  tower's architecture comes from the folder's config; everything else from ``config``. With
  ``contrastive`` the label prompts' text features are computed once from the folder's text tower;
- a vce checkpoint (folder or ``model.safetensors``) or a paper checkpoint (``.pt``/``.pth``): the
  architecture comes from the checkpoint, ``overrides`` apply on top.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vce.runtime.errors import VCEError
from vce.train.config import ModelConfig, get_config
from vce.train.model import VCEClassifier

PAPER_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")


def _config(config: ModelConfig | str, overrides: dict[str, Any]) -> ModelConfig:
    if isinstance(config, str):
        return get_config(config, **overrides)
    return config.replace(**overrides) if overrides else config


def _from_open_clip(cfg: ModelConfig, source: str) -> VCEClassifier:
    from vce.train.tower import (
        build_tower,
        compute_text_features,
        config_from_open_clip,
        find_weights,
        load_tower_weights,
        read_open_clip_config,
        read_open_clip_preprocess,
        read_state_dict,
        resolve_open_clip_folder,
        visual_state_dict,
    )

    folder = resolve_open_clip_folder(source)
    cfg = config_from_open_clip(read_open_clip_config(folder), cfg, read_open_clip_preprocess(folder))
    tower = build_tower(cfg)
    weights = find_weights(folder)
    load_tower_weights(tower, visual_state_dict(read_state_dict(weights)), str(weights))
    model = VCEClassifier(cfg, visual=tower)
    if cfg.contrastive:
        model.set_text_features(compute_text_features(folder, labels=cfg.labels))
    return model


def create_model(
    config: ModelConfig | str, *, pretrained: str | Path | None = None, **overrides: Any
) -> VCEClassifier:
    """Build a VCEClassifier (train mode). See the module docstring for ``pretrained``."""
    if pretrained is None:
        return VCEClassifier(_config(config, overrides))
    from vce.train.tower import is_open_clip_source

    source = str(pretrained)
    if is_open_clip_source(source):
        return _from_open_clip(_config(config, overrides), source)
    path = Path(source)
    from vce.train.checkpoint import CONFIG_FILE, load_model

    if (path.is_dir() and (path / CONFIG_FILE).is_file()) or path.suffix == ".safetensors":
        return load_model(path, **overrides).train()
    if path.is_file() and path.suffix in PAPER_SUFFIXES:
        from vce.train.paper_checkpoint import load_paper_checkpoint

        return load_paper_checkpoint(path, **overrides).train()
    if not path.exists():
        raise VCEError(f"pretrained source {source} does not exist")
    raise VCEError(
        f"cannot tell what {source} is: give an open_clip folder (open_clip_config.json + weights), "
        "local-dir:/path, hf-hub:org/name, a vce checkpoint folder/model.safetensors or a paper .pth"
    )
