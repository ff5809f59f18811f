"""Shared fixtures of the training tests: one small synthetic dataset per session."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def synth_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 synthetic videos x 60 frames of 96 px (Galar layout), written once per test session."""
    from vce.train.synth import write_dataset

    root = tmp_path_factory.mktemp("synth") / "data"
    write_dataset(root, videos=3, frames=60, seed=5, size=96)
    return root
