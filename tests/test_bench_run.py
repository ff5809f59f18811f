"""bench/run's aggregation (ratios, table, demo line) and runner (failures, timeouts, demo) on canned data."""

from __future__ import annotations

import ast
import importlib.util
import json
import stat
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from typer.testing import CliRunner

from vce.runtime.cliapp import VCETyper

BENCH = Path(__file__).resolve().parents[1] / "bench"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"vce_bench_{name}", BENCH / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


agg = _load("aggregate")
runner = _load("runner")

# the shapes the benchmark scripts write (numbers from earlier runs on the 2-core machine)
CANNED = {
    "ort-vs-torch": {
        "ort_vs_torch": {
            "model": "vit",
            "batch": 8,
            "torch_eager_fps": 0.6,
            "ort_cpu_fp32_fps": 0.75,
            "ort_cpu_int8_dynamic_fps": 1.2,
            "sgemm_gflops": 40.0,
            "torch_gflops": 21.0,
        }
    },
    "e2e": {
        "e2e": {
            "model": "vit",
            "frames": 96,
            "batch": 8,
            "pure_inference_fps": 0.65,
            "e2e_pipeline_fps": 0.78,
            "e2e_wall_fps": 0.52,
        }
    },
    "memory": {"memory": {"runs": {"100000": {"peak_rss_mb": 249.1}, "10000": {"peak_rss_mb": 203.4}}}},
    "calibration": {"frames": 500000, "videos": 10, "configurations": 480, "calibration_seconds": 108.8},
    "int8": {
        "model": "biomedclip",
        "graphs": {
            "fp32": {"images_per_s": 0.62},
            "int8": {"images_per_s": 0.84},
            "int8-dynamic": {"images_per_s": 1.24},
        },
        "quantize": [
            {
                "mode": "static",
                "drift": {"max_abs_prob": 0.0088, "events_changed": 4},
                "within_tolerance": False,
            },
            {"mode": "dynamic", "drift": {"max_abs_prob": 0.0213, "events_changed": 7}},
        ],
    },
    "demo": {
        "wall_s": 312.0,
        "final_line": "held-out mAP@0.5 0.85 / mAP@0.95 0.40",
        "mAP@0.5": 0.85,
        "mAP@0.95": 0.4,
    },
    "forward": {
        "model": "biomedclip",
        "batch": 8,
        "results": [
            {"variant": "none", "formulation": "timm", "images_per_s": 0.5},
            {"variant": "paper", "formulation": "sdpa", "images_per_s": 0.45},
            {"variant": "diff", "formulation": "matmul", "images_per_s": 0.4},
        ],
    },
    "export": {
        "model": "biomedclip",
        "cases": [
            {
                "variant": "paper",
                "exporter": "torchscript",
                "formulation": "matmul",
                "ort_cpu_images_per_s": 0.6,
            },
            {"variant": "diff", "exporter": "dynamo", "formulation": "matmul", "ort_cpu_images_per_s": 0.3},
        ],
    },
    "stride": {"stride": {"noise1.0": {}, "noise0.5": {"results": {"stride2_hold": {"mAP@0.5": 0.9963}}}}},
    "live": {
        "live": {
            "model": "small",
            "max_rate_no_skip": 96.0,
            "first_rate_skipping": 192.0,
            "offline_fps": 180.0,
            "throughput": {"main": {"loop_fps": 150.0}, "reader": {"loop_fps": 165.0}},
            "throughput_448px": {"main": {"loop_fps": 50.0}, "reader": {"loop_fps": 40.0}},
            "delay": {
                "2": {
                    "delay_frames": {"median": 7.0, "max": 9.0},
                    "delay_s": {"median": 3.5, "max": 4.5},
                    "delay_bound_frames": 11,
                    "skipped": 0,
                },
                "6": {
                    "delay_frames": {"median": 6.0, "max": 12.0},
                    "delay_s": {"median": 1.0, "max": 2.0},
                    "delay_bound_frames": 11,
                    "skipped": 0,
                },
            },
            "spin": {"False": {"cpu_ms_per_frame": 5.0, "rate": 24.0}, "True": {"cpu_ms_per_frame": 20.0}},
        }
    },
    "pipeline": {
        "machine": {"cpu_flags": ["avx2"], "cores_usable": 2},
        "inputs": {
            "336_mp4": {
                "codec": "h264",
                "decode_1_thread": {"fps": 1000.0},
                "float32_2w": {"fps": 560.0, "fps_per_core": 280.0},
                "uint8_2w": {"fps": 690.0, "fps_per_core": 345.0},
            },
            "336_png": {
                "decode_1_thread": {"fps": 400.0},
                "float32_2w": {"fps": 480.0, "fps_per_core": 240.0},
            },
            "1080p_mp4": {"float32_2w": {"fps": 50.0, "fps_per_core": 25.0}},
        },
        "e2e_1080p": {"before_fps": 9.6, "runs": {"float32": {"e2e_pipeline_fps": 40.0}, "uint8": {}}},
    },
}


def test_ratios_values_targets_and_raw_numbers() -> None:
    r = agg.build_ratios(CANNED)
    assert r["ort_cpu_vs_torch_eager"]["value"] == pytest.approx(2.0)
    assert (r["ort_cpu_vs_torch_eager"]["target"], r["ort_cpu_vs_torch_eager"]["pass"]) == (">= 1.8", True)
    assert r["ort_cpu_vs_torch_eager"]["raw"]["torch_eager_fps"] == 0.6
    fp32 = r["ort_cpu_fp32_vs_torch_eager"]
    assert (fp32["value"], fp32["target"], fp32["pass"]) == (pytest.approx(1.25), None, None)
    assert fp32["raw"]["sgemm_gflops"] == 40.0
    assert r["e2e_wall_vs_pure"]["value"] == pytest.approx(0.8, abs=1e-4)
    assert r["e2e_wall_vs_pure"]["pass"] is False
    assert r["e2e_pipeline_vs_pure"]["value"] == pytest.approx(1.2, abs=1e-4)
    assert r["e2e_pipeline_vs_pure"]["pass"] is True
    # sizes sorted as numbers, not strings; growth from the smallest to the largest
    assert r["memory_growth_mb"]["value"] == pytest.approx(45.7)
    assert r["memory_growth_mb"]["pass"] is True
    assert r["memory_growth_mb"]["label"].endswith("10000 -> 100000 frames")
    assert r["calibration_seconds"]["value"] == 108.8 and r["calibration_seconds"]["pass"] is True
    assert r["int8_static_vs_fp32"]["value"] == pytest.approx(0.84 / 0.62, abs=1e-4)
    assert r["int8_dynamic_vs_fp32"]["value"] == pytest.approx(2.0)
    assert r["int8_static_vs_fp32"]["pass"] is None  # no target: information
    assert r["int8_static_vs_fp32"]["raw"]["events_changed"] == 4
    assert r["demo_wall_s"]["pass"] is False and r["demo_map50"]["pass"] is True
    assert r["forward_paper_sdpa_vs_none"]["value"] == pytest.approx(0.9)
    assert r["forward_diff_matmul_vs_none"]["value"] == pytest.approx(0.8)
    assert "forward_none_timm_vs_none" not in r
    assert r["export_diff_dynamo_matmul_vs_first"]["value"] == pytest.approx(0.5)
    assert r["stride2_hold_map50"]["value"] == pytest.approx(0.9963)
    assert r["live_max_rate_no_skip"]["value"] == 96.0 and r["live_max_rate_no_skip"]["pass"] is True
    assert r["live_max_rate_no_skip"]["raw"]["first_rate_skipping"] == 192.0
    assert (r["live_delay_2fps_max_frames"]["value"], r["live_delay_2fps_max_frames"]["pass"]) == (9.0, True)
    assert (
        r["live_delay_6fps_max_frames"]["target"] == "<= 11"
        and r["live_delay_6fps_max_frames"]["pass"] is False
    )
    assert r["live_delay_6fps_max_frames"]["raw"]["median_s"] == 1.0
    assert r["live_reader_vs_main_prep"]["value"] == pytest.approx(1.1)
    assert r["live_reader_vs_main_prep_448px"]["value"] == pytest.approx(0.8)
    assert r["live_cpu_spin_off_vs_on"]["value"] == pytest.approx(0.25)
    # pipeline: against the same run's decode, per core, 1080p against 4x the 9.6 frames/s before
    assert r["pipeline_336_mp4_float32_vs_decode"]["value"] == pytest.approx(0.56)
    assert r["pipeline_336_mp4_float32_vs_decode"]["pass"] is False
    assert r["pipeline_336_mp4_uint8_vs_decode"]["value"] == pytest.approx(0.69)
    assert r["pipeline_336_mp4_uint8_vs_decode"]["raw"]["cpu_flags"] == "avx2"
    assert (r["pipeline_336_png_fps_per_core"]["value"], r["pipeline_336_png_fps_per_core"]["pass"]) == (
        240,
        False,
    )
    assert (
        r["pipeline_1080p_mp4_float32_per_core"]["value"] == 25
        and r["pipeline_1080p_mp4_float32_per_core"]["pass"] is None
    )
    assert r["e2e_1080p_float32_fps"]["target"] == ">= 38.4" and r["e2e_1080p_float32_fps"]["pass"] is True
    assert r["e2e_1080p_uint8_fps"]["value"] is None


def test_failed_benchmark_keeps_its_targeted_ratios_without_values() -> None:
    r = agg.build_ratios({"ort-vs-torch": None, "demo": None, "export": None})
    assert r["ort_cpu_vs_torch_eager"]["value"] is None and r["ort_cpu_vs_torch_eager"]["pass"] is None
    assert r["demo_map50"]["target"] == ">= 0.8"
    assert not any(k.startswith("export_") for k in r)
    assert "memory_growth_mb" not in r  # not selected


@pytest.mark.parametrize(
    ("text", "m50", "m95"),
    [
        ("epoch 3 mAP@0.5 0.2\nheld-out mAP@0.5 0.912 / mAP@0.95 0.401\ndone", 0.912, 0.401),
        ('{"mAP@0.5": 0.85, "mAP@0.95": 0.3}', 0.85, 0.3),
        ("held-out mAP@0.5 / mAP@0.95: 0.81 / 0.25", 0.81, 0.25),
        ("mAP@0.5=0.9", 0.9, None),
        ("no metric here", None, None),
    ],
)
def test_parse_demo_output(text: str, m50: float | None, m95: float | None) -> None:
    got = agg.parse_demo_output(text)
    assert (got["mAP@0.5"], got["mAP@0.95"]) == (m50, m95)


def test_markdown_table() -> None:
    report = {
        "created": "2026-01-01T00:00:00+00:00",
        "quick": False,
        "machine": {"cpu": "Test CPU", "cores_logical": 2, "versions": {"numpy": "2.0"}, "gpus": []},
        "benchmarks": {
            "ort-vs-torch": {"status": "ok", "seconds": 12.0},
            "e2e": {"status": "timeout", "error": "timed out after 60 s\nlast log line"},
        },
        "ratios": agg.build_ratios({**CANNED, "e2e": None}),
    }
    md = agg.render_markdown(report)
    assert "| ratio | value | target | pass | raw numbers |" in md
    assert (
        "| ORT CPU (default graph: dynamic INT8) / PyTorch eager fp32 images/s (ViT-B/16) | 2x | >= 1.8 | pass |"
        in md
    )
    assert "| ORT CPU fp32 graph / PyTorch eager fp32 images/s (ViT-B/16) | 1.25x | — |" in md
    assert "torch_eager_fps 0.6; ort_cpu_int8_dynamic_fps 1.2" in md
    assert "| vce-demo wall time | 312 s | < 180 | **FAIL** |" in md
    assert "| vce-run end-to-end (wall) / pure inference frames/s | — | >= 0.9 | timeout |" in md
    assert "| INT8 static / fp32 ORT CPU images/s | 1.35x | — | info |" in md
    assert "| cpu | Test CPU |" in md and "| gpus | none |" in md
    assert "| e2e | timeout | — | timed out after 60 s |" in md


def _bench(name: str, code: str) -> object:
    return runner.Bench(name, name, lambda p, q: [sys.executable, "-c", code, str(p)], 60, 60)


def test_runner_records_failures_and_timeouts_and_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write = "import json, sys; json.dump({'ort_vs_torch': {'torch_eager_fps': 1, 'ort_cpu_int8_dynamic_fps': 2}}, open(sys.argv[1], 'w'))"
    suite = {
        "stride": _bench("stride", "import sys; print('boom', file=sys.stderr); sys.exit(3)"),
        "calibration": _bench("calibration", "import time; time.sleep(30)"),
        "ort-vs-torch": _bench("ort-vs-torch", write),
        "memory": _bench("memory", "pass"),  # exit 0 without its JSON
    }
    monkeypatch.setattr(runner, "SUITE", suite)
    monkeypatch.setattr(runner, "describe_machine", lambda: {"cpu": "canned"})
    timeouts = {"stride": 60, "calibration": 0.5, "ort-vs-torch": 60, "memory": 60}
    monkeypatch.setattr(
        runner, "run_bench", lambda b, out, q, t, real=runner.run_bench: real(b, out, q, timeouts[b.name])
    )
    args = ["--only", "stride,calibration,ort-vs-torch,memory", "--out", str(tmp_path)]
    assert CliRunner().invoke(runner.app, args).exit_code == 1
    report = json.loads((tmp_path / "bench.json").read_text())
    status = {k: v["status"] for k, v in report["benchmarks"].items()}
    assert status == {"stride": "failed", "calibration": "timeout", "memory": "failed", "ort-vs-torch": "ok"}
    assert "boom" in report["benchmarks"]["stride"]["error"]
    assert "no JSON" in report["benchmarks"]["memory"]["error"]
    assert report["ratios"]["ort_cpu_vs_torch_eager"]["value"] == 2.0
    assert report["machine"] == {"cpu": "canned"}
    assert report["command"] == [
        "bench/run",
        "--only",
        "stride,calibration,ort-vs-torch,memory",
        "--out",
        str(tmp_path),
    ]
    md = (tmp_path / "bench.md").read_text()
    assert "| calibration | timeout |" in md and "| 2x | >= 1.8 | pass |" in md


def _fake_demo(folder: Path, body: str) -> None:
    exe = folder / "vce-demo"
    exe.write_text(f"#!/bin/sh\n{body}\n")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)


@pytest.mark.parametrize(
    ("body", "status", "m50"),
    [
        (None, "not available", None),
        (
            "echo \"ModuleNotFoundError: No module named 'vce.export.demo'\" >&2; exit 1",
            "not available",
            None,
        ),
        ('echo "training..."; echo "held-out mAP@0.5 0.91 / mAP@0.95 0.42"', "ok", 0.91),
        ('echo "oops" >&2; exit 2', "failed", None),
    ],
)
def test_demo_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: str | None, status: str, m50: float | None
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    if body is not None:
        _fake_demo(
            bin_dir, f'[ "$1" = --out ] && [ -d "$(dirname "$2")" ] && [ "$3" = --quick ] || exit 9\n{body}'
        )
    monkeypatch.setattr(runner, "BIN", bin_dir)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    out = tmp_path / "out"
    for sub in ("raw", "logs"):
        (out / sub).mkdir(parents=True)
    record, result = runner.run_bench(runner.SUITE["demo"], out, True, 30)
    assert record["status"] == status
    assert (result or {}).get("mAP@0.5") == m50
    if status == "ok":
        assert (
            result["wall_s"] >= 0 and json.loads((out / "raw" / "demo.json").read_text())["mAP@0.95"] == 0.42
        )


SCRIPTS = sorted(p.stem for p in BENCH.glob("*.py") if p.stem != "aggregate")


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_bench_script_is_built_on_the_products_cli_app(name: str) -> None:
    """The bench scripts use vce's CLI library as vce-run and the other commands do: VCETyper,
    ``Annotated`` options, command functions named ``<command>_command``."""
    tree = ast.parse((BENCH / f"{name}.py").read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom) for a in n.names}
    imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    calls = {ast.unparse(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    assert "argparse" not in imported and "typer.Typer" not in calls
    commands = [
        (fn, dec)
        for fn in ast.walk(tree)
        if isinstance(fn, ast.FunctionDef)
        for dec in fn.decorator_list
        if isinstance(dec, ast.Call) and ast.unparse(dec.func) == "app.command"
    ]
    assert commands
    for fn, dec in commands:  # the product's rule: "<command>_command", the name spelled out, Annotated
        assert isinstance(dec.args[0], ast.Constant)
        assert fn.name == f"{dec.args[0].value.replace('-', '_')}_command"
        for default in fn.args.defaults:
            assert not (isinstance(default, ast.Call) and ast.unparse(default.func).startswith("typer."))
    module = _load(name)
    assert isinstance(module.app, VCETyper)
    result = CliRunner().invoke(module.app, ["--help"])
    assert result.exit_code == 0 and "Usage:" in result.output


@pytest.mark.parametrize("quick", [False, True])
def test_every_script_takes_the_options_bench_run_passes_it(tmp_path: Path, quick: bool) -> None:
    """bench/run's command line for each benchmark parses (--help after it: parsed, then nothing run)."""
    for name, bench in runner.SUITE.items():
        if name == "demo":
            continue
        argv = bench.command(tmp_path / f"{name}.json", quick)
        script = Path(argv[1])
        assert script.parent == BENCH, argv
        result = CliRunner().invoke(_load(script.stem).app, [*argv[2:], "--help"])
        assert result.exit_code == 0, (name, argv, result.output)


def test_bench_run_refuses_an_unknown_benchmark_in_one_line() -> None:
    proc = subprocess.run(
        [str(BENCH / "run"), "--only", "e2e,nope"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert (
        proc.stderr
        == f"bench/run: error: unknown benchmark(s) nope; choose from {', '.join(agg.BENCHMARKS)}\n"
    )
