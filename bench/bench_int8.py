"""INT8 on the full ViT-B/16 (differential attention, random weights): ONNX Runtime CPU speed and drift.

Builds the BiomedCLIP-size classifier with random weights (vce.train), exports the fp32 ONNX
(vce.export), writes a bundle, generates a synthetic capsule video (vce.train.synth) as a frame
folder, runs ``vce-calibrate int8`` (static QDQ and dynamic; half the frames calibrate, the other
half, in order, check drift and events after the paper's post-processing with the paper's
thresholds), then times fp32 / static / dynamic graphs at batch 8.

    python bench/bench_int8.py [--frames 96] [--out /tmp/vce_bench_int8] [--threads 2] [--json out.json]
    python bench/bench_int8.py --quick --json out.json   # tiny model, 16 frames: a smoke run
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import cv2
import numpy as np
import typer

from vce.calibration.int8 import MODES, Tolerance, quantize_bundle
from vce.runtime.atomic import write_json
from vce.runtime.backends import create_runner
from vce.runtime.bundle import Bundle, Manifest
from vce.runtime.cliapp import VCETyper
from vce.runtime.errors import run_cli
from vce.runtime.postprocess import PAPER_THRESHOLDS

app = VCETyper()


def images_per_s(path: Path, batch: int, n: int, threads: int) -> float:
    x = np.random.default_rng(0).standard_normal((batch, 3, 224, 224)).astype(np.float32)
    with create_runner("ort-cpu", path, threads=threads) as r:
        r.infer(x)
        t0 = time.perf_counter()
        for _ in range(n // batch):
            r.infer(x)
        return (n // batch) * batch / (time.perf_counter() - t0)


@app.command("int8")
def int8_command(
    frames: Annotated[int, typer.Option(min=2, help="frames of the synthetic video")] = 96,
    out: Annotated[Path, typer.Option(help="work folder (the bundle is reused)")] = Path(
        "/tmp/vce_bench_int8"
    ),
    threads: Annotated[int, typer.Option(min=1, help="ONNX Runtime threads")] = 2,
    timed_images: Annotated[int, typer.Option(min=8, help="images timed per graph")] = 48,
    model: Annotated[str, typer.Option(help="model config (biomedclip: full size; tiny)")] = "biomedclip",
    json_path: Annotated[
        Path | None, typer.Option("--json", help="also write the figures here as JSON")
    ] = None,
    quick: Annotated[
        bool, typer.Option("--quick", help="tiny model, 16 frames, 8 timed images (a smoke run)")
    ] = False,
) -> None:
    """INT8 (static and dynamic) against fp32 on ONNX Runtime CPU: speed and drift."""
    if quick:
        model, frames, timed_images = "tiny", 16, 8
    import torch

    from vce.export.onnx_export import export_onnx
    from vce.train.factory import create_model
    from vce.train.synth import generate_video

    torch.manual_seed(0)
    out.mkdir(parents=True, exist_ok=True)
    bundle_dir = out / ("bundle" if model == "biomedclip" else f"bundle_{model}")
    b = Bundle.create(bundle_dir, Manifest(thresholds=dict(PAPER_THRESHOLDS)))
    if not (bundle_dir / "model.onnx").is_file():  # reuse an earlier export
        t0 = time.perf_counter()
        net = create_model(model).eval()
        export_onnx(net, bundle_dir / "model.onnx", check=False)
        print(f"export {time.perf_counter() - t0:.1f} s")
    b.add_file("model.onnx", "fp32")
    b.save()
    frames_dir = out / "frames"
    frames_dir.mkdir(exist_ok=True)
    images, _ = generate_video(np.random.default_rng(0), frames, size=256)
    for i, f in enumerate(images):
        cv2.imwrite(str(frames_dir / f"frame_{i:06d}.png"), f[..., ::-1])
    t0 = time.perf_counter()
    reports = quantize_bundle(
        bundle_dir,
        frames_dir=frames_dir,
        modes=MODES,
        count=frames,
        tolerance=Tolerance(),
        force=True,
        log=print,
    )
    print(f"quantize + drift {time.perf_counter() - t0:.1f} s")
    for r in reports:
        print(json.dumps(r.to_dict(), indent=1))
    graphs = {}
    for role in ("fp32", "int8", "int8-dynamic"):
        path = Bundle.load(bundle_dir, verify=False).graph(role)
        mb = path.stat().st_size / 2**20
        speed = images_per_s(path, 8, timed_images, threads)
        graphs[role] = {"mb": round(mb, 1), "images_per_s": round(speed, 3)}
        print(f"{role:13s} {mb:7.1f} MB  {speed:6.2f} images/s (batch 8, {threads} threads)")
    if json_path:
        report = {
            "model": model,
            "frames": frames,
            "batch": 8,
            "threads": threads,
            "timed_images": timed_images,
            "quantize": [r.to_dict() for r in reports],
            "graphs": graphs,
        }
        write_json(json_path, report)


def main() -> None:
    run_cli(app, "bench_int8")


if __name__ == "__main__":
    main()
