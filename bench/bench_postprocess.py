"""Post-processing speed and live delay: offline ``postprocess()``, the online processor per push,
and the emission delay of events, on synthetic capsule-like probabilities (bench_calibration's).

- offline: CPU seconds of ``postprocess()`` on one video (100,000 frames), tuple and label
  grouping, next to the step-by-step functions it replaced (``group_events(smooth(binarize()))``),
  measured in the same process (the ratio is the figure; the lead re-measures on a quiet machine);
- online: CPU microseconds per push when frames come one at a time, and frames/s in chunks of 64;
- delay: for every event, the frames that arrived after its last frame before it was emitted
  (frame-by-frame feeding), median and max, against the bound, in frames and in seconds at 2 and 6
  frames/s.

    python bench/bench_postprocess.py [--frames 100000] [--json out.json]
    python bench/bench_postprocess.py --quick     # 5,000 frames: a smoke run
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_calibration import synthetic_video

from vce.runtime.atomic import write_json
from vce.runtime.cliapp import VCETyper
from vce.runtime.errors import run_cli
from vce.runtime.online import OnlinePostprocessor, delay_bound_frames
from vce.runtime.postprocess import (
    PAPER,
    PAPER_THRESHOLDS,
    PostprocessConfig,
    binarize,
    group_events,
    postprocess,
    smooth,
    thresholds_array,
)

app = VCETyper()


def cpu_seconds(fn: Callable[[], object], repeat: int = 5) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.process_time()
        fn()
        best = min(best, time.process_time() - t0)
    return best


def emission_delays(
    probs: np.ndarray, frames: np.ndarray, th: np.ndarray, cfg: PostprocessConfig
) -> list[int]:
    proc = OnlinePostprocessor(th, cfg)
    delays = []
    for i in range(frames.size):
        for ev in proc.push(frames[i : i + 1], probs[i : i + 1]):
            last = int(np.searchsorted(frames, ev["end"], side="right")) - 1
            delays.append(i - last)  # frames that arrived after the event's last frame
    return delays


@app.command("postprocess")
def postprocess_command(
    n_frames: Annotated[
        int, typer.Option("--frames", min=201, help="frames of the synthetic video")
    ] = 100_000,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="also write the figures here as JSON")
    ] = None,
    quick: Annotated[bool, typer.Option("--quick", help="5,000 frames (a smoke run)")] = False,
) -> None:
    """Post-processing speed (offline and online) and the emission delay of live events."""
    if quick:
        n_frames = 5000
    _, probs = synthetic_video(np.random.default_rng(0), n_frames)
    frames = np.arange(n_frames)
    th = thresholds_array(PAPER_THRESHOLDS)
    report: dict[str, object] = {"frames": n_frames}
    for grouping in ("tuple", "label"):
        cfg = PostprocessConfig(PAPER.median, PAPER.min_run, PAPER.max_gap, grouping)  # type: ignore[arg-type]
        new = cpu_seconds(lambda cfg=cfg: postprocess(probs, frames, th, cfg))
        old = cpu_seconds(
            lambda cfg=cfg: group_events(smooth(binarize(probs, th), cfg), frames, cfg.grouping)
        )
        report[f"offline_{grouping}"] = {
            "postprocess_cpu_s": round(new, 4),
            "step_functions_cpu_s": round(old, 4),
            "ratio": round(new / old, 3),
            "events": len(postprocess(probs, frames, th, cfg)),
        }
    n_online = min(n_frames, 20_000)

    def one_at_a_time() -> None:
        proc = OnlinePostprocessor(th, PAPER)
        for i in range(n_online):
            proc.push(frames[i : i + 1], probs[i : i + 1])
        proc.finish()

    def chunks_of_64() -> None:
        proc = OnlinePostprocessor(th, PAPER)
        for i in range(0, n_frames, 64):
            proc.push(frames[i : i + 64], probs[i : i + 64])
        proc.finish()

    report["online_us_per_frame_pushed_alone"] = round(cpu_seconds(one_at_a_time, 1) / n_online * 1e6, 1)
    report["online_frames_per_s_chunks_of_64"] = round(n_frames / cpu_seconds(chunks_of_64, 3))
    delays = emission_delays(probs[:n_online], frames[:n_online], th, PAPER)
    bound = delay_bound_frames(PAPER)
    report["delay_frames"] = {
        "events": len(delays),
        "median": float(np.median(delays)),
        "max": int(max(delays)),
        "bound": bound,
        "seconds_at_2fps": {
            "median": float(np.median(delays)) / 2,
            "max": max(delays) / 2,
            "bound": bound / 2,
        },
        "seconds_at_6fps": {
            "median": round(float(np.median(delays)) / 6, 3),
            "max": round(max(delays) / 6, 3),
            "bound": round(bound / 6, 3),
        },
    }
    assert max(delays) <= bound, "an event came later than the stated bound"
    print(json.dumps(report, indent=1))
    if json_path:
        write_json(json_path, report)


def main() -> None:
    run_cli(app, "bench_postprocess")


if __name__ == "__main__":
    main()
