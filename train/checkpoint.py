"""Model checkpoints: ``model.safetensors`` (weights) + ``model_config.json`` (how to rebuild them).

``model_config.json`` = ``{"format": "vce-model", "version": 1, "model": ModelConfig.to_dict(),
"weights": "model.safetensors", "weights_sha256": ..., "extra": {...}}``: enough to rebuild the model
without any training-code default. Both files are written atomically. Optimiser/EMA state for
resuming is the trainer's business and lives elsewhere.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from vce.runtime.atomic import atomic_path, write_json
from vce.runtime.bundle import sha256_file
from vce.runtime.errors import VCEError
from vce.train.config import ModelConfig
from vce.train.model import VCEClassifier

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "model_config.json"
FORMAT = "vce-model"
VERSION = 1


def check_state_dict(model: torch.nn.Module, sd: dict[str, Tensor], source: str) -> None:
    """Raise one clear VCEError if ``sd`` does not fit ``model`` exactly (keys and shapes)."""
    own = model.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    shapes = [k for k in own if k in sd and tuple(own[k].shape) != tuple(sd[k].shape)]
    if missing or unexpected or shapes:
        parts = [
            f"{what} {len(keys)}: {', '.join(keys[:4])}{' ...' if len(keys) > 4 else ''}"
            for what, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes))
            if keys
        ]
        raise VCEError(f"the weights of {source} do not fit the model ({'; '.join(parts)})")


def load_weights(module: torch.nn.Module, sd: dict[str, Tensor], source: str) -> None:
    """Load ``sd`` into ``module`` strictly; a mismatch is :func:`check_state_dict`'s one line."""
    check_state_dict(module, sd, source)
    module.load_state_dict(sd, strict=True)


def save_model(
    model: VCEClassifier,
    folder: str | Path,
    *,
    state_dict: dict[str, Tensor] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``folder/model.safetensors`` and ``folder/model_config.json``; returns ``folder``.

    ``state_dict`` (e.g. EMA weights) defaults to ``model.state_dict()`` and must fit the model.
    ``extra``: JSON-serialisable information stored beside the config (epoch, metrics...).
    """
    from safetensors.torch import save_file

    folder = Path(folder)
    sd = model.state_dict() if state_dict is None else state_dict
    check_state_dict(model, sd, "the state dict to save")
    try:
        json.dumps(extra or {})
    except TypeError as exc:
        raise VCEError(f"checkpoint 'extra' must be JSON-serialisable: {exc}") from exc
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in sd.items()}
    weights = folder / WEIGHTS_FILE
    with atomic_path(weights) as tmp:
        save_file(tensors, str(tmp), metadata={"format": FORMAT})
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "model": model.config.to_dict(),
        "weights": WEIGHTS_FILE,
        "weights_sha256": sha256_file(weights),
        "extra": extra or {},
    }
    write_json(folder / CONFIG_FILE, meta)
    return folder


def _locate(path: str | Path) -> tuple[Path, Path]:
    """(config json, weights) of a checkpoint folder, its safetensors or its config file."""
    p = Path(path)
    if p.is_dir():
        folder, weights = p, p / WEIGHTS_FILE
    elif p.suffix == ".safetensors":
        folder, weights = p.parent, p
    elif p.name == CONFIG_FILE:
        folder, weights = p.parent, p.parent / WEIGHTS_FILE
    elif not p.exists():
        raise VCEError(f"checkpoint {p} does not exist")
    else:
        raise VCEError(f"{p} is not a vce checkpoint; give its folder or its {WEIGHTS_FILE}")
    config = folder / CONFIG_FILE
    for needed in (config, weights):
        if not needed.is_file():
            raise VCEError(
                f"checkpoint {p}: {needed} is missing (a checkpoint is {WEIGHTS_FILE} + {CONFIG_FILE})"
            )
    return config, weights


def weights_sha256(path: str | Path) -> str:
    """The model's identity: the sha256 of the checkpoint's weights file (``model.safetensors``).

    The same value ``model_config.json``, ``val_probs.csv``'s provenance sidecar and an exported
    bundle's manifest record (see ``vce.runtime.formats.provenance``).
    """
    return sha256_file(_locate(path)[1])


def read_checkpoint_meta(path: str | Path) -> dict[str, Any]:
    """The parsed model_config.json of a checkpoint (``model``, ``extra``, ``weights_sha256``...)."""
    config, _ = _locate(path)
    try:
        meta = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise VCEError(f"cannot read {config}: {exc}") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or "model" not in meta:
        raise VCEError(f"{config} is not a vce model config (format {FORMAT!r} with a 'model' entry)")
    if int(meta.get("version", 0)) > VERSION:
        raise VCEError(f"{config} has version {meta['version']}; this vce reads up to {VERSION}: upgrade vce")
    return meta


def load_model(
    path: str | Path, *, map_location: str | torch.device = "cpu", **overrides: Any
) -> VCEClassifier:
    """Rebuild a model from a checkpoint folder (or its .safetensors) and load its weights strictly.

    ``overrides`` change config fields that keep the weights' shapes (e.g. dropout). Returned in eval mode.
    """
    config_path, weights = _locate(path)
    meta = read_checkpoint_meta(config_path)
    cfg = ModelConfig.from_dict(meta["model"])
    if overrides:
        cfg = cfg.replace(**overrides)
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        sd = load_file(str(weights), device="cpu")
    except (SafetensorError, OSError) as exc:
        raise VCEError(f"cannot read weights {weights}: {exc}") from exc
    model = VCEClassifier(cfg)
    load_weights(model, sd, str(weights))
    return model.to(map_location).eval()
