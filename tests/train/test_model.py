"""VCEClassifier and ModelConfig: forward/backward, heads, contrastive branch, configs, full-size build."""

from __future__ import annotations

import json
import math

import pytest
import torch
from timm.layers import Attention

from vce.runtime.errors import VCEError
from vce.runtime.labels import LABELS
from vce.train.config import ModelConfig, get_config
from vce.train.factory import create_model
from vce.train.layers.diff_attention import DiffTransformerAttention, PaperDiffAttention
from vce.train.layers.heads import ExcitationHead, LinearHead


def _images(n: int = 4, size: int = 224) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("variant", ["paper", "diff", "none"])
@pytest.mark.parametrize("head", ["excitation", "linear"])
def test_forward_backward(variant: str, head: str) -> None:
    torch.manual_seed(0)
    model = create_model("tiny", variant=variant, head=head)
    model.train()
    x = _images()
    feats = model.forward_features(x)
    assert feats.shape == (4, model.config.embed_dim)
    logits = model(x)
    assert logits.shape == (4, 17) and torch.isfinite(logits).all()
    torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.ones_like(logits)).backward()
    trunk = model.visual.trunk
    grads = [
        trunk.patch_embed.proj.weight.grad,
        model.visual.head.proj.weight.grad,
        model.head.fc.weight.grad,
    ]
    if variant != "none":
        grads.append(trunk.blocks[0].attn.lambda_q1.grad)
    assert all(g is not None and g.abs().sum() > 0 for g in grads)
    attn_type = {"paper": PaperDiffAttention, "diff": DiffTransformerAttention, "none": Attention}[variant]
    assert all(type(b.attn) is attn_type for b in trunk.blocks)
    assert isinstance(model.head, ExcitationHead if head == "excitation" else LinearHead)


def test_excitation_head_matches_definition() -> None:
    torch.manual_seed(1)
    model = create_model("tiny", head="excitation").eval()
    head = model.head
    assert head.excitation.fc1.out_features == model.config.se_hidden
    with torch.no_grad():
        head.excitation.bn.running_mean.normal_()
        head.excitation.bn.running_var.uniform_(0.5, 2.0)
        f = torch.randn(5, model.config.embed_dim)
        gate = torch.sigmoid(head.excitation.fc2(torch.relu(head.excitation.fc1(f))))
        bn = head.excitation.bn
        y = (f * gate - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias
        assert torch.allclose(head(f), head.fc(y), atol=1e-5)
    assert create_model("tiny").head.dropout.p == pytest.approx(0.4)


def test_eval_is_deterministic_and_train_uses_dropout() -> None:
    model = create_model("tiny", dropout=0.5)
    x = _images(8)
    with torch.no_grad():
        model.eval()
        assert torch.equal(model(x), model(x))
        model.train()
        assert not torch.equal(model(x), model(x))


def test_diff_blocks_subset() -> None:
    model = create_model("tiny", variant="diff", diff_blocks=[1])
    blocks = model.visual.trunk.blocks
    assert isinstance(blocks[0].attn, Attention) and isinstance(blocks[1].attn, DiffTransformerAttention)
    assert model.config.blocks_with_diff() == [1]


def test_contrastive_branch() -> None:
    torch.manual_seed(2)
    model = create_model("tiny", contrastive=True)
    assert create_model("tiny").contrastive_logits(torch.randn(2, 32)) is None
    assert model.text_features.shape == (17, 32)
    assert torch.allclose(model.text_features.norm(dim=-1), torch.ones(17), atol=1e-5)
    text = torch.randn(17, 32)
    model.set_text_features(3.0 * text)
    assert torch.allclose(model.text_features, torch.nn.functional.normalize(text, dim=-1), atol=1e-6)
    feats = torch.randn(4, 32)
    expected = torch.nn.functional.normalize(feats, dim=-1) @ model.text_features.T / 0.07
    assert torch.allclose(model.contrastive_logits(feats), expected, atol=1e-4)
    with torch.no_grad():
        model.logit_scale.fill_(10.0)  # clamped at ln(100)
    assert model.contrastive_logits(feats).abs().max() <= 100.0 + 1e-4
    assert model.contrastive_logits(feats).abs().max() > 1.0
    assert "text_features" in model.state_dict() and "logit_scale" in dict(model.named_parameters())
    with pytest.raises(VCEError, match="shape"):
        model.set_text_features(torch.randn(3, 32))
    with pytest.raises(VCEError, match="no contrastive"):
        create_model("tiny").set_text_features(text)
    heads = {id(p) for p in model.head_parameters()}
    assert id(model.logit_scale) in heads and id(model.head.fc.weight) in heads
    assert not heads & {id(p) for p in model.backbone_parameters()}


def test_config_roundtrip_and_overrides(tmp_path) -> None:
    cfg = get_config("tiny", variant="diff", head="linear", diff_blocks=[1, 0, 1])
    assert (cfg.variant, cfg.head, cfg.diff_blocks) == ("diff", "linear", [0, 1])
    assert cfg.labels == list(LABELS) and cfg.preprocess["image_size"] == 224
    d = cfg.to_dict()
    assert ModelConfig.from_dict(json.loads(json.dumps(d))) == cfg
    cfg.save_json(tmp_path / "c.json")
    assert ModelConfig.load_json(tmp_path / "c.json") == cfg
    assert get_config(str(tmp_path / "c.json")) == cfg
    big = get_config("biomedclip")
    assert (big.width, big.depth, big.heads, big.embed_dim, big.se_hidden) == (768, 12, 12, 512, 32)
    assert (big.variant, big.head, big.dropout) == ("paper", "excitation", 0.4)
    assert get_config("tiny", image_size=160).preprocess["image_size"] == 160


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"variant": "fancy"}, "variant"),
        ({"head": "mlp"}, "head"),
        ({"heads": 3, "width": 63}, "even"),
        ({"diff_blocks": [5]}, "diff_blocks"),
        ({"num_classes": 3}, "labels"),
        ({"colour": 1}, "unknown field"),
    ],
)
def test_config_validation(overrides, match) -> None:
    with pytest.raises(VCEError, match=match):
        get_config("tiny", **overrides)


def test_unknown_config_name() -> None:
    with pytest.raises(VCEError, match="biomedclip"):
        get_config("huge")


def test_tiny_is_small_and_fast() -> None:
    model = create_model("tiny").eval()
    assert sum(p.numel() for p in model.parameters()) < 500_000
    x = _images(8)
    with torch.inference_mode():
        model(x)
        best = min(_timed(model, x) for _ in range(3))
    assert best < 0.5  # typically ~0.03 s; generous for a loaded 2-core CI machine


def _timed(model, x) -> float:
    import time

    t = time.perf_counter()
    model(x)
    return time.perf_counter() - t


@pytest.mark.slow
def test_full_size_biomedclip_builds_with_open_clip_layout() -> None:
    """The full-size config has BiomedCLIP's tower: open_clip's keys and shapes, ~86M trunk parameters."""
    from open_clip.model import _build_vision_tower

    vision_cfg = dict(
        timm_model_name="vit_base_patch16_224",
        timm_model_pretrained=False,
        timm_pool="",
        timm_proj="linear",
        image_size=224,
    )
    with torch.device("meta"):  # layouts and counts need no real weights
        ref = _build_vision_tower(512, vision_cfg)
        plain = create_model("biomedclip", variant="none")
        paper_meta = create_model("biomedclip")
    ref_shapes = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in plain.visual.state_dict().items()} == ref_shapes
    assert sum(p.numel() for p in plain.visual.trunk.parameters()) == 85_798_656  # ViT-B/16, no classifier
    extra = sum(p.numel() for p in paper_meta.visual.parameters()) - sum(
        p.numel() for p in plain.visual.parameters()
    )
    assert extra == 12 * 4 * 6 * 64  # lambda_q1/k1/q2/k2 of shape (6, 1, 64) per block
    assert sum(p.numel() for p in paper_meta.visual.head.parameters()) == 768 * 512
    paper = create_model("biomedclip").eval()
    assert math.isclose(paper.visual.trunk.blocks[0].attn.scale, 1 / 8)
    with torch.inference_mode():
        assert torch.isfinite(paper(torch.zeros(2, 3, 224, 224))).all()
