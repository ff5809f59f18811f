"""Import the paper's own checkpoints (``rare_vision_pipeline_v3_1.py``: best_model.pth / latest_model.pth).

The paper saves ``{"epoch", "model_state_dict", "optimizer_state_dict", "val_mAP", "history",
"seed", ["scaler_state_dict"], ["ema_shadow"]}`` with ``torch.save``. Its module names: the CLIP
model as ``model.`` (``model.visual.trunk.blocks.N.attn.q_proj``, ``model.visual.head.proj``, the
text tower ``model.text.*``), the excitation block ``eb_block`` (``fc1``, ``gate.0``, ``bn``),
``classification_head``, and with the contrastive branch ``logit_scale`` and the ``text_features``
buffer. ``ema_shadow`` maps parameter names to their EMA values (parameters only; buffers such as the
BatchNorm statistics come from ``model_state_dict``), exactly as the paper's test mode applies it.

The file is read with ``torch.load(weights_only=True)``; numpy scalars (the paper stores its
``val_mAP`` and history as numpy floats) are allowed through ``torch.serialization.safe_globals``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from vce.runtime.errors import VCEError
from vce.train.checkpoint import load_weights
from vce.train.config import ModelConfig, get_config
from vce.train.model import VCEClassifier

#: paper prefix -> ours (first match wins); None drops the key
KEY_MAP: tuple[tuple[str, str | None], ...] = (
    ("model.visual.", "visual."),
    ("model.text.", None),  # the text tower: only its label features are kept (text_features)
    ("model.logit_scale", None),  # CLIP's own scale; the paper's branch uses the top-level logit_scale
    ("model.logit_bias", None),
    ("eb_block.fc1.", "head.excitation.fc1."),
    ("eb_block.gate.0.", "head.excitation.fc2."),
    ("eb_block.bn.", "head.excitation.bn."),
    ("classification_head.", "head.fc."),
    ("logit_scale", "logit_scale"),
    ("text_features", "text_features"),
)


def _numpy_safe_globals() -> list[Any]:
    core = getattr(np, "_core", None) or np.core
    allowed: list[Any] = [core.multiarray.scalar, np.dtype]
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        allowed += [getattr(dtypes, n) for n in dir(dtypes) if n.endswith("DType")]
    return allowed


def read_paper_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint dict (torch.load weights_only=True, numpy scalars allowed)."""
    path = Path(path)
    if not path.is_file():
        raise VCEError(f"paper checkpoint {path} does not exist")
    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise VCEError(
            f"cannot read {path} as a weights-only torch checkpoint ({type(exc).__name__}: {exc})"
        ) from exc
    if not isinstance(ckpt, dict):
        raise VCEError(f"{path} does not hold a checkpoint dict")
    return ckpt


def paper_state_dict(ckpt: dict[str, Any], *, use_ema: bool = True) -> dict[str, Tensor]:
    """The paper's model state dict, with the EMA shadow applied when present and ``use_ema``."""
    if "model_state_dict" in ckpt:
        sd = dict(ckpt["model_state_dict"])
    elif ckpt and all(isinstance(v, Tensor) for v in ckpt.values()):
        sd = dict(ckpt)  # a bare state dict
    else:
        raise VCEError(
            "not a paper checkpoint: no 'model_state_dict' (keys: " + ", ".join(sorted(ckpt)[:8]) + ")"
        )
    if use_ema and isinstance(ckpt.get("ema_shadow"), dict):
        for name, value in ckpt["ema_shadow"].items():
            if name in sd:
                sd[name] = value
    return {k.removeprefix("module."): v for k, v in sd.items()}


def convert_paper_state_dict(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """Paper key names -> ours; the text tower and CLIP's logit scale are dropped.

    Keys that match no rule are kept as they are (a strict load then names them).
    """
    out: dict[str, Tensor] = {}
    for key, value in sd.items():
        key = key.removeprefix("module.")
        for prefix, target in KEY_MAP:
            if key.startswith(prefix):
                if target is not None:
                    out[target + key[len(prefix) :]] = value
                break
        else:
            out[key] = value
    return out


def infer_config(sd: dict[str, Tensor], base: ModelConfig | None = None) -> ModelConfig:
    """A ModelConfig that fits converted weights ``sd``: the tower, variant and head read from shapes."""
    base = base or get_config("biomedclip")
    t = "visual.trunk."
    try:
        patch = sd[t + "patch_embed.proj.weight"]
        width, patch_size = int(patch.shape[0]), int(patch.shape[-1])
        depth = 1 + max(int(k.split(".")[3]) for k in sd if k.startswith(t + "blocks."))
        tokens = int(sd[t + "pos_embed"].shape[1]) - 1
        embed_dim = int(sd["visual.head.proj.weight"].shape[0])
        mlp_ratio = int(sd[t + "blocks.0.mlp.fc1.weight"].shape[0]) / width
    except (KeyError, ValueError) as exc:
        raise VCEError(f"the checkpoint has no BiomedCLIP image tower (missing {exc})") from exc
    grid = math.isqrt(tokens)
    ndim = {i: sd[k].dim() for i in range(depth) if (k := f"{t}blocks.{i}.attn.lambda_q1") in sd}
    paper = [i for i, n in ndim.items() if n == 3]
    diff = [i for i, n in ndim.items() if n == 1]
    if paper and diff:
        raise VCEError("the checkpoint mixes paper and diff attention blocks")
    heads = base.heads
    if paper:
        heads = 2 * int(sd[f"{t}blocks.{paper[0]}.attn.lambda_q1"].shape[0])
    elif diff:
        heads = width // (2 * int(sd[f"{t}blocks.{diff[0]}.attn.lambda_q1"].shape[0]))
    blocks = paper or diff
    fields: dict[str, Any] = dict(
        image_size=grid * patch_size,
        patch_size=patch_size,
        width=width,
        depth=depth,
        heads=heads,
        mlp_ratio=mlp_ratio,
        embed_dim=embed_dim,
        variant="paper" if paper else "diff" if diff else "none",
        diff_blocks=None if len(blocks) in (0, depth) else blocks,
        contrastive="text_features" in sd and "logit_scale" in sd,
    )
    if "head.excitation.fc1.weight" in sd:
        fields.update(head="excitation", se_hidden=int(sd["head.excitation.fc1.weight"].shape[0]))
    elif "head.fc.weight" in sd:
        fields["head"] = "linear"
    if "head.fc.weight" in sd:
        n = int(sd["head.fc.weight"].shape[0])
        if n != base.num_classes:
            raise VCEError(f"the checkpoint's head has {n} classes; give a config with its {n} labels")
    return base.replace(**fields)


def load_paper_checkpoint(
    path: str | Path, *, config: ModelConfig | None = None, use_ema: bool = True, **overrides: Any
) -> VCEClassifier:
    """A VCEClassifier with the weights of a paper checkpoint (EMA weights by default).

    ``config`` None: the architecture is read from the weights (over the ``biomedclip`` config), then
    ``overrides`` apply. The model is returned in eval mode.
    """
    ckpt = read_paper_checkpoint(path)
    sd = convert_paper_state_dict(paper_state_dict(ckpt, use_ema=use_ema))
    cfg = config if config is not None else infer_config(sd)
    if overrides:
        cfg = cfg.replace(**overrides)
    model = VCEClassifier(cfg)
    load_weights(model, sd, f"paper checkpoint {path}")
    return model.eval()
