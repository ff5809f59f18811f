"""BiomedCLIP's image tower, built offline, and loading its open_clip weights.

The tower has open_clip's ``TimmModel`` layout for BiomedCLIP's ``vision_cfg`` (``timm_pool ""``,
``timm_proj "linear"`` without bias): ``trunk`` is a timm VisionTransformer (class-token output)
and ``head.proj`` the 768->512 projection, so state-dict keys are open_clip's ``visual.trunk.*`` and
``visual.head.proj.weight``. It is built from a ModelConfig (``timm_model`` plus architecture
overrides) with random weights; no text tower and no download is involved.

Pretrained weights come from an open_clip folder (``open_clip_config.json`` + ``open_clip_model.
safetensors`` / ``open_clip_pytorch_model.bin``, read with ``torch.load(weights_only=True)``) or an
``hf-hub:`` name (downloaded into the Hugging Face cache when a network exists). Only ``visual.*``
keys are used. ``compute_text_features`` runs the (optional) text tower once, offline, for the
contrastive branch.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from vce.runtime.errors import VCEError
from vce.runtime.labels import LABELS
from vce.train.config import ModelConfig, check_timm_model

PROMPT_TEMPLATE = "a video capsule endoscopy image showing {label}"
OPEN_CLIP_CONFIG = "open_clip_config.json"
#: open_clip's own preference order for a folder's weights file
WEIGHT_NAMES = (
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.safetensors",
    "open_clip_pytorch_model.bin",
    "open_clip_pytorch_model.pth",
    "model.safetensors",
    "pytorch_model.bin",
)
LOCAL_DIR = "local-dir:"
HF_HUB = "hf-hub:"


class VisualTower(nn.Module):
    """open_clip ``TimmModel`` equivalent: ``head(trunk(images))`` -> [N, embed_dim]."""

    def __init__(self, trunk: nn.Module, width: int, embed_dim: int, drop: float = 0.0) -> None:
        super().__init__()
        self.trunk = trunk
        self.head = nn.Sequential(
            OrderedDict(drop=nn.Dropout(drop), proj=nn.Linear(width, embed_dim, bias=False))
        )

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.trunk(images))


def timm_kwargs(cfg: ModelConfig) -> dict[str, Any]:
    return dict(
        img_size=cfg.image_size,
        patch_size=cfg.patch_size,
        embed_dim=cfg.width,
        depth=cfg.depth,
        num_heads=cfg.heads,
        mlp_ratio=cfg.mlp_ratio,
    )


def _create_trunk(name: str, **kwargs: Any) -> nn.Module:
    import timm

    check_timm_model(name, "timm tower")  # never a hub name: timm would fetch its config
    if not timm.is_model(name):
        raise VCEError(f"timm tower: {name!r} is not a timm architecture this timm knows")
    try:
        return timm.create_model(name, pretrained=False, num_classes=0, **kwargs)
    except RuntimeError as exc:
        raise VCEError(f"timm cannot build {name!r}: {exc}") from exc


def build_tower(cfg: ModelConfig) -> VisualTower:
    """The plain (pretrained-layout) tower of ``cfg`` with random weights."""
    trunk = _create_trunk(cfg.timm_model, **timm_kwargs(cfg))
    if getattr(trunk, "global_pool", "token") != "token":
        raise VCEError(f"timm model {cfg.timm_model!r} does not pool by class token as BiomedCLIP does")
    return VisualTower(trunk, cfg.width, cfg.embed_dim)


def tower_arch(timm_model: str) -> dict[str, Any]:
    """A timm ViT's architecture fields (image_size, patch_size, width, depth, heads, mlp_ratio)."""
    with torch.device("meta"):
        trunk = _create_trunk(timm_model)
    blocks = getattr(trunk, "blocks", None)
    if blocks is None or not hasattr(trunk, "patch_embed"):
        raise VCEError(f"timm model {timm_model!r} is not a VisionTransformer")
    width = int(trunk.embed_dim)
    return dict(
        timm_model=timm_model,
        image_size=int(trunk.patch_embed.img_size[0]),
        patch_size=int(trunk.patch_embed.patch_size[0]),
        width=width,
        depth=len(blocks),
        heads=int(blocks[0].attn.num_heads),
        mlp_ratio=blocks[0].mlp.fc1.out_features / width,
    )


# --- open_clip folders and the hub --------------------------------------------------------------


def is_open_clip_source(source: str | Path) -> bool:
    s = str(source)
    return s.startswith((LOCAL_DIR, HF_HUB)) or (Path(s).is_dir() and (Path(s) / OPEN_CLIP_CONFIG).is_file())


def resolve_open_clip_folder(source: str | Path) -> Path:
    """``local-dir:/p``, ``/p`` or ``hf-hub:org/name`` -> a folder with open_clip_config.json + weights."""
    s = str(source)
    if s.startswith(HF_HUB):
        return _download_hf(s[len(HF_HUB) :])
    folder = Path(s[len(LOCAL_DIR) :] if s.startswith(LOCAL_DIR) else s).expanduser()
    if not folder.is_dir():
        raise VCEError(f"BiomedCLIP folder {folder} does not exist")
    if not (folder / OPEN_CLIP_CONFIG).is_file():
        raise VCEError(f"{folder} has no {OPEN_CLIP_CONFIG}; give the folder of an open_clip model")
    return folder


def _download_hf(model_id: str) -> Path:
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as exc:
        raise VCEError("hf-hub: names need huggingface_hub (pip install huggingface_hub)") from exc
    try:
        config = Path(hf_hub_download(model_id, OPEN_CLIP_CONFIG))
        for name in WEIGHT_NAMES:
            try:
                hf_hub_download(model_id, name)
                break
            except Exception as exc:  # not found: try the next name
                if "404" not in str(exc) and "EntryNotFound" not in type(exc).__name__:
                    raise
        else:
            raise VCEError(f"hf-hub:{model_id} has none of the weight files {', '.join(WEIGHT_NAMES)}")
    except VCEError:
        raise
    except Exception as exc:
        raise VCEError(
            f"cannot download hf-hub:{model_id} ({type(exc).__name__}: {exc}); without a network, download "
            f"the model elsewhere and pass its folder ({OPEN_CLIP_CONFIG} + weights) instead"
        ) from exc
    return config.parent


def _read_open_clip_json(folder: Path) -> Any:
    path = folder / OPEN_CLIP_CONFIG
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise VCEError(f"cannot read {path}: {exc}") from exc


def read_open_clip_config(folder: Path) -> dict[str, Any]:
    """The ``model_cfg`` of a folder's open_clip_config.json."""
    path = folder / OPEN_CLIP_CONFIG
    data = _read_open_clip_json(folder)
    model_cfg = data.get("model_cfg", data)
    if "vision_cfg" not in model_cfg or "embed_dim" not in model_cfg:
        raise VCEError(f"{path} has no model_cfg with embed_dim and vision_cfg")
    return model_cfg


def read_open_clip_preprocess(folder: Path) -> dict[str, Any]:
    """The ``preprocess_cfg`` of a folder's open_clip_config.json ({} when absent)."""
    data = _read_open_clip_json(folder)
    pre = data.get("preprocess_cfg", {}) if isinstance(data, dict) else {}
    return pre if isinstance(pre, dict) else {}


def config_from_open_clip(
    model_cfg: dict[str, Any], base: ModelConfig, preprocess_cfg: dict[str, Any] | None = None
) -> ModelConfig:
    """``base`` with the tower fields of an open_clip ``model_cfg`` (a timm image tower).

    The normalisation (mean/std) of ``preprocess_cfg`` is taken over when given.
    """
    vision = model_cfg["vision_cfg"]
    name = vision.get("timm_model_name")
    if not name:
        raise VCEError(
            "only timm image towers (as BiomedCLIP's) are supported; vision_cfg has no timm_model_name"
        )
    if vision.get("timm_pool", "avg") not in ("", "token"):
        raise VCEError(
            f"vision_cfg timm_pool {vision.get('timm_pool')!r} is not supported (BiomedCLIP uses '')"
        )
    if vision.get("timm_proj", "linear") != "linear" or vision.get("timm_proj_bias", False):
        raise VCEError("only a linear projection without bias (timm_proj 'linear') is supported")
    arch = tower_arch(name)
    preprocess = {**base.preprocess, "image_size": arch["image_size"]}
    for key in ("mean", "std"):
        if preprocess_cfg and key in preprocess_cfg:
            preprocess[key] = [float(v) for v in preprocess_cfg[key]]
    return base.replace(**arch, embed_dim=int(model_cfg["embed_dim"]), preprocess=preprocess)


def find_weights(folder: Path) -> Path:
    for name in WEIGHT_NAMES:
        if (folder / name).is_file():
            return folder / name
    raise VCEError(f"{folder} has no weights file; expected one of {', '.join(WEIGHT_NAMES)}")


def read_state_dict(path: Path) -> dict[str, Tensor]:
    """A state dict from .safetensors or a torch file (weights_only=True), unwrapped."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd: Any = load_file(str(path), device="cpu")
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise VCEError(f"cannot read weights {path}: {exc}") from exc
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise VCEError(f"{path} does not hold a state dict")
    return {k.removeprefix("module."): v for k, v in sd.items()}


def visual_state_dict(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """The ``visual.*`` entries of a CLIP state dict, without the prefix."""
    out = {k[len("visual.") :]: v for k, v in sd.items() if k.startswith("visual.")}
    if not out:
        raise VCEError("the weights have no visual.* keys; is this an open_clip CLIP checkpoint?")
    return out


# --- text features ------------------------------------------------------------------------------


@torch.no_grad()
def compute_text_features(
    source: nn.Module | str | Path,
    tokenizer: Callable[[list[str]], Tensor] | None = None,
    *,
    labels: Sequence[str] = LABELS,
    template: str = PROMPT_TEMPLATE,
) -> Tensor:
    """L2-normalised text features [len(labels), embed_dim] of the prompts ``template.format(label)``.

    ``source``: an open_clip model with ``encode_text`` (then ``tokenizer`` is required) or an open_clip
    folder / ``local-dir:`` / ``hf-hub:`` name. BiomedCLIP's text tower needs the BiomedBERT config
    and tokenizer from Hugging Face: offline this works only when they are in the local HF cache.
    """
    prompts = [template.format(label=label) for label in labels]
    if isinstance(source, nn.Module):
        if tokenizer is None:
            raise VCEError("compute_text_features needs the tokenizer that goes with the given model")
        model = source
    else:
        import open_clip

        folder = resolve_open_clip_folder(source)
        name = f"{LOCAL_DIR}{folder}"
        try:
            model = open_clip.create_model(name, device="cpu")
            tokenizer = open_clip.get_tokenizer(name)
        except Exception as exc:
            raise VCEError(
                f"cannot build the text tower of {folder} ({type(exc).__name__}: {exc}); BiomedCLIP's text "
                "tower needs the BiomedBERT config/tokenizer in the Hugging Face cache. Without it, train "
                "with contrastive off, or import text features from a paper checkpoint"
            ) from exc
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    feats = model.encode_text(tokenizer(prompts).to(device)).float()
    model.train(was_training)
    return torch.nn.functional.normalize(feats, dim=-1).cpu()
