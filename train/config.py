"""The model configuration: everything needed to rebuild a VCEClassifier, as plain JSON.

A checkpoint stores ``ModelConfig.to_dict()`` beside its weights, so a model is rebuilt from the
checkpoint alone, never from the training code's defaults. Named configurations live in
``train/model_configs/<name>.json`` (``get_config``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from vce.runtime.atomic import write_json
from vce.runtime.errors import VCEError
from vce.runtime.labels import LABELS
from vce.runtime.preprocess import PreprocessSpec

CONFIG_DIR = Path(__file__).resolve().parent / "model_configs"
VARIANTS = ("paper", "diff", "none")
HEADS = ("excitation", "linear")


def _default_preprocess() -> dict[str, Any]:
    return PreprocessSpec().to_dict()


def _default_labels() -> list[str]:
    return list(LABELS)


@dataclass
class ModelConfig:
    """Architecture, attention variant, head and the preprocessing/labels the model was trained with.

    Tower fields (``timm_model`` with ``image_size``/``patch_size``/``width``/``depth``/``heads``/
    ``mlp_ratio`` as overrides, and the bias-free projection to ``embed_dim``) describe BiomedCLIP's
    open_clip image tower. ``lambda_init`` None means the variant's own value (0.8 for ``paper``,
    0.8 - 0.6 exp(-0.3 * block) for ``diff``).
    """

    name: str
    timm_model: str = "vit_base_patch16_224"
    image_size: int = 224
    patch_size: int = 16
    width: int = 768
    depth: int = 12
    heads: int = 12
    mlp_ratio: float = 4.0
    embed_dim: int = 512
    variant: str = "paper"
    diff_blocks: list[int] | None = None
    lambda_init: float | None = None
    head: str = "excitation"
    num_classes: int = 17
    dropout: float = 0.4
    se_hidden: int = 32
    contrastive: bool = False
    preprocess: dict[str, Any] = field(default_factory=_default_preprocess)
    labels: list[str] = field(default_factory=_default_labels)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise VCEError for an inconsistent configuration."""
        where = f"model config {self.name!r}"
        if self.variant not in VARIANTS:
            raise VCEError(f"{where}: variant {self.variant!r} is not one of {', '.join(VARIANTS)}")
        if self.head not in HEADS:
            raise VCEError(f"{where}: head {self.head!r} is not one of {', '.join(HEADS)}")
        for key in ("image_size", "patch_size", "width", "depth", "heads", "embed_dim", "num_classes"):
            if int(getattr(self, key)) <= 0:
                raise VCEError(f"{where}: {key} must be positive")
        if self.width % self.heads:
            raise VCEError(f"{where}: width {self.width} is not divisible by heads {self.heads}")
        if self.variant == "paper" and self.heads % 2:
            raise VCEError(f"{where}: the paper variant splits the heads in two halves; heads must be even")
        if self.variant == "diff" and (self.width // self.heads) % 2:
            raise VCEError(f"{where}: the diff variant halves the head size; width/heads must be even")
        if self.diff_blocks is not None:
            bad = [b for b in self.diff_blocks if not 0 <= int(b) < self.depth]
            if bad:
                raise VCEError(f"{where}: diff_blocks {bad} outside 0..{self.depth - 1}")
            self.diff_blocks = sorted({int(b) for b in self.diff_blocks})
        if not 0.0 <= self.dropout < 1.0:
            raise VCEError(f"{where}: dropout must be in [0, 1)")
        if self.se_hidden <= 0:
            raise VCEError(f"{where}: se_hidden must be positive")
        if len(self.labels) != self.num_classes:
            raise VCEError(f"{where}: {len(self.labels)} labels but num_classes = {self.num_classes}")
        spec = PreprocessSpec.from_dict(self.preprocess)
        if spec.image_size != self.image_size:
            raise VCEError(
                f"{where}: preprocess image_size {spec.image_size} differs from the model's {self.image_size}"
            )
        self.preprocess = spec.to_dict()
        self.labels = list(self.labels)

    @property
    def preprocess_spec(self) -> PreprocessSpec:
        return PreprocessSpec.from_dict(self.preprocess)

    def blocks_with_diff(self) -> list[int]:
        """Indices of the blocks that use differential attention (empty for variant ``none``)."""
        if self.variant == "none":
            return []
        return list(range(self.depth)) if self.diff_blocks is None else list(self.diff_blocks)

    def replace(self, **overrides: Any) -> ModelConfig:
        """A copy with ``overrides`` applied (and validated). Changing image_size moves preprocess too."""
        _check_keys(overrides, f"overrides for model config {self.name!r}")
        if "image_size" in overrides and "preprocess" not in overrides:
            overrides["preprocess"] = {**self.preprocess, "image_size": int(overrides["image_size"])}
        return replace(self, **overrides)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        if not isinstance(d, dict) or "name" not in d:
            raise VCEError("a model config must be a JSON object with at least a 'name'")
        _check_keys(d, f"model config {d.get('name')!r}")
        d = dict(d)
        if "image_size" in d and "preprocess" not in d:
            d["preprocess"] = {**_default_preprocess(), "image_size": int(d["image_size"])}
        return cls(**d)

    def save_json(self, path: str | Path) -> Path:
        return write_json(path, self.to_dict())

    @classmethod
    def load_json(cls, path: str | Path) -> ModelConfig:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise VCEError(f"model config {path} not found") from exc
        except (OSError, json.JSONDecodeError) as exc:
            raise VCEError(f"cannot read model config {path}: {exc}") from exc
        return cls.from_dict(data.get("model", data) if isinstance(data, dict) else data)


def _check_keys(d: dict[str, Any], where: str) -> None:
    known = {f.name for f in fields(ModelConfig)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise VCEError(f"{where}: unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")


def available_configs() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


def get_config(name: str, **overrides: Any) -> ModelConfig:
    """A named configuration (``tiny``, ``biomedclip``) or a JSON file path, with ``overrides``."""
    path = CONFIG_DIR / f"{name}.json"
    if not path.is_file():
        if name.endswith(".json") and Path(name).is_file():
            path = Path(name)
        else:
            raise VCEError(f"unknown model config {name!r}; choose one of {', '.join(available_configs())}")
    cfg = ModelConfig.load_json(path)
    return cfg.replace(**overrides) if overrides else cfg
