"""Models from what the user names: ``create_model`` (a config, random or pretrained weights) and
``resolve_model`` (a model spec or checkpoint, for export, with its manifest description).

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

import torch

from vce.runtime.bundle import sha256_file
from vce.runtime.errors import VCEError
from vce.train.config import ModelConfig, available_configs, get_config
from vce.train.model import VCEClassifier

PAPER_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")


def _config(config: ModelConfig | str, overrides: dict[str, Any]) -> ModelConfig:
    if isinstance(config, str):
        return get_config(config, **overrides)
    return config.replace(**overrides) if overrides else config


def _from_open_clip(cfg: ModelConfig, source: str) -> VCEClassifier:
    from vce.train.checkpoint import load_weights
    from vce.train.tower import (
        build_tower,
        compute_text_features,
        config_from_open_clip,
        find_weights,
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
    load_weights(tower, visual_state_dict(read_state_dict(weights)), f"{weights} (image tower)")
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


def resolve_model(
    spec: str, variant: str | None = None, *, seed: int = 0
) -> tuple[VCEClassifier, dict[str, Any]]:
    """A model for export and its manifest description.

    ``spec``: a model config name (``tiny``, ``biomedclip``: random weights, ``variant`` applies), a
    vce checkpoint (run folder or ``model.safetensors``) or a paper checkpoint (.pt/.pth).
    """
    path = Path(spec)
    info: dict[str, Any] = {"source": spec}
    if spec in available_configs() and not path.exists():
        torch.manual_seed(seed)
        overrides = {"variant": variant} if variant else {}
        model = create_model(spec, **overrides)
        info.update(random_weights=True, seed=seed)
    elif path.exists():
        if path.is_file() and path.suffix in PAPER_SUFFIXES:
            from vce.train.paper_checkpoint import load_paper_checkpoint

            model = load_paper_checkpoint(path)
        else:
            from vce.train.checkpoint import load_model

            model = load_model(path)
        if variant and variant != model.config.variant:
            raise VCEError(
                f"{spec}: the checkpoint is a {model.config.variant!r} model; --variant {variant} applies only "
                "to random-weight model specs (tiny, biomedclip)"
            )
        info.update(random_weights=False, weights_sha256=_weights_digest(path))
    else:
        raise VCEError(
            f"{spec}: neither a checkpoint (run folder, model.safetensors, paper .pth) nor a model spec "
            f"({', '.join(available_configs())})"
        )
    model = model.eval()
    cfg = model.config
    info.update(name=cfg.name, variant=cfg.variant, config=cfg.to_dict())
    return model, info


def _weights_digest(path: Path) -> str:
    """The model's identity (``vce.runtime.formats.provenance``): sha256 of its weights file, i.e. a vce
    checkpoint's ``model.safetensors`` or a paper checkpoint's file; never of the whole run folder,
    whose other files (val_probs.csv, logs) change without the model changing."""
    if path.is_file() and path.suffix in PAPER_SUFFIXES:
        return sha256_file(path)
    from vce.train.checkpoint import weights_sha256

    return weights_sha256(path)
