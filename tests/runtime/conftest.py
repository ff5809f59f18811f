"""Fixtures for the runtime tests (data builders live in runtime_testdata.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from runtime_testdata import SEQUENCE, colour_frames, make_bundle, write_folder, write_video


@pytest.fixture(scope="session")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("bundle"))


@pytest.fixture
def video_file(tmp_path: Path) -> Path:
    return write_video(tmp_path / "vid_a.avi", colour_frames(SEQUENCE))


@pytest.fixture
def frame_folder(tmp_path: Path) -> Path:
    return write_folder(tmp_path / "vid_b", colour_frames(SEQUENCE, seed=1))
