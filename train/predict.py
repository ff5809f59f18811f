"""``vce-train predict``: per-frame probabilities of a checkpoint on frame folders (PyTorch, no export).

Writes the toolkit's per-frame CSV (``vce.runtime.formats.framescsv``: video, frame, 17 probabilities),
the same format as ``val_probs.csv`` and ``vce-run``'s ``frames.csv``, with its provenance sidecar
(the checkpoint's weights sha256, ``vce.runtime.formats.provenance``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from vce.runtime.errors import VCEError
from vce.runtime.formats.framescsv import VideoFrames, write_frames_csv
from vce.runtime.formats.provenance import make_record, write_sidecar
from vce.runtime.labels import NUM_LABELS
from vce.runtime.preprocess import normalise
from vce.train.data import find_videos, load_crop
from vce.train.progress import LiveBar


@torch.no_grad()
def predict_dataset(
    checkpoint: str | os.PathLike[str],
    data: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    batch_size: int = 64,
    stride: int = 1,
    device: str | None = None,
    videos: Sequence[str] | None = None,
    progress: bool = True,
) -> int:
    """Predict every (``stride``-th) frame of every video under ``data``; returns the frame count."""
    from vce.train.checkpoint import load_model, weights_sha256

    if batch_size < 1 or stride < 1:
        raise VCEError("--batch-size and --stride must be >= 1")
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = load_model(checkpoint, map_location=dev).eval()
    spec = model.config.preprocess_spec
    sources = [s.strided(stride) for s in find_videos(data, labels=False, videos=videos)]
    total = sum(len(s.frames) for s in sources)
    bar = LiveBar("predicting", total) if progress else None
    results: list[VideoFrames] = []
    try:
        with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
            for src in sources:
                probs = np.zeros((len(src.frames), NUM_LABELS), np.float64)
                for a in range(0, len(src.frames), batch_size):
                    chunk = src.frames[a : a + batch_size]
                    crops = np.stack(list(pool.map(lambda f: load_crop(f.path, spec), chunk)))
                    x = torch.from_numpy(normalise(crops, spec)).to(dev)
                    probs[a : a + len(chunk)] = torch.sigmoid(model(x).float()).cpu().numpy()
                    if bar is not None:
                        bar.advance(len(chunk))
                results.append(VideoFrames(src.video, src.frame_numbers, probs))
    finally:
        if bar is not None:
            bar.stop()
    write_frames_csv(Path(out), sorted(results, key=lambda v: v.video))
    model_info = {"weights_sha256": weights_sha256(checkpoint), "name": model.config.name}
    write_sidecar(out, make_record(out, made_by="vce-train predict", model=model_info))
    return total
