"""Shared fixtures for the export tests: tiny models and one tiny bundle (exported once per session)."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch


@functools.cache
def _tiny(variant: str) -> torch.nn.Module:
    from vce.train.factory import create_model

    torch.manual_seed(0)
    return create_model("tiny", variant=variant).eval()


@pytest.fixture(scope="session")
def tiny_model():
    """tiny_model(variant) -> the same eval-mode tiny model (seed 0) for the whole session."""
    return _tiny


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle of the tiny paper model (seed 0 via resolve_model), with its fp16 graph."""
    from vce.export.bundle_io import add_fp16, write_bundle
    from vce.train.factory import resolve_model

    root = tmp_path_factory.mktemp("bundle") / "tiny"
    model, info = resolve_model("tiny", "paper", seed=0)
    write_bundle(model, root, model_info=info)
    add_fp16(root)
    return root
