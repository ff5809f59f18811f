"""Pipeline ceiling: how many frames/s the CPU side of ``vce-run`` can feed an accelerator.

    python bench/bench_pipeline.py                       # full sizes; JSON in bench/results/pipeline.json
    python bench/bench_pipeline.py --quick --json PATH   # small clips: a smoke run
    python bench/bench_pipeline.py --no-e2e              # skip the 1080p end-to-end run (needs torch)

For each frame size (224², 336², 576², 1920x1080) and input (H.264 MP4, PNG folder), in one run:

- ``decode``: a plain single-threaded OpenCV decode of the same file (``read()`` in a loop, or
  ``imdecode`` of each PNG): the yardstick;
- ``pipeline``: ``vce-run``'s own pipeline (``infer_sources``) with a runner that returns at
  once, for 1 and 2 workers, feeding float32 (``normalise()`` on the CPU) and uint8 (a uint8
  graph: no normalisation); frames/s (wall), frames per CPU-second (all threads of the process,
  FFmpeg's included: what one core sustains, whatever else runs on the machine), frames/s per
  usable core, and the cores it used against ``cores_available`` (a GIL-free probe run just
  before: on a shared machine other jobs take cores, and wall-clock figures drop with them);
- ``pillow``: whether Pillow's resize releases the GIL (2 threads against 1, and how far a
  Python loop gets beside a resizing thread: ~1 when the GIL is free, ~0.5 or less when held),
  and whether ``reducing_gap`` would be exact (it is not, in general: it stays off);
- ``e2e_1080p``: ``vce-run`` end to end on ORT CPU with the demo's ``small`` model on the 1080p
  H.264 clip, against its pure inference and the 9.6 frames/s measured before Pillow.

H.264 clips are written with PyAV (libx264) when it is installed; OpenCV's wheels cannot encode
H.264, so without PyAV the clips are MPEG-4 part 2 (``mp4v``) and the JSON says so. Frames are
vce.train.synth capsule frames (unique frames cycled for long clips), scaled to the frame size.

Reuse (``bench/gpu_check.sh``): ``from bench_pipeline import pipeline_ceiling`` with
``sys.path`` holding ``bench/``; ``frames``, ``workers``, ``batch`` and ``pillow=False`` size it to
a budget, ``make_runner`` puts a real engine behind the pipeline.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from vce.runtime.atomic import write_json
from vce.runtime.backends.base import Runner
from vce.runtime.cliapp import VCETyper
from vce.runtime.errors import VCEError, run_cli

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "pipeline.json"
#: (width, height) and frames per clip, full and quick
SIZES: dict[str, tuple[int, int]] = {
    "224": (224, 224),
    "336": (336, 336),
    "576": (576, 576),
    "1080p": (1920, 1080),
}
FRAMES = {"224": 3000, "336": 3000, "576": 1000, "1080p": 300}
QUICK_FRAMES = {"224": 150, "336": 150, "576": 60, "1080p": 24}
#: what vce-run ran at on 1080p before Pillow (issue 12, the demo's model on ORT CPU, 2 cores)
BEFORE_1080P_FPS = 9.6
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "asimd", "sve")

app = VCETyper()


class NullRunner(Runner):
    """Returns zeros at once: the pipeline alone (decode, preprocess, batching, bookkeeping)."""

    name = "null"

    def __init__(self, input_dtype: Any = np.float32) -> None:
        self.input_dtype = np.dtype(input_dtype)

    def _infer(self, images: np.ndarray) -> dict[str, np.ndarray]:
        zeros = np.zeros((images.shape[0], 17), np.float32)
        return {"logits": zeros, "probs": zeros}


def machine() -> dict[str, Any]:
    """CPU model, SIMD flags, usable cores, library versions."""
    import cv2
    import PIL

    flags: set[str] = set()
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("flags", "Features"):
                flags |= set(value.split())
            elif key.strip() == "model name":
                model = value.strip()
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        import av

        pyav = av.__version__
    except ImportError:
        pyav = None
    return {
        "cpu": model,
        "cpu_flags": [f for f in CPU_FLAGS if f in flags],
        "cores_usable": cores,
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "versions": {
            "opencv": cv2.__version__,
            "pillow": PIL.__version__,
            "numpy": np.__version__,
            "pyav": pyav,
        },
    }


# --- inputs ---------------------------------------------------------------------------------------


def _frames(width: int, height: int, n: int, seed: int = 0) -> Any:
    """n synthetic capsule frames (RGB uint8) at width x height: up to 300 unique ones, cycled."""
    import cv2

    from vce.train.synth import iter_video

    unique = min(n, 300)
    render = max(64, min(width, height, 336))
    _, it = iter_video(np.random.default_rng(seed), unique, size=render)
    bank = []
    for frame in it:
        if (width, height) != (render, render):
            frame = cv2.resize(frame, (width, height), interpolation=cv2.INTER_CUBIC)
        bank.append(frame)
    for i in range(n):
        yield bank[i % unique] if (i // unique) % 2 == 0 else bank[unique - 1 - i % unique]  # back and forth


def write_clip(path: Path, width: int, height: int, n: int) -> str:
    """An MP4 of n frames; H.264 (libx264, PyAV) if possible, else mp4v (OpenCV). Returns the codec."""
    codec_file = path.with_suffix(".codec")
    if path.is_file() and codec_file.is_file():
        return codec_file.read_text()
    tmp = path.with_name(f".{path.name}.tmp.mp4")
    try:
        import av

        with av.open(str(tmp), "w") as container:
            stream = container.add_stream("libx264", rate=25)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.options = {"crf": "23", "preset": "medium"}
            for frame in _frames(width, height, n):
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        codec = "h264 (libx264 crf 23, PyAV)"
    except ImportError:
        import cv2

        writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (width, height))
        for frame in _frames(width, height, n):
            writer.write(np.ascontiguousarray(frame[..., ::-1]))
        writer.release()
        codec = "mp4v (MPEG-4 part 2, OpenCV: no H.264 encoder without PyAV)"
    os.replace(tmp, path)
    codec_file.write_text(codec)
    return codec


def write_png_folder(folder: Path, video: Path) -> Path:
    """The video's frames as a PNG frame folder (the same images)."""
    import cv2

    done = folder / ".complete"
    if done.is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    cap = cv2.VideoCapture(str(video))
    i = 0
    while True:
        ok, image = cap.read()
        if not ok:
            break
        cv2.imwrite(str(folder / f"frame_{i:06d}.png"), image)
        i += 1
    cap.release()
    done.write_text(str(i))
    return folder


# --- measurements -----------------------------------------------------------------------------------


def _timed(fn: Callable[[], int]) -> dict[str, float]:
    w0, c0 = time.perf_counter(), time.process_time()
    n = fn()
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    return {"frames": n, "fps": round(n / wall, 1), "frames_per_cpu_s": round(n / max(cpu, 1e-9), 1)}


def cores_available(seconds: float = 1.0) -> float:
    """CPU time over wall time of one GIL-free busy thread per usable core: how many cores this
    process gets right now (other jobs on the machine take the rest)."""
    import cv2

    image = np.random.default_rng(0).integers(0, 256, (512, 512, 3), dtype=np.uint8)
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    stop = threading.Event()
    before = cv2.getNumThreads()
    cv2.setNumThreads(1)

    def burn() -> None:
        while not stop.is_set():
            cv2.GaussianBlur(image, (0, 0), 3)

    threads = [threading.Thread(target=burn) for _ in range(n)]
    w0, c0 = time.perf_counter(), time.process_time()
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    cv2.setNumThreads(before)
    return round((time.process_time() - c0) / (time.perf_counter() - w0), 2)


def decode_baseline(path: Path, threads: int = 1) -> dict[str, float]:
    """A plain OpenCV decode of every frame with ``threads`` FFmpeg threads (0: OpenCV's default)."""
    import cv2

    def video() -> int:
        cap = cv2.VideoCapture(str(path), cv2.CAP_ANY, [cv2.CAP_PROP_N_THREADS, threads] if threads else [])
        n = 0
        while cap.read()[0]:
            n += 1
        cap.release()
        return n

    def folder() -> int:
        files = sorted(p for p in path.iterdir() if p.suffix == ".png")
        for f in files:
            cv2.imdecode(np.fromfile(f, np.uint8), cv2.IMREAD_COLOR)
        return len(files)

    return _timed(folder if path.is_dir() else video)


def null_pipeline(
    path: Path,
    *,
    workers: int,
    input_dtype: str = "float32",
    batch: int = 8,
    make_runner: Callable[[str], Runner] = NullRunner,
) -> dict[str, float]:
    """``infer_sources`` over one input with ``make_runner(input_dtype)`` (default: the null runner)."""
    from vce.runtime.pipeline import PipelineOptions, infer_sources
    from vce.runtime.preprocess import BIOMEDCLIP
    from vce.runtime.sources import discover

    sources = discover([path])
    runner = make_runner(input_dtype)
    opts = PipelineOptions(batch=batch, workers=workers)

    def go() -> int:
        return sum(
            int(vp.frames.size) for vp in infer_sources(sources, runner, spec=BIOMEDCLIP, options=opts)
        )

    return _timed(go)


def pillow_threads(frame_shape: tuple[int, int], calls: int = 40) -> dict[str, float]:
    """resize_crop throughput with 2 threads over 1 thread: ~2 when Pillow releases the GIL."""
    from concurrent.futures import ThreadPoolExecutor

    from vce.runtime.preprocess import resize_crop

    h, w = frame_shape
    frame = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    resize_crop(frame)
    t0 = time.perf_counter()
    for _ in range(calls):
        resize_crop(frame, bgr=True)
    one = calls / (time.perf_counter() - t0)
    with ThreadPoolExecutor(2) as pool:
        t0 = time.perf_counter()
        list(pool.map(lambda _: resize_crop(frame, bgr=True), range(2 * calls)))
        two = 2 * calls / (time.perf_counter() - t0)
    # the GIL itself: how far a pure-Python loop gets while another thread resizes, against alone
    spin_alone = _spin(0.5)
    stop = [False]

    def resize_forever() -> None:
        while not stop[0]:
            resize_crop(frame, bgr=True)

    worker = threading.Thread(target=resize_forever)
    worker.start()
    spin_beside = _spin(0.5)
    stop[0] = True
    worker.join()
    return {"ms_per_frame": round(1000 / one, 2), "threads1_fps": round(one, 1), "threads2_fps": round(two, 1),
            "scaling_2_threads": round(two / one, 2),
            "python_progress_beside_resize": round(spin_beside / spin_alone, 2)}  # fmt: skip


def _spin(seconds: float) -> int:
    n, end = 0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        n += 1
    return n


def reducing_gap_check(shapes: Sequence[tuple[int, int]], random_sizes: int = 60) -> dict[str, Any]:
    """Is Pillow's ``reducing_gap`` (a box reduction first) byte-exact? Measured, per gap."""
    from PIL import Image

    from vce.runtime.preprocess import resize_crop

    rng = np.random.default_rng(0)
    out: dict[str, Any] = {}
    for gap in (2.0, 3.0):
        exact_on = {}
        for h, w in shapes:
            frame = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            nh, nw = (224, int(224 * w / h)) if h <= w else (int(224 * h / w), 224)
            full = np.asarray(Image.fromarray(frame).resize((nw, nh), Image.Resampling.BICUBIC))
            fast = np.asarray(
                Image.fromarray(frame).resize((nw, nh), Image.Resampling.BICUBIC, reducing_gap=gap)
            )
            exact_on[f"{h}x{w}"] = bool(np.array_equal(full, fast))
        same = 0
        for _ in range(random_sizes):
            h, w = (int(v) for v in rng.integers(450, 2000, 2))
            frame = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            nh, nw = (224, int(224 * w / h)) if h <= w else (int(224 * h / w), 224)
            a = np.asarray(Image.fromarray(frame).resize((nw, nh), Image.Resampling.BICUBIC))
            b = np.asarray(
                Image.fromarray(frame).resize((nw, nh), Image.Resampling.BICUBIC, reducing_gap=gap)
            )
            same += bool(np.array_equal(a, b))
        out[f"gap{gap:g}"] = {
            "exact_on": exact_on,
            "exact_fraction_random_sizes": round(same / random_sizes, 3),
        }
    frame = rng.integers(0, 256, (1080, 1920, 3), dtype=np.uint8)
    t0 = time.perf_counter()
    for _ in range(10):
        resize_crop(frame)
    out["exact_1080p_ms"] = round((time.perf_counter() - t0) * 100, 2)
    out["note"] = "not used: vce keeps the exact resize (a reduction first changes bytes on some sizes)"
    return out


def e2e_1080p(work: Path, clip: Path, batch: int = 8) -> dict[str, Any]:
    """vce-run end to end on ORT CPU, the demo's ``small`` model (diff attention, random weights), 1080p."""
    from vce.export.bundle_io import write_bundle
    from vce.runtime.backends.base import create_runner
    from vce.runtime.preprocess import BIOMEDCLIP, model_input, resize_crops
    from vce.runtime.run import RunOptions, run
    from vce.runtime.sources import discover
    from vce.train.factory import resolve_model

    rows: dict[str, Any] = {}
    (src,) = discover([clip])
    crops = resize_crops([s.image for s in src.slots()], BIOMEDCLIP, bgr=True)
    for kind in ("float32", "uint8"):
        bundle = work / f"bundle_small_{kind}"
        if not (bundle / "manifest.json").is_file():
            net, info = resolve_model("small", "diff")
            write_bundle(net, bundle, model_info=info, input_kind=kind)
        with create_runner("ort-cpu", bundle / "model.onnx") as runner:
            x = model_input(crops, BIOMEDCLIP, runner.input_dtype)
            runner.infer(x[:batch])
            t0 = time.perf_counter()
            for i in range(0, len(x), batch):
                runner.infer(x[i : i + batch])
            pure = len(x) / (time.perf_counter() - t0)
        # a new output folder each time: vce-run refuses one that holds an earlier run's outputs
        with tempfile.TemporaryDirectory(prefix=f"e2e_out_{kind}_", dir=work) as out:
            t0 = time.perf_counter()
            result = run([clip], bundle, Path(out), RunOptions(backend="ort-cpu", graph="fp32", batch=batch,
                         resume=False, plots=False))  # fmt: skip
            wall = time.perf_counter() - t0
        rows[kind] = {
            "frames": result.frames,
            "pure_inference_fps": round(pure, 1),
            "e2e_pipeline_fps": round(result.fps, 1),
            "e2e_wall_fps": round(result.frames / wall, 1),
            "vs_before": round(result.fps / BEFORE_1080P_FPS, 2),
        }
    return {
        "model": "small (demo's model), diff attention, random weights, fp32 graph, ORT CPU",
        "batch": batch,
        "before_fps": BEFORE_1080P_FPS,
        "runs": rows,
    }


def pipeline_ceiling(
    work: Path,
    *,
    quick: bool = False,
    sizes: Sequence[str] = tuple(SIZES),
    kinds: Sequence[str] = ("mp4", "png"),
    workers: Sequence[int] = (1, 2),
    inputs: Sequence[str] = ("float32", "uint8"),
    make_runner: Callable[[str], Runner] = NullRunner,
    batch: int = 8,
    frames: Mapping[str, int] | None = None,
    pillow: bool = True,
    e2e: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """The whole benchmark (see the module docstring); returns its JSON-able result.

    ``frames``: frames per clip by size (default ``FRAMES``, ``QUICK_FRAMES`` with ``quick``);
    ``pillow=False`` leaves out the Pillow GIL and ``reducing_gap`` checks.
    """
    work.mkdir(parents=True, exist_ok=True)
    frames = {**(QUICK_FRAMES if quick else FRAMES), **(frames or {})}
    info = machine()
    cores = info["cores_usable"]
    rows: dict[str, Any] = {}
    clips: dict[str, Path] = {}
    for size in sizes:
        w, h = SIZES[size]
        clip = work / f"clip_{size}_{frames[size]}.mp4"
        log(f"{size}: writing the clip ({frames[size]} frames)")
        codec = write_clip(clip, w, h, frames[size])
        clips[size] = clip
        for kind in kinds:
            path = clip if kind == "mp4" else write_png_folder(work / f"png_{size}_{frames[size]}", clip)
            row: dict[str, Any] = {"width": w, "height": h, "codec": codec if kind == "mp4" else "png"}
            row["cores_available"] = cores_available()
            row["decode_1_thread"] = decode_baseline(path)
            if kind == "mp4":
                row["decode_ffmpeg_threads"] = decode_baseline(path, threads=0)  # OpenCV's default
            for dtype in inputs:
                for n in workers:
                    log(f"{size} {kind}: pipeline, {n} worker(s), {dtype}")
                    r = null_pipeline(
                        path, workers=n, input_dtype=dtype, batch=batch, make_runner=make_runner
                    )
                    r["fps_per_core"] = round(r["fps"] / cores, 1)
                    r["vs_decode_1_thread"] = round(r["fps"] / row["decode_1_thread"]["fps"], 3)
                    r["cores_used"] = round(r["fps"] / max(r["frames_per_cpu_s"], 1e-9), 2)
                    row[f"{dtype}_{n}w"] = r
            rows[f"{size}_{kind}"] = row
    shapes = [(SIZES[s][1], SIZES[s][0]) for s in sizes]
    result: dict[str, Any] = {
        "machine": info,
        "quick": quick,
        "runner": getattr(make_runner, "__name__", str(make_runner)),
        "batch": batch,
        "inputs": rows,
    }
    if pillow:
        # (a 224² frame is not resized at all: nothing to measure there)
        result["pillow_threads"] = {
            f"{h}x{w}": pillow_threads((h, w)) for h, w in shapes if (h, w) != (224, 224)
        }
        result["reducing_gap"] = reducing_gap_check(shapes, 12 if quick else 60)
    if e2e and "1080p" in clips:
        log("1080p: vce-run end to end on ORT CPU (small model)")
        result["e2e_1080p"] = e2e_1080p(work, clips["1080p"])
    return result


# --- command -----------------------------------------------------------------------------------------


@app.command("pipeline")
def pipeline_command(
    json_path: Annotated[Path, typer.Option("--json", help="write the result here")] = RESULTS,
    quick: Annotated[bool, typer.Option("--quick", help="short clips: a smoke run")] = False,
    sizes: Annotated[str, typer.Option(help="comma list of 224, 336, 576, 1080p")] = ",".join(SIZES),
    e2e: Annotated[
        bool, typer.Option("--e2e/--no-e2e", help="the 1080p end-to-end run (needs torch)")
    ] = True,
    work: Annotated[Path | None, typer.Option(help="cache for clips and bundles")] = None,
) -> None:
    """Measure the pipeline ceiling and write it as JSON."""
    folder = work or Path(os.environ.get("VCE_BENCH_DIR", Path(tempfile.gettempdir()) / "vce_bench_pipeline"))
    chosen = [s.strip() for s in sizes.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in SIZES]
    if unknown or not chosen:
        raise VCEError(f"--sizes {sizes!r}: choose from {', '.join(SIZES)} (comma-separated)")
    result = pipeline_ceiling(folder, quick=quick, sizes=chosen, e2e=e2e, log=lambda m: print(m, flush=True))
    write_json(json_path, result)
    print(json.dumps(result, indent=1))


def main() -> None:
    run_cli(app, "bench_pipeline")


if __name__ == "__main__":
    main()
