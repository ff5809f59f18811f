"""Weights from an open_clip folder: a small open_clip CLIP (timm test_vit image tower) built offline.

The folder has open_clip's layout (open_clip_config.json + open_clip_pytorch_model.bin with
visual.trunk.*, visual.head.proj.weight, text.*), as BiomedCLIP's has.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from vce.runtime.errors import VCEError
from vce.train.factory import create_model
from vce.train.layers.diff_attention import PaperDiffAttention
from vce.train.tower import compute_text_features

open_clip = pytest.importorskip("open_clip")

MODEL_CFG = {
    "embed_dim": 24,
    "vision_cfg": {
        "timm_model_name": "test_vit",  # timm's 64-wide, 6-block, 2-head test ViT at 160 px
        "timm_model_pretrained": False,
        "timm_pool": "",
        "timm_proj": "linear",
        "image_size": 160,
    },
    "text_cfg": {"context_length": 24, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory) -> tuple[Path, torch.nn.Module]:
    folder = tmp_path_factory.mktemp("tiny_clip")
    preprocess = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
    (folder / "open_clip_config.json").write_text(
        json.dumps({"model_cfg": MODEL_CFG, "preprocess_cfg": preprocess})
    )
    logging.getLogger().setLevel(logging.ERROR)  # open_clip warns about the missing weights (random init)
    torch.manual_seed(0)
    clip = open_clip.create_model(f"local-dir:{folder}").eval()
    with torch.no_grad():  # non-trivial biases so that a wrong split would show
        for name, p in clip.visual.named_parameters():
            if name.endswith("bias"):
                p.normal_(std=0.2)
    torch.save(clip.state_dict(), folder / "open_clip_pytorch_model.bin")
    return folder, clip


def _images() -> torch.Tensor:
    return torch.randn(3, 3, 160, 160, generator=torch.Generator().manual_seed(1))


def test_plain_variant_equals_open_clip_tower(clip_folder) -> None:
    folder, clip = clip_folder
    model = create_model("tiny", pretrained=folder, variant="none").eval()
    cfg = model.config
    assert (cfg.timm_model, cfg.width, cfg.depth, cfg.heads, cfg.embed_dim) == ("test_vit", 64, 6, 2, 24)
    assert cfg.image_size == 160 and cfg.preprocess["image_size"] == 160
    assert cfg.preprocess["mean"] == [0.5, 0.5, 0.5] and cfg.preprocess["std"] == [0.25, 0.25, 0.25]
    x = _images()
    with torch.no_grad():
        ref = clip.encode_image(x)
        assert (model.forward_features(x) - ref).abs().max() < 1e-5
    assert ref.abs().max() > 0.1


def test_paper_variant_at_lambda_zero_equals_open_clip(clip_folder) -> None:
    folder, clip = clip_folder
    model = create_model("tiny", pretrained=f"local-dir:{folder}", variant="paper", lambda_init=0.0).eval()
    x = _images()
    with torch.no_grad():
        for block in model.visual.trunk.blocks:
            assert isinstance(block.attn, PaperDiffAttention)
            for p in (block.attn.lambda_q1, block.attn.lambda_k1, block.attn.lambda_q2, block.attn.lambda_k2):
                p.zero_()
        ref = clip.encode_image(x)
        assert (model.forward_features(x) - ref).abs().max() < 1e-5
        # with the paper's lambda (0.8 + noise) the features move away from the pretrained ones
        default = create_model("tiny", pretrained=folder).eval()
        assert (default.forward_features(x) - ref).abs().max() > 1e-3


def test_weights_transferred_into_both_variants(clip_folder) -> None:
    folder, clip = clip_folder
    sd = clip.state_dict()
    for variant in ("paper", "diff"):
        model = create_model("tiny", pretrained=folder, variant=variant)
        ours = model.state_dict()
        qkv = sd["visual.trunk.blocks.3.attn.qkv.weight"]
        assert torch.equal(ours["visual.trunk.blocks.3.attn.k_proj.weight"], qkv[64:128])
        for key in (
            "visual.trunk.blocks.5.mlp.fc2.weight",
            "visual.trunk.blocks.0.norm1.bias",
            "visual.trunk.pos_embed",
            "visual.head.proj.weight",
            "visual.trunk.blocks.2.attn.proj.bias",
        ):
            assert torch.equal(ours[key], sd[key]), key


def test_text_features_offline(clip_folder) -> None:
    folder, clip = clip_folder
    tokenizer = open_clip.get_tokenizer(f"local-dir:{folder}")
    prompts = [f"a video capsule endoscopy image showing {label}" for label in ("mouth", "polyp")]
    with torch.no_grad():
        expected = torch.nn.functional.normalize(clip.encode_text(tokenizer(prompts)), dim=-1)
    feats = compute_text_features(clip, tokenizer, labels=["mouth", "polyp"])
    assert feats.shape == (2, 24) and torch.allclose(feats, expected, atol=1e-5)
    model = create_model("tiny", pretrained=folder, contrastive=True)
    from_folder = compute_text_features(folder)
    assert torch.allclose(model.text_features, from_folder, atol=1e-6)
    assert torch.allclose(model.text_features[[0, 15]], expected, atol=1e-5)  # mouth, polyp
    with pytest.raises(VCEError, match="tokenizer"):
        compute_text_features(clip)


def test_open_clip_errors(tmp_path, clip_folder, monkeypatch) -> None:
    with pytest.raises(VCEError, match="does not exist"):
        create_model("tiny", pretrained=f"local-dir:{tmp_path / 'nowhere'}")
    (tmp_path / "open_clip_config.json").write_text(json.dumps({"model_cfg": MODEL_CFG}))
    with pytest.raises(VCEError, match="no weights file"):
        create_model("tiny", pretrained=tmp_path)
    torch.save({"text.token_embedding.weight": torch.zeros(2, 2)}, tmp_path / "open_clip_pytorch_model.bin")
    with pytest.raises(VCEError, match=r"visual\.\*"):
        create_model("tiny", pretrained=tmp_path)
    huggingface_hub = pytest.importorskip("huggingface_hub")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(VCEError, match="cannot download hf-hub"):
        create_model(
            "biomedclip", pretrained="hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224"
        )


def test_image_tower_weights_that_do_not_fit_are_one_line(tmp_path, clip_folder) -> None:
    """The tower is checked by the one state-dict check (checkpoint.check_state_dict), same message."""
    folder, clip = clip_folder
    (tmp_path / "open_clip_config.json").write_text((folder / "open_clip_config.json").read_text())
    sd = {k: v for k, v in clip.state_dict().items() if k != "visual.trunk.norm.bias"}
    sd["visual.trunk.norm.weight"] = torch.zeros(3)
    torch.save(sd, tmp_path / "open_clip_pytorch_model.bin")
    with pytest.raises(
        VCEError,
        match=r"the weights of .*open_clip_pytorch_model\.bin \(image tower\) do not fit the model "
        r"\(missing 1: trunk\.norm\.bias; wrong shape 1: trunk\.norm\.weight\)",
    ):
        create_model("tiny", pretrained=tmp_path)
