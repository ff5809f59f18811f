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

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np

from vce.calibration.int8 import MODES, Tolerance, quantize_bundle
from vce.runtime.atomic import write_json
from vce.runtime.backends import create_runner
from vce.runtime.bundle import Bundle, Manifest
from vce.runtime.postprocess import PAPER_THRESHOLDS


def images_per_s(path: Path, batch: int, n: int, threads: int) -> float:
    x = np.random.default_rng(0).standard_normal((batch, 3, 224, 224)).astype(np.float32)
    with create_runner("ort-cpu", path, threads=threads) as r:
        r.infer(x)
        t0 = time.perf_counter()
        for _ in range(n // batch):
            r.infer(x)
        return (n // batch) * batch / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=96)
    ap.add_argument("--out", type=Path, default=Path("/tmp/vce_bench_int8"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--timed-images", type=int, default=48)
    ap.add_argument("--model", default="biomedclip", help="model config (biomedclip: full size; tiny)")
    ap.add_argument("--json", type=Path, help="also write the figures here as JSON")
    ap.add_argument(
        "--quick", action="store_true", help="tiny model, 16 frames, 8 timed images (a smoke run)"
    )
    args = ap.parse_args()
    if args.quick:
        args.model, args.frames, args.timed_images = "tiny", 16, 8
    import torch

    from vce.export.onnx_export import export_onnx
    from vce.train.factory import create_model
    from vce.train.synth import generate_video

    torch.manual_seed(0)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    bundle_dir = out / ("bundle" if args.model == "biomedclip" else f"bundle_{args.model}")
    b = Bundle.create(bundle_dir, Manifest(thresholds=dict(PAPER_THRESHOLDS)))
    if not (bundle_dir / "model.onnx").is_file():  # reuse an earlier export
        t0 = time.perf_counter()
        model = create_model(args.model).eval()
        export_onnx(model, bundle_dir / "model.onnx", check=False)
        print(f"export {time.perf_counter() - t0:.1f} s")
    b.add_file("model.onnx", "fp32")
    b.save()
    frames_dir = out / "frames"
    frames_dir.mkdir(exist_ok=True)
    frames, _ = generate_video(np.random.default_rng(0), args.frames, size=256)
    for i, f in enumerate(frames):
        cv2.imwrite(str(frames_dir / f"frame_{i:06d}.png"), f[..., ::-1])
    t0 = time.perf_counter()
    reports = quantize_bundle(
        bundle_dir,
        frames_dir=frames_dir,
        modes=MODES,
        count=args.frames,
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
        speed = images_per_s(path, 8, args.timed_images, args.threads)
        graphs[role] = {"mb": round(mb, 1), "images_per_s": round(speed, 3)}
        print(f"{role:13s} {mb:7.1f} MB  {speed:6.2f} images/s (batch 8, {args.threads} threads)")
    if args.json:
        report = {
            "model": args.model,
            "frames": args.frames,
            "batch": 8,
            "threads": args.threads,
            "timed_images": args.timed_images,
            "quantize": [r.to_dict() for r in reports],
            "graphs": graphs,
        }
        write_json(args.json, report)


if __name__ == "__main__":
    main()
