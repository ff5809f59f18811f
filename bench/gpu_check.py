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
4. vce-run's own pipeline (``infer_sources``) on all cores with a runner that returns at once:
   decode + preprocess frames/s for a synthetic MP4 (H.264 where this OpenCV/ffmpeg can encode it)
   and a PNG frame folder: the ceiling for any GPU backend;
5. the same pipeline with a PyTorch-CUDA fp16 runner (bench code only; the runtime stays
   torch-free): end-to-end frames/s, to set beside the paper's 311 frames/s;
6. where TensorRT or onnxruntime-gpu is installed: the TensorRT tests, an fp16 engine build with
   the inspector JSON saved, parity, images/s.

What a step cannot do on this machine it skips, with the reason. ``--quick`` uses the tiny model
and small inputs (the test suite runs it on machines without a GPU).
"""

from __future__ import annotations

import argparse
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
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
STEPS = {
    1: "probe",
    2: "cuda-python",
    3: "torch-cuda",
    4: "pipeline-ceiling",
    5: "pipeline-torch-cuda",
    6: "tensorrt-ort-gpu",
}
#: seconds per step (full, quick); the whole run also stops at TOTAL seconds
BUDGET = {1: (40, 40), 2: (40, 30), 3: (110, 60), 4: (50, 40), 5: (50, 40), 6: (120, 60)}
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


class NullRunner:
    """Returns at once: what is left is decoding, preprocessing and the pipeline's own work."""

    name = "null"
    input_name = "images"

    def infer(self, images: np.ndarray) -> dict[str, np.ndarray]:
        from vce.runtime.labels import NUM_LABELS

        return {"probs": np.zeros((len(images), NUM_LABELS), np.float32)}

    def close(self) -> None:
        pass


class TorchCudaRunner(NullRunner):
    """Bench only: the model in PyTorch fp16 on CUDA behind vce's Runner interface."""

    name = "torch-cuda-fp16"

    def __init__(self, model: Any) -> None:
        import torch

        self.torch = torch
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


def synthetic_sources(work: Path, frames: int, size: int) -> dict[str, Any]:
    """A synthetic MP4 (H.264 if an encoder is here, else MPEG-4 part 2) and a PNG folder of the same frames."""
    import cv2

    rng = np.random.default_rng(0)
    base = (rng.random((size // 8, size // 8, 3)) * 255).astype(np.uint8)
    images = []
    for i in range(frames):
        frame = cv2.resize(np.roll(base, i, axis=1), (size, size), interpolation=cv2.INTER_CUBIC)
        images.append(cv2.GaussianBlur(frame, (5, 5), 0))
    folder = work / "frames"
    folder.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(images):
        cv2.imwrite(str(folder / f"{i:06d}.png"), img)
    video, codec = work / "video.mp4", None
    for fourcc in ("avc1", "H264"):
        writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*fourcc), 25.0, (size, size))
        if writer.isOpened():
            for img in images:
                writer.write(img)
            writer.release()
            codec = f"H.264 (OpenCV {fourcc})"
            break
        writer.release()
    ffmpeg = shutil.which("ffmpeg")
    if codec is None and ffmpeg:
        cmd = [ffmpeg, "-loglevel", "error", "-y", "-framerate", "25", "-i", str(folder / "%06d.png"),
               "-c:v", "libx264", "-pix_fmt", "yuv420p", str(video)]  # fmt: skip
        if subprocess.run(cmd, capture_output=True).returncode == 0:
            codec = "H.264 (ffmpeg libx264)"
    if codec is None:
        writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (size, size))
        for img in images:
            writer.write(img)
        writer.release()
        codec = "MPEG-4 part 2 (mp4v): no H.264 encoder in this OpenCV and no ffmpeg"
    return {"video": video, "folder": folder, "frames": frames, "size": size, "codec": codec}


def pipeline_fps(sources: dict[str, Any], runner: Any, batch: int, workers: int) -> dict[str, Any]:
    """Frames/s of ``vce.runtime.pipeline.infer_sources`` over the video and the folder.

    The feed helper's pipeline benchmark (``bench/bench_pipeline.py``) did not exist when this was
    written; once it does, this function is the one to replace with it.
    """
    from vce.runtime.pipeline import PipelineOptions, infer_sources
    from vce.runtime.preprocess import BIOMEDCLIP
    from vce.runtime.sources import FolderSource, VideoSource

    out: dict[str, Any] = {"batch": batch, "workers": workers}
    for kind, make in (
        ("video", lambda: VideoSource(sources["video"])),
        ("folder", lambda: FolderSource(sources["folder"])),
    ):
        opts = PipelineOptions(batch=batch, workers=workers)
        start = time.perf_counter()
        n = sum(len(vp.frames) for vp in infer_sources([make()], runner, spec=BIOMEDCLIP, options=opts))
        seconds = time.perf_counter() - start
        out[kind] = {"frames": n, "seconds": round(seconds, 2), "frames_per_s": round(n / seconds, 1)}
        progress(out)
    return out


def _pipeline_inputs(quick: bool, work: Path) -> dict[str, Any]:
    return synthetic_sources(work, 48 if quick else 512, 336)  # Olympus capsule frames are 336x336


def step_pipeline(quick: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="vce-gpu-check-") as tmp:
        src = _pipeline_inputs(quick, Path(tmp))
        r = pipeline_fps(src, NullRunner(), batch=64, workers=os.cpu_count() or 1)
    r.update(codec=src["codec"], frame_size=src["size"], runner="null (returns at once)")
    return r


def step_pipeline_torch(quick: bool) -> dict[str, Any]:
    import torch

    if not torch.cuda.is_available():
        raise Skip(f"torch {torch.__version__} (CUDA build {torch.version.cuda}) sees no CUDA GPU")
    model, desc = _model(quick)
    runner = TorchCudaRunner(model)
    with tempfile.TemporaryDirectory(prefix="vce-gpu-check-") as tmp:
        src = _pipeline_inputs(quick, Path(tmp))
        runner.infer(np.zeros((64, 3, 224, 224), np.float32))  # warm-up: cuBLAS handles, autotuning
        r = pipeline_fps(src, runner, batch=64, workers=os.cpu_count() or 1)
    r.update(codec=src["codec"], model=desc, runner=runner.name, paper_fps=PAPER_FPS)
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
        return f"video {r.get('video', {}).get('frames_per_s')} frames/s, folder {r.get('folder', {}).get('frames_per_s')} frames/s ({r.get('codec', '')})"
    return ", ".join(k for k in r if k not in ("tensorrt", "ort_gpu_backends"))


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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("gpu_check"), help="output folder (default ./gpu_check)")
    ap.add_argument("--quick", action="store_true", help="tiny model, small inputs")
    ap.add_argument(
        "--steps", default=",".join(map(str, STEPS)), help="comma list of steps to run (default all)"
    )
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--raw", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child(args.child, args.quick, args.raw)
    steps = [int(s) for s in args.steps.split(",") if s.strip()]
    if not set(steps) <= set(STEPS):
        ap.error(f"steps are {', '.join(map(str, STEPS))}")
    return orchestrate(args.out, args.quick, steps)


if __name__ == "__main__":
    sys.exit(main())
