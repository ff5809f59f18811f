"""The model configuration: everything needed to rebuild a VCEClassifier, as plain JSON.

A checkpoint stores ``ModelConfig.to_dict()`` beside its weights, so a model is rebuilt from the
checkpoint alone, never from the training code's defaults. Named configurations live in
``train/model_configs/<name>.json`` (``get_config``).

A config read from a checkpoint is untrusted: :meth:`ModelConfig.validate` types every field
strictly (``"12"``, ``12.0`` and ``true`` are not a depth), bounds the sizes (:data:`INT_FIELDS`,
:data:`MAX_TOKENS`, :data:`MAX_PARAMETERS`) before anything is allocated, accepts only local timm
architecture names (:func:`check_timm_model`: never a hub name, a URL or a path, so building a
model never touches the network), and checks the preprocessing with the bundle manifest's schema.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field, fields, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from vce.runtime.atomic import write_json
from vce.runtime.errors import VCEError
from vce.runtime.labels import LABELS
from vce.runtime.manifest_schema import MAX_IMAGE_SIZE, MIN_IMAGE_SIZE, SchemaError, check_preprocess
from vce.runtime.preprocess import PreprocessSpec

CONFIG_DIR = Path(__file__).resolve().parent / "model_configs"


class Variant(StrEnum):
    """Attention of the tower: the paper's differential attention, the DIFF Transformer's, or none."""

    PAPER = "paper"
    DIFF = "diff"
    NONE = "none"


class Head(StrEnum):
    """Classification head: squeeze-excitation (the paper's) or linear."""

    EXCITATION = "excitation"
    LINEAR = "linear"


class Formulation(StrEnum):
    """How differential attention is computed (all agree to ~1e-6 in fp32): ``sdpa`` (PyTorch's fused
    kernel, for training) or one of the exportable forms (:data:`ExportFormulation`)."""

    SDPA = "sdpa"
    MATMUL = "matmul"
    EQUAL_HEADS = "equal-heads"
    EQUAL_HEADS_SPLIT = "equal-heads-split"


#: the formulations an ONNX export can use (``sdpa`` has no ONNX form that keeps the graph portable)
ExportFormulation = StrEnum(  # type: ignore[misc]
    "ExportFormulation", [(f.name, f.value) for f in Formulation if f is not Formulation.SDPA]
)
VARIANTS = tuple(v.value for v in Variant)
HEADS = tuple(h.value for h in Head)
#: integer fields and their bounds (BiomedCLIP's ViT-B/16: 224, 16, 768, 12, 12, 512)
INT_FIELDS: dict[str, tuple[int, int]] = {
    "image_size": (MIN_IMAGE_SIZE, MAX_IMAGE_SIZE),
    "patch_size": (1, 64),
    "width": (8, 4096),
    "depth": (1, 64),
    "heads": (1, 64),
    "embed_dim": (1, 4096),
    "num_classes": (1, 1000),
    "se_hidden": (1, 4096),
}
MAX_MLP_RATIO = 16.0
#: patch tokens per image ((image_size / patch_size) ** 2): attention memory grows with its square
MAX_TOKENS = 4096
#: estimated parameters (ViT-B/16: 86M, ViT-L/16: 304M): 4 GB of float32 weights at most
MAX_PARAMETERS = 1_000_000_000
#: a timm model name as timm's own registry spells them: no hub prefix, no URL, no path, no tag
_TIMM_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")


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
        """Raise VCEError for a configuration of the wrong types, out of bounds or inconsistent."""
        where = f"model config {str(self.name)[:64]!r}"
        if not isinstance(self.name, str) or len(self.name) > 128:
            raise VCEError("model config: name must be a string of at most 128 characters")
        check_timm_model(self.timm_model, where)
        for key, (lo, hi) in INT_FIELDS.items():
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
                raise VCEError(f"{where}: {key} must be an integer in {lo}..{hi}, got {_show(value)}")
        _number(where, "mlp_ratio", self.mlp_ratio, 0.0, MAX_MLP_RATIO, low_open=True)
        _number(where, "dropout", self.dropout, 0.0, 1.0, high_open=True)
        if self.lambda_init is not None:
            _number(where, "lambda_init", self.lambda_init, -10.0, 10.0)
        if not isinstance(self.contrastive, bool):
            raise VCEError(f"{where}: contrastive must be true or false, got {_show(self.contrastive)}")
        if self.variant not in VARIANTS:
            raise VCEError(f"{where}: variant {_show(self.variant)} is not one of {', '.join(VARIANTS)}")
        if self.head not in HEADS:
            raise VCEError(f"{where}: head {_show(self.head)} is not one of {', '.join(HEADS)}")
        if self.image_size % self.patch_size:
            raise VCEError(
                f"{where}: image_size {self.image_size} is not a multiple of patch_size {self.patch_size}"
            )
        tokens = (self.image_size // self.patch_size) ** 2
        if tokens > MAX_TOKENS:
            raise VCEError(
                f"{where}: {tokens} patch tokens per image (image_size/patch_size squared) > {MAX_TOKENS}"
            )
        params = self.depth * (4 + 2 * self.mlp_ratio) * self.width**2 + 3 * self.patch_size**2 * self.width
        if params > MAX_PARAMETERS:
            raise VCEError(
                f"{where}: about {params / 1e6:.0f}M parameters, more than the {MAX_PARAMETERS / 1e6:.0f}M allowed"
            )
        if self.width % self.heads:
            raise VCEError(f"{where}: width {self.width} is not divisible by heads {self.heads}")
        if self.variant == "paper" and self.heads % 2:
            raise VCEError(f"{where}: the paper variant splits the heads in two halves; heads must be even")
        if self.variant == "diff" and (self.width // self.heads) % 2:
            raise VCEError(f"{where}: the diff variant halves the head size; width/heads must be even")
        if self.diff_blocks is not None:
            blocks = self.diff_blocks
            if not isinstance(blocks, list) or any(
                isinstance(b, bool) or not isinstance(b, int) for b in blocks
            ):
                raise VCEError(
                    f"{where}: diff_blocks must be null or a list of block numbers, got {_show(blocks)}"
                )
            bad = [b for b in blocks if not 0 <= b < self.depth]
            if bad:
                raise VCEError(f"{where}: diff_blocks {bad[:5]} outside 0..{self.depth - 1}")
            self.diff_blocks = sorted(set(blocks))
        if not isinstance(self.labels, list) or not all(
            isinstance(x, str) and len(x) <= 64 for x in self.labels
        ):
            raise VCEError(f"{where}: labels must be a list of label names, got {_show(self.labels)}")
        if len(self.labels) != self.num_classes:
            raise VCEError(f"{where}: {len(self.labels)} labels but num_classes = {self.num_classes}")
        try:
            preprocess = check_preprocess(self.preprocess, "preprocess")
        except SchemaError as exc:
            raise VCEError(f"{where}: {exc}") from None
        spec = PreprocessSpec.from_dict(preprocess)
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
            overrides["preprocess"] = {**self.preprocess, "image_size": overrides["image_size"]}
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
            d["preprocess"] = {**_default_preprocess(), "image_size": d["image_size"]}
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


def _show(value: Any) -> str:
    if isinstance(value, (dict, list)):  # never repr a container: it may be nested 1000 deep
        return f"a {'JSON object' if isinstance(value, dict) else 'list'} of {len(value)} item(s)"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _number(
    where: str, key: str, value: Any, lo: float, hi: float, *, low_open: bool = False, high_open: bool = False
) -> None:
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    ok = ok and (lo < value if low_open else lo <= value) and (value < hi if high_open else value <= hi)
    if not ok:
        span = f"{'(' if low_open else '['}{lo:g}, {hi:g}{')' if high_open else ']'}"
        raise VCEError(f"{where}: {key} must be a number in {span}, got {_show(value)}")


def check_timm_model(name: Any, where: str = "model config") -> str:
    """A timm architecture name as timm's registry spells them (``vit_base_patch16_224``): never a
    hub name (``hf-hub:``), a URL, a path or a pretrained tag, so that building the model stays
    offline. (The tower also requires timm to know the name, and a class-token ViT.)"""
    if not isinstance(name, str) or not _TIMM_NAME.fullmatch(name):
        raise VCEError(
            f"{where}: timm_model {_show(name)} is not a timm architecture name such as "
            "'vit_base_patch16_224'; hub names, URLs and paths are refused (vce never downloads)"
        )
    return name


def check_formulation(name: Any, allowed: type[StrEnum] = Formulation) -> str:
    """``name`` if it is one of ``allowed``'s formulations, else the one VCEError that lists them."""
    values = tuple(f.value for f in allowed)
    if name not in values:
        raise VCEError(f"unknown attention formulation {name!r}; choose one of {', '.join(values)}")
    return str(name)


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
