"""Run every benchmark of the project and write one report: DIR/bench.json and DIR/bench.md.

Started by ``bench/run`` (which picks the project's Python). Each benchmark runs as a subprocess
with a timeout and writes its JSON to DIR/raw/<name>.json, its output to DIR/logs/<name>.log; a
failing one is recorded with its error and the run goes on; the exit status is 1 if any failed.
The ratios (ORT vs PyTorch, INT8 vs fp32, end-to-end vs pure inference, memory growth,
calibration time, demo wall time and mAP, forward images/s per variant, ...) come from
``bench/aggregate.py`` and are measured in this run only.

    bench/run                       # everything, full size (long: an hour or more on 2 cores)
    bench/run --quick               # tiny models, small sizes: checks every benchmark runs
    bench/run --only e2e,memory --out /tmp/b
    bench/run --only pipeline       # the CPU side's ceiling: frames/s per core per frame size
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from aggregate import BENCHMARKS, build_ratios, parse_demo_output, render_markdown  # noqa: E402

from vce.runtime.atomic import write_json, write_text  # noqa: E402
from vce.runtime.cliapp import VCETyper  # noqa: E402
from vce.runtime.errors import VCEError, run_cli  # noqa: E402

PY = sys.executable
BIN = Path(PY).parent  # the venv's scripts (vce-demo) even when it is not activated


@dataclass(frozen=True)
class Bench:
    name: str
    what: str
    command: Callable[[Path, bool], list[str]]  # (json path, quick) -> argv
    timeout_s: int  # full run
    quick_timeout_s: int = 600


def _script(script: str, *extra: str, quick_args: tuple[str, ...] = ("--quick",)) -> Callable:
    def command(json_path: Path, quick: bool) -> list[str]:
        return [PY, str(HERE / script), *extra, "--json", str(json_path), *(quick_args if quick else ())]

    return command


EXPORT_QUICK = (
    "--model",
    "tiny",
    "--reps",
    "2",
    "--cases",
    "paper:torchscript:matmul,diff:torchscript:matmul",
)

SUITE = {
    b.name: b
    for b in (
        Bench("stride", "event agreement of --stride K vs 1", _script("bench_runtime.py", "stride"), 1800),
        Bench(
            "calibration", "calibration on 500,000 synthetic frames", _script("bench_calibration.py"), 3600
        ),
        Bench(
            "memory", "vce-run peak RSS at 10k and 100k frames", _script("bench_runtime.py", "memory"), 3600
        ),
        Bench(
            "pipeline",
            "vce-run's CPU side (null runner) per frame size, decode yardstick, 1080p end to end",
            _script("bench_pipeline.py"),
            3600,
        ),
        Bench("forward", "PyTorch forward images/s per variant", _script("bench_forward.py"), 3600),
        Bench("ort-vs-torch", "ORT CPU vs PyTorch eager", _script("bench_runtime.py", "ort-vs-torch"), 3600),
        Bench("e2e", "vce-run end to end vs pure inference", _script("bench_runtime.py", "e2e"), 3600),
        Bench("int8", "INT8 static/dynamic vs fp32, drift", _script("bench_int8.py"), 5400),
        Bench(
            "export", "exporters and formulations", _script("bench_export.py", quick_args=EXPORT_QUICK), 7200
        ),
        Bench("live", "vce-run --follow: rate kept up with, event delays", _script("bench_live.py"), 1800),
        Bench("demo", "vce-demo wall time and held-out mAP", lambda p, q: ["vce-demo"], 1800, 900),
    )
}
assert tuple(SUITE) == BENCHMARKS


# --- machine ---------------------------------------------------------------------------------------


def _version(*dists: str) -> str | None:
    for dist in dists:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    if sys.platform == "darwin":
        out = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True)
        if out.returncode == 0:
            return out.stdout.strip()
    return platform.processor() or platform.machine()


def _ram_gb() -> float | None:
    try:
        import psutil

        return round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        pass
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def _probe(code: str, timeout: float = 120) -> str | None:
    try:
        out = subprocess.run([PY, "-c", code], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def describe_machine() -> dict[str, Any]:
    """CPU, cores, RAM, OS, Python, library versions and whether a GPU is present."""
    gpus: list[str] = []
    if smi := shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(
                [smi, "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True, timeout=30
            )
            gpus = [g.strip() for g in out.stdout.splitlines() if g.strip()] if out.returncode == 0 else []
        except subprocess.TimeoutExpired:
            pass
    torch_cuda = _probe("import torch; print(int(torch.cuda.is_available()))")
    providers = _probe("import onnxruntime as o; print(','.join(o.get_available_providers()))")
    try:
        physical = __import__("psutil").cpu_count(logical=False)
    except ImportError:
        physical = None
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu": _cpu_model(),
        "cores_logical": os.cpu_count(),
        "cores_physical": physical,
        "cores_usable": usable,
        "ram_gb": _ram_gb(),
        "os": platform.platform(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "versions": {
            "vce": _version("vce"),
            "numpy": _version("numpy"),
            "torch": _version("torch"),
            "onnxruntime": _version("onnxruntime", "onnxruntime-gpu"),
            "onnx": _version("onnx"),
            "opencv": _version("opencv-python-headless", "opencv-python"),
            "pillow": _version("pillow"),
        },
        "gpu_present": bool(gpus) or torch_cuda == "1",
        "gpus": gpus,
        "torch_cuda": None if torch_cuda is None else torch_cuda == "1",
        "ort_providers": providers.split(",") if providers else [],
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
    }


# --- running ---------------------------------------------------------------------------------------


def _run(argv: list[str], log: Path, timeout: float, cwd: Path) -> tuple[int | None, float]:
    """Run ``argv`` in its own process group, output to ``log``; (return code or None on timeout, seconds)."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "PYTHONUNBUFFERED": "1"}
    t0 = time.perf_counter()
    with log.open("w") as fh:
        proc = subprocess.Popen(
            argv, stdout=fh, stderr=subprocess.STDOUT, cwd=cwd, env=env, start_new_session=True
        )
        try:
            return proc.wait(timeout=timeout), time.perf_counter() - t0
        except subprocess.TimeoutExpired:
            for sig, grace in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
                try:
                    os.killpg(proc.pid, sig)
                    proc.wait(timeout=grace)
                    break
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    continue
            return None, time.perf_counter() - t0


def _tail(log: Path, lines: int = 15) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return ""


def run_bench(bench: Bench, out: Path, quick: bool, timeout: float | None) -> tuple[dict[str, Any], Any]:
    """Run one benchmark; (its status record, its JSON result or None)."""
    raw, log = out / "raw" / f"{bench.name}.json", out / "logs" / f"{bench.name}.log"
    raw.unlink(missing_ok=True)
    limit = timeout or (bench.quick_timeout_s if quick else bench.timeout_s)
    record: dict[str, Any] = {"what": bench.what, "log": str(log), "timeout_s": limit}
    if bench.name == "demo":
        return _run_demo(record, raw, log, limit, quick)
    argv = bench.command(raw, quick)
    record["command"] = argv
    rc, seconds = _run(argv, log, limit, ROOT)
    record.update(seconds=round(seconds, 1), returncode=rc)
    if rc is None:
        record.update(status="timeout", error=f"timed out after {limit:g} s\n{_tail(log)}")
    elif rc != 0:
        record.update(status="failed", error=f"exit {rc}\n{_tail(log)}")
    elif not raw.is_file():
        record.update(status="failed", error=f"exit 0 but no JSON at {raw}\n{_tail(log)}")
    else:
        try:
            result = json.loads(raw.read_text())
        except ValueError as exc:
            record.update(status="failed", error=f"unreadable JSON {raw}: {exc}")
        else:
            record.update(status="ok", error=None)
            return record, result
    return record, None


def _run_demo(
    record: dict[str, Any], raw: Path, log: Path, limit: float, quick: bool
) -> tuple[dict[str, Any], Any]:
    exe = shutil.which("vce-demo", path=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    if exe is None:
        record.update(status="not available", error="vce-demo is not installed", seconds=None)
        return record, None
    with tempfile.TemporaryDirectory(prefix="vce_bench_demo_") as tmp:
        # the demo replaces its --out folder; --quick: its smaller configuration
        argv = [exe, "--out", str(Path(tmp) / "demo"), *(["--quick"] if quick else [])]
        record["command"] = argv
        rc, seconds = _run(argv, log, limit, ROOT)
    text = log.read_text(errors="replace")
    record.update(seconds=round(seconds, 1), returncode=rc)
    if rc is None:
        record.update(status="timeout", error=f"timed out after {limit:g} s\n{_tail(log)}")
        return record, None
    if rc != 0:
        missing = "No module named 'vce.export.demo'" in text or "No module named vce.export.demo" in text
        if missing:
            record.update(status="not available", error="vce-demo's module vce.export.demo is not there yet")
        else:
            record.update(status="failed", error=f"exit {rc}\n{_tail(log)}")
        return record, None
    result = {"wall_s": round(seconds, 2), **parse_demo_output(text)}
    write_json(raw, result)
    record.update(status="ok", error=None)
    return record, result


def _write(out: Path, report: dict[str, Any]) -> None:
    write_json(out / "bench.json", report)
    write_text(out / "bench.md", render_markdown(report))


def run_suite(names: list[str], out: Path, quick: bool, timeout: float | None, command: list[str]) -> int:
    """Run the benchmarks ``names`` (in suite order) into ``out``; 1 if any failed, else 0."""
    names = [n for n in BENCHMARKS if n in names]
    for sub in ("raw", "logs"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "quick": quick,
        "command": command,
        "machine": describe_machine(),
        "benchmarks": {},
        "results": {},
        "ratios": {},
    }
    for i, name in enumerate(names, 1):
        print(f"[{i}/{len(names)}] {name}: {SUITE[name].what} ...", flush=True)
        record, result = run_bench(SUITE[name], out, quick, timeout)
        report["benchmarks"][name] = record
        report["results"][name] = result
        report["ratios"] = build_ratios(report["results"])
        _write(out, report)  # after each benchmark: an interrupted run keeps what it measured
        secs = f"{record['seconds']:.0f} s" if record.get("seconds") is not None else ""
        print(f"      {record['status']} {secs}", flush=True)
        if record["status"] not in ("ok", "not available"):
            print("      " + (record.get("error") or "").replace("\n", "\n      "), flush=True)
    _write(out, report)
    print(render_markdown(report))
    print(f"wrote {out / 'bench.json'} and {out / 'bench.md'}")
    failed = [n for n, r in report["benchmarks"].items() if r["status"] not in ("ok", "not available")]
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


app = VCETyper()


@app.command("run")
def run_command(
    quick: Annotated[
        bool, typer.Option("--quick", help="tiny models and small sizes (a few minutes)")
    ] = False,
    out: Annotated[Path, typer.Option(help="default: bench/results/", show_default=False)] = ROOT
    / "bench"
    / "results",
    only: Annotated[str, typer.Option(help=f"comma-separated subset of: {', '.join(BENCHMARKS)}")] = "",
    timeout: Annotated[
        float | None, typer.Option(help="seconds per benchmark (default: each one's own)", show_default=False)
    ] = None,
) -> None:
    """Run every benchmark of vce (or --only some): DIR/bench.json and DIR/bench.md.

    Each benchmark runs in a subprocess with a timeout; a failing one is recorded
    with its error and the run goes on; the exit status is 1 if any failed.

        bench/run                  # everything, full size (an hour or more)
        bench/run --quick          # tiny models, small sizes: a few minutes
        bench/run --only pipeline  # the CPU side's frames/s per core
    """
    names = [n.strip() for n in only.split(",") if n.strip()] or list(BENCHMARKS)
    unknown = [n for n in names if n not in SUITE]
    if unknown:
        raise VCEError(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    out = out.resolve()
    command = ["bench/run", *(["--quick"] if quick else []), *(["--only", only] if only else []),
               "--out", str(out), *(["--timeout", f"{timeout:g}"] if timeout is not None else [])]  # fmt: skip
    raise typer.Exit(run_suite(names, out, quick, timeout, command))


def main() -> None:
    run_cli(lambda: app(prog_name="bench/run"), "bench/run")


if __name__ == "__main__":
    main()
