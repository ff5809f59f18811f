"""``torchrun --nproc_per_node 2`` runs the same `vce-train fit` on the CPU (gloo); ranks agree."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def test_torchrun_two_processes_agree(synth_data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--standalone",
        "-m",
        "vce.train.cli",
        "fit",
        "--data",
        str(synth_data),
        "--out",
        str(run),
        "--model",
        "tiny",
        "--variant",
        "diff",
        "--epochs",
        "1",
        "--batch-size",
        "4",
        "--stride",
        "4",
        "--val-stride",
        "6",
        "--device",
        "cpu",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "VCE_DEBUG": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    entry = json.loads((run / "train_log.json").read_text())["history"][0]
    assert entry["world_size"] == 2
    # 2 training videos x 15 frames, 4 per process per step -> 30 / 2 / 4 = 3 steps (drop_last)
    assert entry["steps"] == 3
    assert entry["ddp_max_weight_diff_after_first_step"] == pytest.approx(0.0, abs=1e-7)
    assert entry["ddp_max_weight_diff_end_of_epoch"] == pytest.approx(0.0, abs=1e-7)
    assert (run / "val_probs.csv").is_file() and (run / "model.safetensors").is_file()
