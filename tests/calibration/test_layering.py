"""vce.calibration never imports torch (it runs where only numpy and ONNX Runtime are installed)."""

from __future__ import annotations

import subprocess
import sys


def test_calibration_does_not_import_torch() -> None:
    code = (
        "import sys\n"
        "import vce.calibration.calibrate, vce.calibration.cli, vce.calibration.frame_metrics\n"
        "import vce.calibration.groundtruth, vce.calibration.int8, vce.calibration.metric\n"
        "import vce.calibration.search, vce.calibration.thresholds\n"
        "bad = [m for m in ('torch', 'timm', 'open_clip') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
