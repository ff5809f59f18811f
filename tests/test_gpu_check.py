"""bench/gpu_check.sh runs on any machine: what it cannot do it skips with a reason; results survive failures."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import gpu_check  # noqa: E402


def test_quick_gpu_check_runs_here_and_reports_every_step(tmp_path: Path) -> None:
    bash = shutil.which("bash")
    assert bash is not None
    out = tmp_path / "check"
    proc = subprocess.run(
        [bash, str(ROOT / "bench" / "gpu_check.sh"), "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((out / "gpu_check.json").read_text())
    steps = {s["step"]: s for s in report["steps"]}
    assert sorted(steps) == [1, 2, 3, 4, 5, 6]
    for s in steps.values():
        assert s["status"] in ("ok", "skipped"), s
        if s["status"] == "skipped":
            assert s["reason"] and "\n" not in s["reason"]
            assert f"step {s['step']}: skipped: {s['reason']}" in proc.stdout  # printed, not only filed
    probe = steps[1]["results"]
    assert probe["cpu"]["cores"] >= 1 and "torch" in probe and "onnxruntime" in probe
    if steps[2]["status"] == "skipped":  # no GPU: the CUDA error itself is the result, one line
        assert steps[2]["results"].get("error_is_one_line", True)
    else:
        assert steps[2]["results"]["round_trip"]["data_intact"] is True
    # step 4 is bench/bench_pipeline.py's pipeline_ceiling: its row layout, per core, with the CPU flags
    ceiling = steps[4]["results"]
    cores = ceiling["machine"]["cores_usable"]
    assert cores >= 1 and isinstance(ceiling["machine"]["cpu_flags"], list)
    assert (ceiling["runner"], ceiling["batch"]) == ("NullRunner", 8)
    assert set(ceiling["inputs"]) == {"336_mp4", "336_png"}
    for row in ceiling["inputs"].values():
        assert (row["width"], row["height"], row["decode_1_thread"]["frames"]) == (336, 336, 48)
        for dtype in ("float32", "uint8"):
            for n in sorted({1, cores}):
                run = row[f"{dtype}_{n}w"]
                assert run["frames"] == 48 and run["fps"] > 0
                assert run["fps_per_core"] == pytest.approx(run["fps"] / cores, abs=0.06)
                assert run["vs_decode_1_thread"] == pytest.approx(
                    run["fps"] / row["decode_1_thread"]["fps"], abs=6e-4
                )
    assert "pillow_threads" not in ceiling and "e2e_1080p" not in ceiling  # left out: the budget
    md = (out / "gpu_check.md").read_text()
    assert md.count("\n| ") == 8 and "pipeline-ceiling" in md  # header, rule, 6 steps
    assert (
        f"336_mp4 ({ceiling['inputs']['336_mp4']['codec']}), {cores} worker{'s' if cores > 1 else ''}: float32 "
        in md
    )
    assert report["seconds"] < 150


def test_a_failing_step_is_recorded_and_the_run_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(quick: bool) -> dict:
        raise RuntimeError("CUDA exploded\nsecond line")

    monkeypatch.setitem(gpu_check.RUN, 4, broken)
    raw = tmp_path / "step4.json"
    assert gpu_check.child(4, True, raw) == 0
    rec = json.loads(raw.read_text())
    assert rec["status"] == "failed" and rec["reason"] == "RuntimeError: CUDA exploded"
    report = {
        "started": "t",
        "quick": True,
        "machine": {"cpu": gpu_check._cpu()},
        "steps": [rec],
        "seconds": 1,
    }
    gpu_check._write(tmp_path, report)
    assert "| 4 | pipeline-ceiling | failed |" in (tmp_path / "gpu_check.md").read_text()


def test_the_shell_script_is_strict_about_pipes() -> None:
    text = (ROOT / "bench" / "gpu_check.sh").read_text()
    assert "set -uo pipefail" in text


def test_a_step_stopped_by_its_budget_keeps_what_it_saved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw, log = tmp_path / "step3.json", tmp_path / "step3.log"
    log.write_text("compiling...\n")
    monkeypatch.setattr(gpu_check, "_PARTIAL", raw.with_suffix(".partial.json"))
    gpu_check.progress({"parity_vs_cpu_fp32": {"fp16": {"max_abs_dprob": 1e-3}}})
    rec = gpu_check.collect(3, raw, log, None, 110, 110.2)
    assert rec["status"] == "failed" and rec["reason"].startswith("timed out after 110s")
    assert rec["results"]["parity_vs_cpu_fp32"]["fp16"]["max_abs_dprob"] == 1e-3
    assert rec["log_tail"] == ["compiling..."] and not raw.with_suffix(".partial.json").exists()


def test_the_pipeline_step_is_the_pipeline_benchmark_saved_after_each_input(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import bench_pipeline

    assert gpu_check.pipeline_ceiling is bench_pipeline.pipeline_ceiling
    calls: list[dict] = []
    saved: list[dict] = []

    def ceiling(work: Path, **kwargs: object) -> dict:
        calls.append(kwargs)
        (kind,) = kwargs["kinds"]  # type: ignore[misc]
        row = {
            "codec": kind,
            "decode_1_thread": {"fps": 100.0},
            "float32_1w": {"fps": 50.0, "fps_per_core": 25.0},
        }
        return {
            "machine": {"cores_usable": 2, "cpu_flags": ["avx2"]},
            "batch": 8,
            "inputs": {f"336_{kind}": row},
        }

    monkeypatch.setattr(gpu_check, "pipeline_ceiling", ceiling)
    monkeypatch.setattr(gpu_check, "progress", lambda r: saved.append(json.loads(json.dumps(r))))
    monkeypatch.setattr(gpu_check, "_usable_cores", lambda: 4)
    r = gpu_check.step_pipeline(True)
    assert [c["kinds"] for c in calls] == [("mp4",), ("png",)]
    for c in calls:
        assert (c["sizes"], c["frames"], c["workers"]) == (("336",), {"336": 48}, [1, 4])
        assert (c["quick"], c["pillow"], c["e2e"]) == (True, False, False)
    assert list(saved[0]["inputs"]) == ["336_mp4"] and list(r["inputs"]) == ["336_mp4", "336_png"]
    summary = gpu_check._summary({"step": 4, "status": "ok", "results": r})
    assert summary.startswith("336_mp4 (mp4), 1 worker: float32 50 frames/s (25/core); decode 100.0 frames/s")
    assert summary.endswith("2 cores, CPU flags avx2")


def test_bad_steps_are_one_line_and_nothing_runs(tmp_path: Path) -> None:
    out = tmp_path / "check"
    proc = subprocess.run(
        ["bash", str(ROOT / "bench" / "gpu_check.sh"), "--steps", "1,7", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and not out.exists()
    assert proc.stderr == "gpu_check: error: --steps '1,7': steps are 1, 2, 3, 4, 5, 6 (comma-separated)\n"
