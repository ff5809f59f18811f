"""The five-minute GPU check (started by ``bench/gpu_check.sh``): writes OUT/gpu_check.json and gpu_check.md.

Steps, each in its own subprocess with a time budget, so that a crash or a hang in one is recorded
and the next still runs; the report is rewritten after every step:

1. probe: GPU, driver, compute capability; which of torch (CUDA?), tensorrt, onnxruntime (GPU
   providers?), cuda-python are importable;
2. cuda-python, the TensorRT runner's own memory code (``vce.runtime.backends.cuda_rt``):
   ``gpu_info()``, a CUDA error as one line, a 32x3x224x224 float32 round trip host -> device ->
   host from pageable and from pinned memory, in GB/s;
3. the full-size model (paper variant, random weights) in PyTorch on CUDA: fp32 with TF32 off and
   on, fp16 and bf16 autocast against a CPU fp32 reference on 32 frames (max |delta prob|,
   flipped decisions at 0.5); images/s at batch 64 and 256, eager, ``torch.compile`` and a CUDA
   graph, where each works;
4. vce-run's pipeline ceiling: ``bench/bench_pipeline.py``'s ``pipeline_ceiling`` (what
   ``bench/run --only pipeline`` measures) on a 336x336 H.264 MP4 (MPEG-4 part 2 without PyAV) and
   a PNG folder of the same frames: ``infer_sources`` with a runner that returns at once, 1 worker
   and one per core, float32 and uint8 input; frames/s, frames/s per core, against a plain
   single-threaded decode, with the CPU flags: the ceiling for any GPU backend;
5. the same with a PyTorch-CUDA fp16 runner (bench code only; the runtime stays torch-free) at
   batch 64, one worker per core: end-to-end frames/s, to set beside the paper's 311 frames/s;
6. where TensorRT or onnxruntime-gpu is installed: the TensorRT tests, an fp16 engine build with
   the inspector JSON saved, parity, images/s.

What a step cannot do on this machine it skips, with the reason. ``--quick`` uses the tiny model
and small inputs (the test suite runs it on machines without a GPU).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import importlib.metadata
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from vce.runtime.cliapp import VCETyper
from vce.runtime.errors import VCEError, run_cli

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from bench_pipeline import pipeline_ceiling  # noqa: E402  (the benchmark bench/run runs as "pipeline")

STEPS = {
    1: "probe",
    2: "cuda-python",
    3: "torch-cuda",
    4: "pipeline-ceiling",
    5: "pipeline-torch-cuda",
    6: "tensorrt-ort-gpu",
}
#: seconds per step (full, quick); the whole run also stops at TOTAL seconds
BUDGET = {1: (40, 40), 2: (40, 30), 3: (110, 60), 4: (60, 40), 5: (50, 40), 6: (120, 60)}
TOTAL = {False: 290, True: 200}
THRESHOLD = 0.5
PAPER_FPS = 311


_PARTIAL: Path | None = None


def progress(results: dict[str, Any]) -> None:
    """Save what a step has measured so far: a step stopped by its time budget keeps it."""
    if _PARTIAL is not None:
        _PARTIAL.write_text(json.dumps({"status": "running", "results": results}, default=str))


class Skip(Exception):
    """A step that cannot run here: the reason, and what it found before stopping."""

    def __init__(self, reason: str, results: dict[str, Any] | None = None) -> None:
        super().__init__(reason)
        self.results = results or {}


# --- helpers ---------------------------------------------------------------------------------------


def _version(*dists: str) -> str | None:
    for dist in dists:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            return importlib.metadata.version(dist)
    return None


def _has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _cpu() -> dict[str, Any]:
    model, flags = platform.processor() or platform.machine(), set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    return {
        "model": model,
        "cores": os.cpu_count(),
        "flags": sorted(flags & {"avx2", "avx512f", "avx512_vnni", "amx_tile"}),
    }


def _timed(fn: Callable[[], Any], reps: int, sync: Callable[[], None] = lambda: None) -> float:
    """Seconds per call of ``fn`` after one warm-up call."""
    fn()
    sync()
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    sync()
    return (time.perf_counter() - start) / reps


# --- step 1: probe -------------------------------------------------------------------------------------


def step_probe(quick: bool) -> dict[str, Any]:
    r: dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform(), "cpu": _cpu()}
    smi = shutil.which("nvidia-smi")
    if smi:
        q = "name,driver_version,compute_cap,memory.total"
        out = subprocess.run(
            [smi, f"--query-gpu={q}", "--format=csv,noheader"], capture_output=True, text=True
        )
        r["nvidia_smi"] = out.stdout.strip().splitlines() if out.returncode == 0 else out.stderr.strip()
    else:
        r["nvidia_smi"] = "not found"
    from vce.runtime.backends import cuda_rt
    from vce.runtime.errors import VCEError

    try:
        cuda_rt.cudart()
        r["cuda_python"] = {"version": _version("cuda-bindings", "cuda-python"), **cuda_rt.versions()}
        try:
            name, cc = cuda_rt.gpu_info(0)
            r["gpu"] = {"name": name, "compute_capability": cc}
        except VCEError as exc:
            r["gpu"] = {"error": str(exc)}
    except VCEError as exc:
        r["cuda_python"] = {"error": str(exc)}
    if _has("torch"):
        import torch

        t: dict[str, Any] = {"version": torch.__version__, "cuda_build": torch.version.cuda}
        t["cuda_available"] = bool(torch.cuda.is_available())
        if t["cuda_available"]:
            t["device"] = torch.cuda.get_device_name(0)
            t["capability"] = "{}.{}".format(*torch.cuda.get_device_capability(0))
        r["torch"] = t
    else:
        r["torch"] = None
    r["tensorrt"] = _version("tensorrt", "tensorrt-cu13", "tensorrt-cu12") if _has("tensorrt") else None
    if _has("onnxruntime"):
        import onnxruntime as ort

        from vce.runtime.backends.ort import conflict_message

        r["onnxruntime"] = {
            "version": ort.__version__,
            "providers": ort.get_available_providers(),
            "distributions": [d for d in ("onnxruntime", "onnxruntime-gpu") if _version(d)],
            "conflict": conflict_message(),
        }
    r["packages"] = {
        p: _version(p)
        for p in (
            "numpy",
            "opencv-python-headless",
            "timm",
            "open_clip_torch",
            "onnx",
            "onnxconverter-common",
        )
    }
    return r


# --- step 2: cuda-python -------------------------------------------------------------------------------


def step_cuda(quick: bool) -> dict[str, Any]:
    from vce.runtime.backends import cuda_rt
    from vce.runtime.errors import VCEError

    r: dict[str, Any] = {}
    try:
        name, cc = cuda_rt.gpu_info(0)
    except VCEError as exc:  # what a user sees without a GPU: one line
        r["gpu_info_error"] = str(exc)
        r["error_is_one_line"] = "\n" not in str(exc)
        raise Skip(f"no usable CUDA GPU: {exc}", r) from exc
    r["gpu_info"] = {"name": name, "compute_capability": cc}
    try:
        cuda_rt.set_device(10_000)
    except VCEError as exc:
        r["cuda_error_line"] = str(exc)
        r["error_is_one_line"] = "\n" not in str(exc)
    cuda_rt.set_device(0)
    shape = (32, 3, 224, 224)
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    stream = cuda_rt.Stream()
    dev = cuda_rt.DeviceBuffer(x.nbytes, "round trip")
    pin_in = cuda_rt.PinnedBuffer(shape, np.float32, "round trip in")
    pin_out = cuda_rt.PinnedBuffer(shape, np.float32, "round trip out")
    out = np.empty_like(x)
    pin_in.array[...] = x
    reps = 5 if quick else 30

    def round_trip(src: int, dst: int) -> Callable[[], None]:
        def go() -> None:
            cuda_rt.copy_to_device(dev.ptr, src, x.nbytes, stream)  # type: ignore[arg-type]
            cuda_rt.copy_to_host(dst, dev.ptr, x.nbytes, stream)  # type: ignore[arg-type]
            stream.synchronize()

        return go

    try:
        pageable = _timed(round_trip(cuda_rt.host_pointer(x), cuda_rt.host_pointer(out)), reps)
        pinned = _timed(round_trip(pin_in.ptr, pin_out.ptr), reps)  # type: ignore[arg-type]
        r["round_trip"] = {
            "shape": list(shape),
            "mbytes": round(x.nbytes / 1e6, 1),
            "reps": reps,
            "pageable_gb_s": round(2 * x.nbytes / pageable / 1e9, 2),
            "pinned_gb_s": round(2 * x.nbytes / pinned / 1e9, 2),
            "pinned_speedup": round(pageable / pinned, 2),
            "data_intact": bool(np.array_equal(out, x) and np.array_equal(pin_out.array, x)),
        }
    finally:
        for part in (pin_in, pin_out, dev, stream):
            part.close()
    return r


# --- step 3: the model in PyTorch on CUDA ---------------------------------------------------------------


def _model(quick: bool) -> tuple[Any, str]:
    from vce.train.factory import resolve_model

    name = "tiny" if quick else "biomedclip"
    model, _ = resolve_model(name, "paper", seed=0)
    return model.eval(), f"{name} (paper variant, random weights)"


def _frames(n: int) -> np.ndarray:
    from vce.export.parity import synthetic_frames
    from vce.runtime.preprocess import BIOMEDCLIP

    return synthetic_frames(BIOMEDCLIP, n)[0]


def step_torch(quick: bool) -> dict[str, Any]:
    import torch

    if not torch.cuda.is_available():
        raise Skip(f"torch {torch.__version__} (CUDA build {torch.version.cuda}) sees no CUDA GPU")
    model, desc = _model(quick)
    r: dict[str, Any] = {"model": desc, "device": torch.cuda.get_device_name(0), "threshold": THRESHOLD}
    x = torch.from_numpy(_frames(32))
    with torch.no_grad():
        ref = torch.sigmoid(model.float()(x).float()).numpy()
    gpu = model.cuda()
    xg = x.cuda()
    variants: dict[str, Any] = {}
    for name, tf32, dtype in (
        ("fp32", False, None),
        ("fp32-tf32", True, None),
        ("fp16", False, torch.float16),
        ("bf16", False, torch.bfloat16),
    ):
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
        with torch.no_grad(), torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
            p = torch.sigmoid(gpu(xg).float()).cpu().numpy()
        variants[name] = {
            "max_abs_dprob": float(np.abs(p - ref).max()),
            "flipped_decisions": int(((p >= THRESHOLD) != (ref >= THRESHOLD)).sum()),
            "decisions": int(ref.size),
        }
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    r["parity_vs_cpu_fp32"] = variants
    progress(r)
    speeds: dict[str, Any] = {}
    r["images_per_s"] = speeds
    deadline = time.monotonic() + (40 if quick else 75)
    reps = 3 if quick else 10

    def forward(xb: Any, fn: Any = gpu) -> Callable[[], Any]:
        def go() -> Any:
            # cache_enabled=False: autocast's weight cache must not outlive a CUDA graph capture
            with torch.no_grad(), torch.autocast("cuda", dtype=torch.float16, cache_enabled=False):
                return fn(xb)

        return go

    for batch in (64, 256):
        xb = torch.randn(batch, 3, 224, 224, device="cuda")
        row: dict[str, Any] = {
            "eager_fp16": round(batch / _timed(forward(xb), reps, torch.cuda.synchronize), 1)
        }
        speeds[f"batch_{batch}"] = row
        progress(r)
        if time.monotonic() < deadline:
            try:
                graph, side = torch.cuda.CUDAGraph(), torch.cuda.Stream()
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side):
                    for _ in range(2):
                        forward(xb)()
                torch.cuda.current_stream().wait_stream(side)
                with torch.cuda.graph(graph):
                    forward(xb)()
                row["cuda_graph_fp16"] = round(batch / _timed(graph.replay, reps, torch.cuda.synchronize), 1)
            except Exception as exc:  # a capture failure is a result, not a crash
                row["cuda_graph_fp16"] = f"failed: {str(exc).splitlines()[0][:160]}"
            progress(r)
    if time.monotonic() < deadline - 20:  # compiling a ViT-B takes tens of seconds: last
        xb = torch.randn(64, 3, 224, 224, device="cuda")
        try:
            start = time.perf_counter()
            go = forward(xb, torch.compile(gpu))
            go()
            speeds["batch_64"]["compile_seconds"] = round(time.perf_counter() - start, 1)
            speeds["batch_64"]["compile_fp16"] = round(64 / _timed(go, reps, torch.cuda.synchronize), 1)
        except Exception as exc:
            speeds["batch_64"]["compile_fp16"] = f"failed: {str(exc).splitlines()[0][:160]}"
    else:
        speeds["batch_64"]["compile_fp16"] = "skipped: no time left in the step's budget"
    return r


# --- steps 4 and 5: vce-run's pipeline ------------------------------------------------------------------

#: frames of the 336x336 clip (Olympus capsule frames are 336x336), full and quick
PIPELINE_FRAMES = {False: 512, True: 48}
PIPELINE_SIZE = "336"


class TorchCudaRunner:
    """Bench only: the model in PyTorch fp16 on CUDA behind vce's Runner interface (the runtime stays
    torch-free); takes float32 [N,3,H,W] or, with ``input_dtype`` uint8, uint8 [N,H,W,3] RGB crops."""

    name = "torch-cuda-fp16"
    input_name = "images"

    def __init__(self, model: Any, input_dtype: str = "float32") -> None:
        import torch

        self.torch = torch
        self.input_dtype = np.dtype(input_dtype)
        self.model = model.cuda().eval()
        self.mean = torch.tensor([0.48145466, 0.4578275, 0.40821073], device="cuda").view(1, 3, 1, 1)
        self.std = torch.tensor([0.26862954, 0.26130258, 0.27577711], device="cuda").view(1, 3, 1, 1)

    def infer(self, images: np.ndarray) -> dict[str, np.ndarray]:
        torch = self.torch
        x = torch.from_numpy(np.ascontiguousarray(images)).pin_memory().cuda(non_blocking=True)
        if x.dtype == torch.uint8:  # a uint8 [N,H,W,3] pipeline: normalise here, as the uint8 graph does
            x = ((x.permute(0, 3, 1, 2).float() / 255.0) - self.mean) / self.std
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.float16):
            probs = torch.sigmoid(self.model(x).float())
        return {"probs": probs.cpu().numpy()}

    def close(self) -> None:
        pass


def _usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def ceiling_336(quick: bool, work: Path, **kwargs: Any) -> dict[str, Any]:
    """``bench/bench_pipeline.py``'s ``pipeline_ceiling`` (the benchmark ``bench/run --only pipeline``
    runs) on the 336x336 clip, H.264 MP4 then PNG folder (saved after each), without its Pillow checks
    and the 1080p end-to-end run: frames/s, frames/s per core, against a plain decode, CPU flags."""
    r: dict[str, Any] = {}
    for kind in ("mp4", "png"):
        part = pipeline_ceiling(
            work,
            quick=quick,
            sizes=(PIPELINE_SIZE,),
            kinds=(kind,),
            frames={PIPELINE_SIZE: PIPELINE_FRAMES[quick]},
            pillow=False,
            e2e=False,
            log=lambda m: print(m, flush=True),
            **kwargs,
        )
        inputs = {**r.get("inputs", {}), **part.pop("inputs")}
        r.update(part, inputs=inputs)
        progress(r)
    return r


def step_pipeline(quick: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="vce-gpu-check-") as tmp:
        return ceiling_336(quick, Path(tmp), workers=sorted({1, _usable_cores()}))


def step_pipeline_torch(quick: bool) -> dict[str, Any]:
    import torch

    if not torch.cuda.is_available():
        raise Skip(f"torch {torch.__version__} (CUDA build {torch.version.cuda}) sees no CUDA GPU")
    model, desc = _model(quick)
    batch = 64

    def make_runner(input_dtype: str) -> TorchCudaRunner:
        runner = TorchCudaRunner(model, input_dtype)
        shape = (batch, 224, 224, 3) if runner.input_dtype == np.uint8 else (batch, 3, 224, 224)
        runner.infer(np.zeros(shape, runner.input_dtype))  # warm-up: cuBLAS handles, autotuning
        return runner

    with tempfile.TemporaryDirectory(prefix="vce-gpu-check-") as tmp:
        r = pipeline_ceiling(
            quick, Path(tmp), workers=(_usable_cores(),), batch=batch, make_runner=make_runner
        )
    r.update(model=desc, runner=TorchCudaRunner.name, paper_fps=PAPER_FPS)
    return r


# --- step 6: TensorRT / onnxruntime-gpu -----------------------------------------------------------------


def _run(cmd: list[str], timeout: float, cwd: Path | None = None) -> dict[str, Any]:
    start = time.perf_counter()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=max(timeout, 5), cwd=cwd)
        tail = (p.stdout + p.stderr).strip().splitlines()[-6:]
        return {"rc": p.returncode, "seconds": round(time.perf_counter() - start, 1), "tail": tail}
    except subprocess.TimeoutExpired:
        return {
            "rc": None,
            "seconds": round(time.perf_counter() - start, 1),
            "tail": [f"timed out after {timeout:.0f}s"],
        }


def step_gpu_backends(quick: bool) -> dict[str, Any]:
    from vce.runtime.backends.ort import ort_backends

    trt = _has("tensorrt")
    ort_gpu = [b for b in ort_backends() if b != "ort-cpu"]
    if not trt and not ort_gpu:
        raise Skip("neither TensorRT nor onnxruntime-gpu (CUDA/TensorRT providers) is installed")
    r: dict[str, Any] = {"tensorrt": trt, "ort_gpu_backends": ort_gpu}
    deadline = time.monotonic() + BUDGET[6][quick] - 10
    py = sys.executable

    def run(key: str, cmd: list[str], reserve: float = 0.0) -> bool:
        r[key] = _run(cmd, deadline - time.monotonic() - reserve, ROOT)
        progress(r)
        return r[key]["rc"] == 0

    if trt and not _has("pytest"):
        r["tensorrt_tests"] = "skipped: pytest is not installed"
    elif trt:  # only the files holding tensorrt tests: collecting all would need every test dependency
        files = ["tests/runtime/test_backends.py", "tests/export/test_export_tensorrt.py"]
        run(
            "tensorrt_tests",
            [py, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "tensorrt", *files],
            60,
        )
    with tempfile.TemporaryDirectory(prefix="vce-gpu-check-") as tmp:
        bundle = Path(tmp) / "bundle"
        spec = "tiny" if quick else "biomedclip"
        cli = [py, "-c", "from vce.export.cli import main; main()"]
        if not run("export", [*cli, "onnx", spec, "--variant", "paper", "-o", str(bundle)]):
            return r
        fp16 = run("fp16_graph", [*cli, "fp16", str(bundle)])
        built = False
        if trt and fp16:
            layers = Path(tmp) / "layers.json"
            built = run("engine", [*cli, "trt", str(bundle), "--max-batch", "64", "--opt-batch", "64",
                                   "--layers-json", str(layers)])  # fmt: skip
            if layers.is_file():
                out = Path(os.environ.get("VCE_GPU_CHECK_OUT", tmp))
                shutil.copy(layers, out / "engine_layers.json")
                r["engine_layers_json"] = str(out / "engine_layers.json")
        targets = (["trt"] if built else []) + ort_gpu + ([f"{b}-fp16" for b in ort_gpu] if fp16 else [])
        if targets:
            report = Path(tmp) / "parity.json"
            run("parity", [*cli, "parity", str(bundle), "--checkpoint", spec, "--variant", "paper", "--limit", "32",
                           "--backends", ",".join(targets), "--json", str(report)])  # fmt: skip
            if report.is_file():
                data = json.loads(report.read_text())
                r["parity"]["targets"] = {
                    t["target"]: {
                        "passed": t.get("passed"),
                        "probs_max_abs": t.get("outputs", {}).get("probs", {}).get("max_abs"),
                    }
                    for t in data.get("targets", [])
                }
                progress(r)
        if built:
            r["engine_images_per_s"] = _engine_speed(bundle / "model.engine", quick)
    return r


def _engine_speed(engine: Path, quick: bool) -> dict[str, Any]:
    from vce.runtime.backends.trt import TensorRTRunner

    out: dict[str, Any] = {}
    with TensorRTRunner(engine) as runner:
        for batch in (64, 256):
            x = (
                np.random.default_rng(0)
                .standard_normal((batch, *runner.item_shape))
                .astype(runner.dtypes[runner.input_name])
            )
            # 256 frames on a max-batch-64 engine: four chunks, uploads overlapping compute
            out[f"batch_{batch}"] = round(batch / _timed(lambda x=x: runner.infer(x), 3 if quick else 10), 1)
    return out


RUN: dict[int, Callable[[bool], dict[str, Any]]] = {
    1: step_probe,
    2: step_cuda,
    3: step_torch,
    4: step_pipeline,
    5: step_pipeline_torch,
    6: step_gpu_backends,
}


# --- orchestration ---------------------------------------------------------------------------------------


def child(step: int, quick: bool, raw: Path) -> int:
    global _PARTIAL
    _PARTIAL = raw.with_suffix(".partial.json")
    start = time.perf_counter()
    record: dict[str, Any] = {"step": step, "name": STEPS[step]}
    try:
        record.update(status="ok", results=RUN[step](quick))
    except Skip as exc:
        record.update(status="skipped", reason=str(exc), results=exc.results)
    except Exception as exc:
        record.update(status="failed", reason=f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
                      traceback=traceback.format_exc().splitlines()[-8:])  # fmt: skip
    record["seconds"] = round(time.perf_counter() - start, 1)
    raw.write_text(json.dumps(record, indent=1, default=str))
    return 0


def _summary(rec: dict[str, Any]) -> str:
    r = rec.get("results") or {}
    if rec["status"] != "ok":
        return str(rec.get("reason", ""))
    step = rec["step"]
    if step == 1:
        gpu = r.get("gpu", {})
        return f"GPU: {gpu.get('name', gpu.get('error', 'none'))}; torch CUDA: {(r.get('torch') or {}).get('cuda_available')}; TensorRT: {r.get('tensorrt')}; ORT providers: {', '.join((r.get('onnxruntime') or {}).get('providers', []))}"
    if step == 2:
        rt = r.get("round_trip", {})
        return f"{r.get('gpu_info', {}).get('name')}: pageable {rt.get('pageable_gb_s')} GB/s, pinned {rt.get('pinned_gb_s')} GB/s"
    if step == 3:
        par = r.get("parity_vs_cpu_fp32", {})
        return "; ".join(
            f"{k} max|dp| {v['max_abs_dprob']:.1e}, {v['flipped_decisions']} flips" for k, v in par.items()
        )
    if step in (4, 5):
        return _pipeline_summary(r)
    return ", ".join(k for k in r if k not in ("tensorrt", "ort_gpu_backends"))


def _pipeline_summary(r: dict[str, Any]) -> str:
    """Per input: frames/s (and per core) at the most workers, float32 and uint8, against a plain decode."""
    parts = []
    cores = (r.get("machine") or {}).get("cores_usable")
    for key, row in (r.get("inputs") or {}).items():
        runs = {k: v for k, v in row.items() if isinstance(v, dict) and "fps_per_core" in v}
        most = max((int(k.rsplit("_", 1)[1][:-1]) for k in runs), default=None)
        figures = [
            f"{dtype} {v['fps']:g} frames/s ({v['fps_per_core']:g}/core)"
            for dtype in ("float32", "uint8")
            if (v := runs.get(f"{dtype}_{most}w"))
        ]
        decode = (row.get("decode_1_thread") or {}).get("fps")
        workers = f"{most} worker{'' if most == 1 else 's'}"
        parts.append(f"{key} ({row.get('codec')}), {workers}: {', '.join(figures)}; decode {decode} frames/s")
    flags = ",".join((r.get("machine") or {}).get("cpu_flags", [])) or "none"
    return "; ".join(parts) + f"; {cores} cores, CPU flags {flags}"


def render(report: dict[str, Any]) -> str:
    lines = [
        "# GPU check",
        "",
        f"{report['started']}, {report['machine']['cpu']['model']} ({report['machine']['cpu']['cores']} cores), "
        f"quick: {report['quick']}, total {report.get('seconds', '?')} s.",
        "",
        "| step | what | status | s | summary |",
        "| --- | --- | --- | --- | --- |",
    ]
    for rec in report["steps"]:
        summary = _summary(rec).replace("|", "/").replace("\n", " ")
        lines.append(
            f"| {rec['step']} | {rec['name']} | {rec['status']} | {rec.get('seconds', '')} | {summary} |"
        )
    lines += ["", "Details: gpu_check.json (every number, every skip reason)."]
    return "\n".join(lines) + "\n"


def _write(out: Path, report: dict[str, Any]) -> None:
    for name, text in (
        ("gpu_check.json", json.dumps(report, indent=1, default=str)),
        ("gpu_check.md", render(report)),
    ):
        tmp = out / f".{name}.tmp"
        tmp.write_text(text)
        tmp.replace(out / name)


def collect(step: int, raw: Path, log: Path, rc: int | None, budget: float, seconds: float) -> dict[str, Any]:
    """The step's record: its own, or a failure with the log's tail and whatever it saved on the way."""
    partial = raw.with_suffix(".partial.json")
    if raw.is_file():
        rec = json.loads(raw.read_text())
    else:
        tail = log.read_text(errors="replace").strip().splitlines()[-5:] if log.is_file() else []
        why = f"timed out after {budget:.0f}s" if rc is None else f"exit status {rc}"
        rec = {"step": step, "name": STEPS[step], "status": "failed", "reason": why, "log_tail": tail,
               "seconds": round(seconds, 1)}  # fmt: skip
        if partial.is_file():
            rec["results"] = json.loads(partial.read_text()).get("results", {})
            rec["reason"] += "; what it measured before is kept"
    partial.unlink(missing_ok=True)
    return rec


def orchestrate(out: Path, quick: bool, steps: list[int]) -> int:
    out.mkdir(parents=True, exist_ok=True)
    (out / "raw").mkdir(exist_ok=True)
    (out / "logs").mkdir(exist_ok=True)
    start = time.monotonic()
    report: dict[str, Any] = {
        "started": _dt.datetime.now().isoformat(timespec="seconds"),
        "quick": quick,
        "machine": {"cpu": _cpu(), "python": platform.python_version(), "platform": platform.platform()},
        "steps": [],
    }
    env = {**os.environ, "VCE_GPU_CHECK_OUT": str(out), "PYTHONUNBUFFERED": "1"}
    failed = 0
    for step in steps:
        left = TOTAL[quick] - (time.monotonic() - start)
        budget = min(BUDGET[step][quick], left)
        raw, log = out / "raw" / f"step{step}.json", out / "logs" / f"step{step}.log"
        raw.unlink(missing_ok=True)
        print(f"gpu_check: step {step} ({STEPS[step]}), up to {budget:.0f}s", flush=True)
        if budget < 5:
            rec = {
                "step": step,
                "name": STEPS[step],
                "status": "skipped",
                "reason": "the five-minute budget is spent",
            }
        else:
            cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(step), "--raw", str(raw)] + (
                ["--quick"] if quick else []
            )
            t0 = time.monotonic()
            with log.open("w") as fh:
                try:
                    rc = subprocess.run(
                        cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, timeout=budget
                    ).returncode
                except subprocess.TimeoutExpired:
                    rc = None
            rec = collect(step, raw, log, rc, budget, time.monotonic() - t0)
        failed += rec["status"] == "failed"
        print(f"gpu_check: step {step}: {rec['status']}: {_summary(rec)}", flush=True)
        report["steps"].append(rec)
        report["seconds"] = round(time.monotonic() - start, 1)
        _write(out, report)
    print(f"gpu_check: wrote {out / 'gpu_check.json'} and {out / 'gpu_check.md'} ({report['seconds']} s)")
    return 1 if failed else 0


app = VCETyper()


@app.command("gpu-check")
def gpu_check_command(
    out: Annotated[Path, typer.Option(help="output folder (default ./gpu_check)", show_default=False)] = Path(
        "gpu_check"
    ),
    quick: Annotated[bool, typer.Option("--quick", help="tiny model, small inputs")] = False,
    steps: Annotated[str, typer.Option(help="comma list of steps to run (default all)")] = ",".join(
        map(str, STEPS)
    ),
    child_step: Annotated[int | None, typer.Option("--child", hidden=True)] = None,
    raw: Annotated[Path | None, typer.Option(hidden=True)] = None,
) -> None:
    """The five-minute GPU check: gpu_check.json and gpu_check.md in --out (steps: see bench/gpu_check.py)."""
    if child_step is not None:
        if child_step not in STEPS or raw is None:
            raise VCEError(f"--child takes a step ({', '.join(map(str, STEPS))}) and --raw a file")
        raise typer.Exit(child(child_step, quick, raw))
    try:
        chosen = [int(s) for s in steps.split(",") if s.strip()]
    except ValueError:
        chosen = []
    if not chosen or not set(chosen) <= set(STEPS):
        raise VCEError(f"--steps {steps!r}: steps are {', '.join(map(str, STEPS))} (comma-separated)")
    raise typer.Exit(orchestrate(out, quick, chosen))


def main() -> None:
    run_cli(lambda: app(prog_name="gpu_check"), "gpu_check")


if __name__ == "__main__":
    main()
