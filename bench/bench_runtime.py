"""Runtime benchmarks: end-to-end vs pure inference, memory vs frame count, ORT vs PyTorch, stride.

    python bench/bench_runtime.py all                  # everything, JSON in bench/results/runtime.json
    python bench/bench_runtime.py e2e --frames 96      # vce-run frames/s vs the backend alone
    python bench/bench_runtime.py memory               # peak RSS at 10,000 and 100,000 frames
    python bench/bench_runtime.py ort-vs-torch         # full ViT-B/16 (paper diff-attention), batch 8
    python bench/bench_runtime.py stride               # event agreement of --stride 2/5/10 vs 1
    python bench/bench_runtime.py all --quick --json /tmp/rt.json   # small sizes, tiny model: a smoke run

Every command takes ``--json PATH`` (default bench/results/runtime.json; results are merged into it
by key) and ``--quick`` (small sizes; e2e and ort-vs-torch on the tiny model, so not the figures).

e2e and ort-vs-torch use the full-size BiomedCLIP ViT-B/16 with differential attention (random
weights, exported by vce.export); memory uses the tiny colour model of the runtime tests, small
frames and a 32-px input so 100,000 frames stream in about a minute; stride post-processes
simulated classifier probabilities on synthetic label timelines (inference at the strided
positions returns exactly the stride-1 values there, which the runtime tests check).
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from vce.runtime.atomic import write_json
from vce.runtime.cliapp import VCETyper
from vce.runtime.errors import VCEError, run_cli

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "runtime.json"
sys.path.insert(0, str(ROOT / "tests" / "runtime"))  # the tiny model + bundle builders

app = VCETyper(no_args_is_help=True)


def _machine() -> dict[str, Any]:
    import onnxruntime

    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "ort": onnxruntime.__version__,
    }


FULL = "biomedclip"  # the full-size ViT-B/16; ``tiny`` only for --quick smoke runs
QUICK = "tiny"


def _model_desc(model: str, what: str) -> str:
    return f"biomedclip ViT-B/16, {what}" if model == FULL else f"{model} (quick smoke run), {what}"


def _full_bundle(work: Path, model: str = FULL) -> Path:
    """The model (default: full-size ViT-B/16, paper differential attention) exported into a bundle (cached)."""
    root = work / ("bundle_vitb16" if model == FULL else f"bundle_{model}")
    if (root / "manifest.json").is_file():
        return root
    from vce.export.bundle_io import write_bundle
    from vce.train.factory import resolve_model

    net, info = resolve_model(model, "paper")
    write_bundle(net, root, model_info=info)
    return root


# --- e2e -------------------------------------------------------------------------------------------


def bench_e2e(frames: int, batch: int, work: Path, model: str = FULL) -> dict[str, Any]:
    from vce.runtime.backends.base import create_runner
    from vce.runtime.bundle import Bundle
    from vce.runtime.run import RunOptions, run
    from vce.runtime.sources import discover
    from vce.train.synth import write_dataset

    bundle_dir = _full_bundle(work, model)
    data = work / f"synth_{frames}"
    if not (data / "videos").is_dir():
        write_dataset(data, 1, frames, seed=0, mp4=True, size=256, overwrite=True)
    video = next((data / "videos").glob("*.mp4"))
    bundle = Bundle.load(bundle_dir)
    spec = bundle.manifest.preprocess_spec()
    # pure inference: the same frames, preprocessed beforehand, the same batch
    from vce.runtime.preprocess import preprocess

    (src,) = discover([video])
    x = preprocess([s.image for s in src.slots()], spec, bgr=True)
    runner = create_runner("ort-cpu", bundle.graph("fp32"))
    runner.infer(x[:batch])  # warm-up
    t0 = time.perf_counter()
    for i in range(0, len(x), batch):
        runner.infer(x[i : i + batch])
    pure = len(x) / (time.perf_counter() - t0)
    runner.close()
    out = work / "e2e_out"
    t0 = time.perf_counter()
    result = run(
        [video], bundle_dir, out, RunOptions(backend="ort-cpu", batch=batch, resume=False, overwrite=True)
    )
    wall = time.perf_counter() - t0
    return {
        "model": _model_desc(model, "paper diff-attention, fp32 graph"),
        "frames": len(x),
        "batch": batch,
        "input": "synthetic mp4, 256x256, decoded + Pillow bicubic preprocessing in 2 worker threads",
        "pure_inference_fps": round(pure, 2),
        "e2e_pipeline_fps": round(result.fps, 2),
        "e2e_wall_fps": round(len(x) / wall, 2),
        "ratio_pipeline": round(result.fps / pure, 3),
        "ratio_wall": round(len(x) / wall / pure, 3),
        "note": "pipeline = decode+preprocess+inference loop; wall also counts bundle hashing, session start and outputs",
    }


# --- memory ----------------------------------------------------------------------------------------


def _tiny_video(path: Path, frames: int) -> Path:
    import cv2
    from runtime_testdata import COLOURS

    if path.is_file():
        return path
    rng = np.random.default_rng(0)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (48, 48))
    codes = list(COLOURS)
    i = 0
    while i < frames:
        n = min(int(rng.integers(20, 400)), frames - i)
        colour = np.array(COLOURS[codes[int(rng.integers(len(codes)))]][::-1], np.uint8)
        frame = np.broadcast_to(colour, (48, 48, 3)).copy()
        for _ in range(n):
            writer.write(frame)
        i += n
    writer.release()
    return path


def memory_child(video: Path, bundle: Path, out: Path) -> dict[str, Any]:
    from vce.runtime.run import RunOptions, run

    t0 = time.perf_counter()
    result = run([video], bundle, out, RunOptions(backend="ort-cpu", batch=32, resume=False, overwrite=True))
    return {
        "frames": result.frames,
        "events": sum(len(e) for e in result.events.values()),
        "seconds": round(time.perf_counter() - t0, 1),
        "fps": round(result.fps, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def bench_memory(sizes: list[int], work: Path) -> dict[str, Any]:
    from runtime_testdata import make_bundle

    from vce.runtime.preprocess import PreprocessSpec

    bundle = work / "bundle_tiny"
    if not (bundle / "manifest.json").is_file():
        make_bundle(bundle, spec=PreprocessSpec(image_size=32, resample="cv2-area"))
    rows = {}
    for n in sizes:
        video = _tiny_video(work / f"tiny_{n}.avi", n)
        cmd = [sys.executable, __file__, "memory-child", str(video), str(bundle), str(work / f"mem_out_{n}")]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode:
            raise RuntimeError(proc.stderr[-2000:])
        rows[str(n)] = json.loads(proc.stdout.strip().splitlines()[-1])
    peaks = [rows[str(n)]["peak_rss_mb"] for n in sizes]
    return {
        "model": "tiny colour ONNX (GlobalAveragePool + Gemm), 32-px input, 48x48 MJPG video, batch 32",
        "runs": rows,
        "growth_mb": round(peaks[-1] - peaks[0], 1),
        "note": "peak RSS (ru_maxrss) of a fresh process per size; outputs (frames.csv, events.json, timeline PNG) included",
    }


# --- ORT CPU vs PyTorch eager --------------------------------------------------------------------


def vit_gflop_per_image(width: int, depth: int, mlp_ratio: float, image: int, patch: int) -> float:
    """Multiply-adds x 2 of a ViT's forward pass (patch embedding, projections, attention, MLP)."""
    tokens = (image // patch) ** 2 + 1
    per_block = (
        4 * tokens * width * width + 2 * tokens * tokens * width + 2 * tokens * width * int(width * mlp_ratio)
    )
    embed = (image // patch) ** 2 * 3 * patch * patch * width
    return 2.0 * (depth * per_block + embed) / 1e9


def sgemm_gflops(n: int = 2048, reps: int = 10) -> float:
    """The best fp32 matrix-multiply rate of this CPU (PyTorch's BLAS): the ceiling of any fp32 runtime."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = 0.0
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = max(best, 2 * n**3 / (time.perf_counter() - t0) / 1e9)
    return best


def bench_ort_vs_torch(
    batch: int, iters: int, work: Path, model_name: str = FULL, rounds: int = 3
) -> dict[str, Any]:
    """PyTorch eager fp32 vs ONNX Runtime CPU on the fp32 graph and on the dynamic INT8 graph.

    The INT8 graph is what ``vce-run --backend ort-cpu`` runs by default once ``vce-calibrate int8``
    has added it to a bundle within its drift tolerance; fp32 is what it runs otherwise. The fp32
    ceiling is the CPU's measured matrix-multiply rate over the rate PyTorch already reaches on the
    model: no fp32 runtime can beat PyTorch by more than that on this machine.
    """
    import torch

    from vce.calibration.int8 import quantize_dynamic_int8
    from vce.runtime.backends.base import create_runner
    from vce.runtime.bundle import Bundle
    from vce.train.config import get_config
    from vce.train.factory import resolve_model
    from vce.train.layers.diff_attention import set_formulation

    bundle = Bundle.load(_full_bundle(work, model_name))
    fp32 = bundle.graph("fp32")
    int8 = bundle.root / "bench_int8_dynamic.onnx"  # beside the bundle, not listed in it
    if not int8.is_file():
        quantize_dynamic_int8(fp32, int8)
    model, _ = resolve_model(model_name, "paper")
    x = np.random.default_rng(0).normal(size=(batch, 3, 224, 224)).astype(np.float32)
    xt = torch.from_numpy(x)

    def once(fn: Any) -> float:
        t0 = time.perf_counter()
        for _ in range(iters):
            fn()
        return batch * iters / (time.perf_counter() - t0)

    runners = {"fp32": create_runner("ort-cpu", fp32), "int8_dynamic": create_runner("ort-cpu", int8)}
    with torch.inference_mode():
        ref = model(xt)  # also the warm-up
        # PyTorch in both attention formulations; its faster one is the baseline
        fns: dict[str, Any] = {
            f"torch_{form}": (lambda f=form: (set_formulation(model, f), model(xt)))
            for form in ("sdpa", "matmul")
        }
        fns.update({name: (lambda r=r: r.infer(x)) for name, r in runners.items()})
        for fn in fns.values():
            fn()
        # interleaved rounds, so a slow spell of the machine hits every backend alike; median per backend
        speeds: dict[str, list[float]] = {name: [] for name in fns}
        for _ in range(rounds):
            for name, fn in fns.items():
                speeds[name].append(once(fn))
    med = {name: float(np.median(v)) for name, v in speeds.items()}
    torch_form = max(("sdpa", "matmul"), key=lambda f: med[f"torch_{f}"])
    torch_fps = med[f"torch_{torch_form}"]
    ref_logits = (ref["logits"] if isinstance(ref, dict) else ref).float().numpy()
    ref_probs = 1.0 / (1.0 + np.exp(-ref_logits))
    runs: dict[str, dict[str, float]] = {}
    for name, runner in runners.items():
        got = runner.infer(x)
        runs[name] = {
            "fps": round(med[name], 3),
            "max_abs_logit_diff": float(np.abs(got["logits"] - ref_logits).max()),
            "max_abs_prob_diff": float(np.abs(got["probs"] - ref_probs).max()),
        }
    cfg = get_config(model_name)
    gflop = vit_gflop_per_image(cfg.width, cfg.depth, cfg.mlp_ratio, cfg.image_size, cfg.patch_size)
    peak = sgemm_gflops()
    return {
        "model": _model_desc(model_name, "paper diff-attention, random weights"),
        "batch": batch,
        "iters": iters,
        "rounds": rounds,
        "rounds_fps": {name: [round(v, 3) for v in vals] for name, vals in speeds.items()},
        "threads": torch.get_num_threads(),
        "torch_eager_fps": round(torch_fps, 3),
        "torch_formulation": torch_form,
        "ort_cpu_fp32_fps": runs["fp32"]["fps"],
        "ort_cpu_int8_dynamic_fps": runs["int8_dynamic"]["fps"],
        "speedup": round(runs["int8_dynamic"]["fps"] / torch_fps, 3),
        "speedup_fp32": round(runs["fp32"]["fps"] / torch_fps, 3),
        "gflop_per_image": round(gflop, 2),
        "sgemm_gflops": round(peak, 1),
        "torch_gflops": round(torch_fps * gflop, 1),
        "ort_fp32_gflops": round(runs["fp32"]["fps"] * gflop, 1),
        "fp32_ceiling_vs_torch": round(peak / (torch_fps * gflop), 3),
        "max_abs_logit_diff": runs["fp32"]["max_abs_logit_diff"],
        "int8_max_abs_prob_diff": runs["int8_dynamic"]["max_abs_prob_diff"],
    }


# --- stride --------------------------------------------------------------------------------------


RHO = 0.9  # correlation of the noise between neighbouring frames (consecutive frames look alike)


def _simulated_probs(labels: np.ndarray, rng: np.random.Generator, noise: float) -> np.ndarray:
    """A plausible classifier: logits +-2.5 from the labels plus AR(1) noise of std ``noise``."""
    t, c = labels.shape
    z = np.empty((t, c))
    z[0] = rng.normal(size=c)
    for i in range(1, t):
        z[i] = RHO * z[i - 1] + np.sqrt(1 - RHO**2) * rng.normal(size=c)
    logits = np.where(labels > 0, 2.5, -2.5) + noise * z
    return 1.0 / (1.0 + np.exp(-logits))


def bench_stride(videos: int, frames: int, strides: list[int], noise: float) -> dict[str, Any]:
    from vce.calibration.metric import evaluate
    from vce.runtime.pipeline import fill_probs
    from vce.runtime.postprocess import postprocess
    from vce.train.synth import labels_from_runs, plan_runs, video_rng

    reference: dict[str, list] = {}  # type: ignore[type-arg]
    series = {}
    for v in range(videos):
        rng = video_rng(1234, v)
        segments, runs = plan_runs(rng, frames)
        probs = _simulated_probs(labels_from_runs(frames, segments, runs), rng, noise)
        series[f"v{v}"] = probs
        reference[f"v{v}"] = postprocess(probs, np.arange(frames), 0.5)
    rows: dict[str, Any] = {}
    for k in strides:
        for how in ("hold", "linear"):
            pred = {}
            same = total = 0
            for vid, probs in series.items():
                mask = np.zeros(frames, bool)
                mask[::k] = True
                mask[-1] = True
                pred[vid] = postprocess(fill_probs(probs.copy(), mask, how), np.arange(frames), 0.5)  # type: ignore[arg-type]
                ref = {(e["start"], e["end"], tuple(e["label"])) for e in reference[vid]}
                got = {(e["start"], e["end"], tuple(e["label"])) for e in pred[vid]}
                same += len(ref & got)
                total += len(ref)
            score = evaluate(pred, reference).overall
            rows[f"stride{k}_{how}"] = {
                **{key: round(val, 4) for key, val in score.items()},
                "identical_events": round(same / total, 4),
            }
    return {
        "videos": videos,
        "frames_per_video": frames,
        "reference": "events of stride 1 (same probabilities, every frame)",
        "simulated_probs": f"sigmoid(+-2.5 + {noise} * AR(1) noise, rho {RHO}) on synth label timelines",
        "reference_events_per_video": round(sum(len(e) for e in reference.values()) / videos, 1),
        "results": rows,
    }


# --- commands ------------------------------------------------------------------------------------


def _workdir() -> Path:
    path = Path(os.environ.get("VCE_BENCH_DIR", Path(tempfile.gettempdir()) / "vce_bench_runtime"))
    path.mkdir(parents=True, exist_ok=True)
    return path


JsonPath = Annotated[Path, typer.Option("--json", help="merge the result into this JSON file")]
Quick = Annotated[bool, typer.Option("--quick", help="small sizes (tiny model where full-size): a smoke run")]
Frames = Annotated[int, typer.Option(min=1, help="frames of the synthetic video")]
Batch = Annotated[int, typer.Option(min=1, help="batch size")]


def _numbers(text: str, option: str, kind: type[float] | type[int]) -> list[Any]:
    """``"2,5,10"`` -> [2, 5, 10]; a VCEError naming ``option`` for anything else."""
    try:
        return [kind(v) for v in text.split(",")]
    except ValueError:
        raise VCEError(f"{option} takes comma-separated {kind.__name__}s, got {text!r}") from None


def _save(key: str, value: dict[str, Any], path: Path = RESULTS) -> None:
    path = Path(path)
    data = json.loads(path.read_text()) if path.is_file() else {}
    data[key] = value
    data["machine"] = _machine()
    write_json(path, data)
    print(json.dumps({key: value}, indent=1))


@app.command("e2e")
def e2e_command(
    frames: Frames = 96, batch: Batch = 8, json_path: JsonPath = RESULTS, quick: Quick = False
) -> None:
    """vce-run end-to-end frames/s against the backend's pure inference on the same model and batch."""
    if quick:
        _save("e2e", bench_e2e(16, 4, _workdir(), QUICK), json_path)
    else:
        _save("e2e", bench_e2e(frames, batch, _workdir()), json_path)


@app.command("memory")
def memory_command(
    sizes: Annotated[str, typer.Option(help="comma-separated frame counts")] = "10000,100000",
    json_path: JsonPath = RESULTS,
    quick: Quick = False,
) -> None:
    """Peak memory of vce-run at each frame count (fresh process each)."""
    if quick:
        sizes = "1000,5000"
    _save("memory", bench_memory(_numbers(sizes, "--sizes", int), _workdir()), json_path)


@app.command("memory-child", hidden=True)
def memory_child_command(
    video: Annotated[Path, typer.Argument()],
    bundle: Annotated[Path, typer.Argument()],
    out: Annotated[Path, typer.Argument()],
) -> None:
    print(json.dumps(memory_child(video, bundle, out)))


@app.command("ort-vs-torch")
def ort_vs_torch_command(
    batch: Batch = 8,
    iters: Annotated[int, typer.Option(min=1, help="timed batches")] = 4,
    json_path: JsonPath = RESULTS,
    quick: Quick = False,
) -> None:
    """ONNX Runtime CPU against PyTorch eager on the full ViT-B/16."""
    if quick:
        _save("ort_vs_torch", bench_ort_vs_torch(2, 2, _workdir(), QUICK), json_path)
    else:
        _save("ort_vs_torch", bench_ort_vs_torch(batch, iters, _workdir()), json_path)


@app.command("stride")
def stride_command(
    videos: Annotated[int, typer.Option(min=1, help="synthetic label timelines")] = 8,
    frames: Annotated[int, typer.Option(min=1, help="frames per timeline")] = 3000,
    strides: Annotated[str, typer.Option(help="comma-separated strides K")] = "2,5,10",
    noise: Annotated[str, typer.Option(help="comma-separated noise levels")] = "0.5,1.0",
    json_path: JsonPath = RESULTS,
    quick: Quick = False,
) -> None:
    """Event agreement of --stride K (hold and linear fill) with stride 1, per noise level."""
    if quick:
        videos, frames = 2, 1000
    ks = _numbers(strides, "--strides", int)
    levels = zip(noise.split(","), _numbers(noise, "--noise", float), strict=True)
    result = {f"noise{text}": bench_stride(videos, frames, ks, level) for text, level in levels}
    _save("stride", result, json_path)


@app.command("all")
def all_command(
    frames: Frames = 96, batch: Batch = 8, json_path: JsonPath = RESULTS, quick: Quick = False
) -> None:
    """Every benchmark above."""
    stride_command(json_path=json_path, quick=quick)
    memory_command(json_path=json_path, quick=quick)
    ort_vs_torch_command(batch=batch, json_path=json_path, quick=quick)
    e2e_command(frames=frames, batch=batch, json_path=json_path, quick=quick)


def main() -> None:
    run_cli(app, "bench_runtime")


if __name__ == "__main__":
    main()
