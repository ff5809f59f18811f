"""Import of the paper's checkpoints, tested on one written in its layout by a reference model.

The reference below is written from the paper's description (rare-vision.md) with the paper
script's module names: the CLIP model as ``model`` (``model.visual.trunk.blocks.N.attn.q_proj``...,
a text tower ``model.text``, CLIP's ``model.logit_scale``), ``eb_block`` (``fc1``, ``gate`` =
Linear + Sigmoid, ``bn``), ``dropout``, ``classification_head``, ``logit_scale`` and the
``text_features`` buffer. The checkpoint dict has the script's keys, numpy floats included.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn

from vce.runtime.errors import VCEError
from vce.train.factory import create_model
from vce.train.paper_checkpoint import convert_paper_state_dict, load_paper_checkpoint

WIDTH, DEPTH, HEADS, EMBED, PATCH, SIZE = 64, 2, 4, 32, 32, 224


class RefDiffAttention(nn.Module):
    """Two groups of H/2 heads, lambda = mean(exp(clamp(q1.k1, 5)) - exp(clamp(q2.k2, 5)) + 0.8)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.h, self.d = heads, dim // heads
        self.q_proj, self.k_proj, self.v_proj = (nn.Linear(dim, dim) for _ in range(3))
        self.proj = nn.Linear(dim, dim)
        for name in ("lambda_q1", "lambda_k1", "lambda_q2", "lambda_k2"):
            setattr(self, name, nn.Parameter(torch.randn(heads // 2, 1, self.d) * 0.3))

    def forward(self, x, attn_mask=None, is_causal=False):
        b, n, c = x.shape
        q, k, v = (
            p(x).reshape(b, n, self.h, self.d).permute(0, 2, 1, 3)
            for p in (self.q_proj, self.k_proj, self.v_proj)
        )
        q1, q2 = q.chunk(2, dim=1)
        k1, k2 = k.chunk(2, dim=1)
        v1, v2 = v.chunk(2, dim=1)
        l1 = torch.exp(torch.clamp((self.lambda_q1 * self.lambda_k1).sum(-1).sum(-1), max=5))
        l2 = torch.exp(torch.clamp((self.lambda_q2 * self.lambda_k2).sum(-1).sum(-1), max=5))
        lam = (l1 - l2 + 0.8).mean()
        x1 = (
            ((q1 @ k1.transpose(-2, -1) / math.sqrt(self.d)).softmax(-1) @ v1)
            .transpose(1, 2)
            .reshape(b, n, c // 2)
        )
        x2 = (
            ((q2 @ k2.transpose(-2, -1) / math.sqrt(self.d)).softmax(-1) @ v2)
            .transpose(1, 2)
            .reshape(b, n, c // 2)
        )
        return self.proj(torch.cat([x1 - lam * x2, x2], dim=-1))


class RefExcitation(nn.Module):
    def __init__(self, dim: int, reduction: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, dim // reduction)
        self.gate = nn.Sequential(nn.Linear(dim // reduction, dim), nn.Sigmoid())
        self.bn = nn.BatchNorm1d(dim)

    def forward(self, x):
        return self.bn(x * self.gate(F.relu(self.fc1(x))))


class RefPaperModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        trunk = timm.create_model(
            "vit_base_patch16_224",
            pretrained=False,
            num_classes=0,
            img_size=SIZE,
            patch_size=PATCH,
            embed_dim=WIDTH,
            depth=DEPTH,
            num_heads=HEADS,
        )
        for block in trunk.blocks:
            block.attn = RefDiffAttention(WIDTH, HEADS)
        visual = nn.Module()
        visual.trunk = trunk
        visual.head = nn.Sequential(
            OrderedDict(drop=nn.Dropout(0.0), proj=nn.Linear(WIDTH, EMBED, bias=False))
        )
        self.model = nn.Module()
        self.model.visual = visual
        self.model.text = nn.Linear(8, EMBED)  # stands for the text tower: dropped on import
        self.model.logit_scale = nn.Parameter(torch.tensor(4.0))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.register_buffer("text_features", F.normalize(torch.randn(17, EMBED), dim=-1))
        self.eb_block = RefExcitation(EMBED, reduction=4)
        self.dropout = nn.Dropout(0.4)
        self.classification_head = nn.Linear(EMBED, 17)

    def features(self, images):
        visual = self.model.visual
        return visual.head(visual.trunk(images))

    def forward(self, images):
        return self.classification_head(self.dropout(self.eb_block(self.features(images).float())))


@pytest.fixture(scope="module")
def paper_ckpt(tmp_path_factory):
    torch.manual_seed(0)
    ref = RefPaperModel()
    with torch.no_grad():
        ref.train()
        ref(torch.randn(6, 3, SIZE, SIZE))  # BatchNorm running statistics move away from 0/1
    ref.eval()
    shadow = {
        n: p.detach() + 0.01 * torch.randn_like(p) for n, p in ref.named_parameters() if p.requires_grad
    }
    optimizer = torch.optim.AdamW(ref.parameters())
    ckpt = {
        "epoch": 3,
        "model_state_dict": ref.state_dict(),
        "optimizer_state_dict": optimizer.state_dict(),
        "val_mAP": np.float64(0.2528),  # the script stores numpy floats
        "history": {"tl": [0.48], "vl": [0.2], "map": [np.float64(0.23)], "lr": [8.9e-05]},
        "seed": 42,
        "ema_shadow": shadow,
    }
    path = tmp_path_factory.mktemp("paper") / "best_model.pth"
    torch.save(ckpt, path)
    return path, ref, shadow


def _images() -> torch.Tensor:
    return torch.randn(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(5))


def test_import_without_ema_equals_reference(paper_ckpt) -> None:
    path, ref, _ = paper_ckpt
    model = load_paper_checkpoint(path, use_ema=False)
    cfg = model.config
    assert (cfg.variant, cfg.width, cfg.depth, cfg.heads, cfg.patch_size, cfg.image_size) == (
        "paper",
        64,
        2,
        4,
        32,
        224,
    )
    assert (cfg.embed_dim, cfg.se_hidden, cfg.head, cfg.contrastive, cfg.diff_blocks) == (
        32,
        8,
        "excitation",
        True,
        None,
    )
    assert not model.training
    x = _images()
    with torch.no_grad():
        assert (model(x) - ref(x)).abs().max() < 1e-5
        assert (model.forward_features(x) - ref.features(x)).abs().max() < 1e-5
        assert torch.equal(model.text_features, ref.text_features)
        assert torch.equal(model.logit_scale, ref.logit_scale)


def test_import_applies_ema_shadow(paper_ckpt) -> None:
    path, ref, shadow = paper_ckpt
    model = load_paper_checkpoint(path)
    assert torch.equal(model.head.fc.weight, shadow["classification_head.weight"])
    assert torch.equal(
        model.visual.trunk.blocks[1].attn.lambda_k2, shadow["model.visual.trunk.blocks.1.attn.lambda_k2"]
    )
    assert torch.equal(model.head.excitation.fc2.weight, shadow["eb_block.gate.0.weight"])
    # buffers are not in the shadow: they come from model_state_dict
    assert torch.equal(model.head.excitation.bn.running_mean, ref.eb_block.bn.running_mean)
    with torch.no_grad():
        ema_ref = RefPaperModel().eval()
        ema_ref.load_state_dict(ref.state_dict())
        for n, p in ema_ref.named_parameters():
            p.copy_(shadow[n])
        x = _images()
        assert (model(x) - ema_ref(x)).abs().max() < 1e-5
    factory = create_model("biomedclip", pretrained=path)
    assert factory.training and torch.equal(factory.head.fc.weight, model.head.fc.weight)


def test_convert_names() -> None:
    sd = {
        "model.visual.trunk.blocks.3.attn.q_proj.weight": 1,
        "model.visual.head.proj.weight": 2,
        "model.text.transformer.encoder.layer.0.attention.self.query.weight": 3,
        "model.logit_scale": 4,
        "eb_block.fc1.bias": 5,
        "eb_block.gate.0.weight": 6,
        "eb_block.bn.running_var": 7,
        "classification_head.bias": 8,
        "logit_scale": 9,
        "text_features": 10,
    }
    assert convert_paper_state_dict(sd) == {
        "visual.trunk.blocks.3.attn.q_proj.weight": 1,
        "visual.head.proj.weight": 2,
        "head.excitation.fc1.bias": 5,
        "head.excitation.fc2.weight": 6,
        "head.excitation.bn.running_var": 7,
        "head.fc.bias": 8,
        "logit_scale": 9,
        "text_features": 10,
    }


def test_paper_import_errors(tmp_path, paper_ckpt) -> None:
    with pytest.raises(VCEError, match="does not exist"):
        load_paper_checkpoint(tmp_path / "none.pth")
    bad = tmp_path / "evil.pth"
    torch.save({"model_state_dict": {}, "obj": VCEError("not a tensor")}, bad)
    with pytest.raises(VCEError, match="weights-only"):
        load_paper_checkpoint(bad)
    other = tmp_path / "other.pth"
    torch.save({"weights": torch.zeros(1), "step": 3}, other)
    with pytest.raises(VCEError, match="model_state_dict"):
        load_paper_checkpoint(other)
    path, _, _ = paper_ckpt
    with pytest.raises(VCEError, match="do not fit"):
        load_paper_checkpoint(path, config=create_model("tiny", variant="diff", contrastive=True).config)
