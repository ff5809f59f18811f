"""vce-run runs a video end to end with torch (and timm, open_clip, torchvision) made unimportable.

That every module of runtime/ and calibration/ imports without them, and that no module imports one,
is tests/test_layering.py's job (its module list comes from the tree)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from runtime_testdata import SEQUENCE_EVENTS
from test_layering import BLOCK_TORCH

BLOCKER = (
    BLOCK_TORCH
    + r"""
import vce.runtime.cli
sys.argv = ["vce-run"] + sys.argv[1:]
try:
    vce.runtime.cli.main()
except SystemExit as exc:
    code = exc.code
print("EXIT", code, "BANNED", banned())
"""
)


def test_vce_run_works_without_torch(tmp_path: Path, video_file: Path, bundle_dir: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-c", BLOCKER, str(video_file), "-b", str(bundle_dir), "-o", str(out), "-q"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.stdout.strip().splitlines()[-1] == "EXIT 0 BANNED []", proc.stdout + proc.stderr
    events = json.loads((out / "events.json").read_text())
    assert events == {"videos": [{"video_id": "vid_a", "events": SEQUENCE_EVENTS}]}
    assert (out / "vid_a_timeline.png").is_file()
