"""VCEClassifier: BiomedCLIP's image tower with differential attention and a classification head.

``images -> visual (trunk + proj, [N, embed_dim]) -> head -> logits [N, num_classes]``. With
``config.contrastive`` the model also holds the label prompts' text features as a buffer (computed
once, offline, by ``vce.train.tower.compute_text_features``) and a learnable ``logit_scale``
(clamped at ln 100), so no exported graph ever contains a text tower.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vce.runtime.errors import VCEError
from vce.train.config import ModelConfig
from vce.train.layers.diff_attention import convert_to_diff_attention
from vce.train.layers.heads import build_head
from vce.train.tower import build_tower

LOGIT_SCALE_INIT = math.log(1 / 0.07)
LOGIT_SCALE_MAX = math.log(100.0)


class VCEClassifier(nn.Module):
    """The toolkit's model. ``visual`` is built from ``config`` unless a plain tower is given.

    A given ``visual`` must have the pretrained (timm ``Attention``) layout; it is converted to the
    config's attention variant here, so pretrained weights are transferred by the conversion.
    """

    config: ModelConfig

    def __init__(self, config: ModelConfig, *, visual: nn.Module | None = None) -> None:
        super().__init__()
        self.config = config
        self.visual = build_tower(config) if visual is None else visual
        convert_to_diff_attention(
            self.visual.trunk, config.variant, config.diff_blocks, lambda_init=config.lambda_init
        )
        self.head = build_head(
            config.head, config.embed_dim, config.num_classes, hidden=config.se_hidden, dropout=config.dropout
        )
        if config.contrastive:
            # Random unit prototypes until real text features are set (a pretrained source sets them).
            self.register_buffer(
                "text_features", F.normalize(torch.randn(config.num_classes, config.embed_dim), dim=-1)
            )
            self.logit_scale = nn.Parameter(torch.tensor(LOGIT_SCALE_INIT))

    def forward_features(self, images: Tensor) -> Tensor:
        """The image feature [N, embed_dim] (open_clip's ``encode_image(normalize=False)``)."""
        return self.visual(images)

    def forward(self, images: Tensor) -> Tensor:
        """Logits [N, num_classes]."""
        return self.head(self.forward_features(images).float())

    def contrastive_logits(self, features: Tensor) -> Tensor | None:
        """Scaled cosine similarities [N, num_classes] to the text features; None without the branch."""
        if not self.config.contrastive:
            return None
        img = features.float() / (features.float().norm(dim=-1, keepdim=True) + 1e-8)
        scale = torch.clamp(self.logit_scale, max=LOGIT_SCALE_MAX).exp()
        return img @ self.text_features.t() * scale

    @torch.no_grad()
    def set_text_features(self, features: Tensor) -> None:
        """Fill the text-feature buffer (L2-normalised here) of a contrastive model."""
        if not self.config.contrastive:
            raise VCEError("this model has no contrastive branch (config.contrastive is false)")
        expected = (self.config.num_classes, self.config.embed_dim)
        if tuple(features.shape) != expected:
            raise VCEError(f"text features have shape {tuple(features.shape)}, expected {expected}")
        self.text_features.copy_(F.normalize(features.float(), dim=-1))

    def backbone_parameters(self) -> list[nn.Parameter]:
        """The image tower's parameters (the backbone learning-rate group)."""
        return list(self.visual.parameters())

    def head_parameters(self) -> list[nn.Parameter]:
        """Everything else: head (+ logit_scale)."""
        backbone = {id(p) for p in self.visual.parameters()}
        return [p for p in self.parameters() if id(p) not in backbone]
