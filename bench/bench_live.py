"""Live mode (``vce-run --follow``): the highest source rate sustained without skipping, and the
event delays at 2 and 6 frames/s, with the demo's small model on this machine.

    python bench/bench_live.py --json /tmp/live.json          # the small model (demo config), ~5 min
    python bench/bench_live.py --quick --json /tmp/live.json  # the tiny model, short runs: a smoke run

The model: the demo's ``small`` configuration with random weights (``vce.export`` writes the
bundle), on the demo's 224-px synthetic frames. A random model's probabilities hardly change from
frame to frame, so the thresholds are each label's median probability on the video (from an
offline run): labels switch often and every trial has events to time.

A recorder process (its real rate, from the files' modification times, is reported beside the asked one) (``vce.train.recorder.record_folder``: half-written files, then the end marker)
writes the frames at a given rate while ``follow`` (default settings: batch 8, --max-lag 32) runs
here. *Sustained* means no frame was skipped to keep up. The rate ladder doubles from 12 frames/s
until a rate skips, then bisects twice between the last rate kept up with and the first that was
not. Also measured: frames/s with every frame already there (the loop's throughput) with
preprocessing in the main thread and in the reader thread (224-px frames, and 448-px ones), and CPU seconds per frame with ONNX
Runtime's threads spinning between runs and not, and whether the 2 and 6 frames/s runs' outputs are
byte for byte those of ``vce-run`` offline on the same frames. Delays come from events.jsonl: ``delay_frames``
(frames that arrived after an event's last frame when it was written) and ``delay_s``.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from vce.runtime.atomic import write_text
from vce.runtime.cliapp import VCETyper
from vce.runtime.errors import run_cli

ROOT = Path(__file__).resolve().parents[1]
app = VCETyper()

RECORD = (
    "import sys\n"
    "from vce.train.recorder import record_folder\n"
    "record_folder(sys.argv[1], sys.argv[2], float(sys.argv[3]))\n"
)


def _bundle(work: Path, model: str) -> Path:
    from vce.export.bundle_io import write_bundle
    from vce.train.factory import resolve_model

    root = work / f"bundle_{model}"
    net, info = resolve_model(model, "paper")
    write_bundle(net, root, model_info=info)
    return root


def _video(work: Path, frames: int, size: int = 224) -> Path:
    from vce.train.synth import write_dataset

    write_dataset(work / f"synth{size}", 1, frames, seed=11, size=size)  # 224: the demo's frame size
    return work / f"synth{size}" / "frames" / "synth_000"


def _subset(video: Path, n: int, dest: Path) -> Path:
    from vce.runtime.formats.framefolder import list_frames

    dest.mkdir(parents=True)
    for f in list_frames(video)[:n]:
        shutil.copy(f.path, dest / f.path.name)
    return dest


def _median_thresholds(video: Path, bundle: Path, work: Path) -> tuple[Path, float]:
    """Each label's median probability on the video (offline run), and the offline frames/s."""
    from vce.runtime.formats.framescsv import read_frames_csv
    from vce.runtime.labels import LABELS
    from vce.runtime.run import RunOptions, run

    out = work / "offline"
    result = run([video], bundle, out, RunOptions(plots=False))
    probs = read_frames_csv(out / "frames.csv")[video.name].values
    path = work / "thresholds.json"
    path.write_text(json.dumps({k: float(np.median(probs[:, i])) for i, k in enumerate(LABELS)}))
    return path, result.fps


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def trial(
    video: Path,
    bundle: Path,
    thresholds: Path,
    work: Path,
    rate: float,
    frames: int,
    compare: bool = False,
    **live: Any,
) -> dict[str, Any]:
    """Record ``frames`` frames at ``rate`` frames/s (``rate`` 0: all there before the start) and follow;
    ``compare``: also run vce-run offline on the same frames and compare the outputs byte for byte."""
    from vce.runtime.live.follow import FollowOptions, follow
    from vce.runtime.run import PostOptions, RunOptions

    tag = f"r{rate:g}_{frames}_{'_'.join(f'{k}{v}' for k, v in live.items())}_{time.monotonic_ns()}"
    src = _subset(video, frames, work / tag / "src" / "synth_000")
    dest, out = work / tag / "rec" / "synth_000", work / tag / "out"
    recorder = None
    if rate:
        recorder = subprocess.Popen([sys.executable, "-c", RECORD, str(src), str(dest), str(rate)])
    else:
        from vce.train.recorder import record_folder

        record_folder(src, dest, 1e6, half_written=False)
    opts = RunOptions(fps=rate or None, plots=False, post=PostOptions(thresholds=str(thresholds)))
    cpu0, t0 = _cpu(), time.perf_counter()
    result = follow(
        str(dest), bundle, out, opts, FollowOptions(idle_timeout=60, handle_signals=False, **live)
    )
    wall, cpu = time.perf_counter() - t0, _cpu() - cpu0
    if recorder is not None:
        recorder.wait(timeout=60)
    from vce.runtime.formats.framefolder import list_frames

    mtimes = sorted(f.path.stat().st_mtime for f in list_frames(dest))
    span = mtimes[-1] - mtimes[0] if len(mtimes) > 1 else 0.0
    identical = None
    if compare:
        from vce.runtime.run import run

        run([src], bundle, work / tag / "offline", opts)
        identical = all(
            (out / name).read_bytes() == (work / tag / "offline" / name).read_bytes()
            for name in ("events.json", "frames.csv", "frames.provenance.json")
        )
    lines = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    timed = [e for e in lines[:-1] if e.get("delay_s") is not None]  # the last one ends with the stream
    delay_f = [e["delay_frames"] for e in timed]
    delay_s = [e["delay_s"] for e in timed]
    post_f = [e["post_frames"] for e in timed]
    row = {
        "rate": rate,
        "recorded_rate": round((len(mtimes) - 1) / span, 2) if rate and span > 0 else None,
        "frames": frames,
        "skipped": result.live["skipped"],
        "inferred": result.inferred,
        "events": len(lines),
        "loop_seconds": round(result.seconds, 3),
        "loop_fps": round(frames / result.seconds, 2) if result.seconds else None,
        "wall_seconds": round(wall, 3),
        "cpu_seconds": round(cpu, 3),
        "cpu_ms_per_frame": round(1000 * cpu / frames, 3),
        "delay_frames": _dist(delay_f),
        "delay_s": _dist(delay_s),
        "post_frames_max": max(post_f) if post_f else None,
        "delay_bound_frames": result.live["delay_bound"]["frames"],
        "identical_to_offline": identical,
        **{k: v for k, v in live.items()},
    }
    shutil.rmtree(work / tag, ignore_errors=True)
    print(json.dumps(row), flush=True)
    return row


def _dist(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"median": None, "p90": None, "max": None}
    a = np.asarray(values, dtype=np.float64)
    return {
        "median": round(float(np.median(a)), 3),
        "p90": round(float(np.percentile(a, 90)), 3),
        "max": round(float(a.max()), 3),
    }


@app.command("live")
def live_command(
    json_path: Annotated[Path, typer.Option("--json", help="write the result here")] = ROOT
    / "bench"
    / "results"
    / "live.json",
    quick: Annotated[
        bool, typer.Option("--quick", help="the tiny model and short runs (a smoke run)")
    ] = False,
) -> None:
    """Live mode (vce-run --follow): the highest rate kept up with, event delays, CPU per frame."""
    model = "tiny" if quick else "small"
    with tempfile.TemporaryDirectory(prefix="vce_bench_live_") as tmp:
        work = Path(tmp)
        bundle = _bundle(work, model)
        video = _video(work, 160 if quick else 1200)
        thresholds, offline_fps = _median_thresholds(video, bundle, work)
        n_max = 160 if quick else 1200

        def run(rate: float, frames: int, **live: Any) -> dict[str, Any]:
            return trial(video, bundle, thresholds, work, rate, min(frames, n_max), **live)

        # the loop's throughput with every frame waiting: preprocessing in the main / reader thread
        n_all = 160 if quick else 600
        throughput = {p: run(0, n_all, max_lag=0, prepare=p) for p in ("main", "reader")}
        # the same with larger frames (a capsule camera's 448 px: resizing costs more than the model)
        big = _video(work, 96 if quick else 300, size=448)
        throughput_448 = {
            p: trial(big, bundle, thresholds, work, 0, 96 if quick else 300, max_lag=0, prepare=p)
            for p in ("main", "reader")
        }
        # the delay distribution at 2 and 6 frames/s
        delays = {
            "2": run(2.0, 20 if quick else 80, compare=True),
            "6": run(6.0, 36 if quick else 150, compare=True),
        }
        # CPU per frame with and without spinning, at a rate the model keeps up with
        spin_rate = 12.0 if quick else 24.0
        spin = {str(s): run(spin_rate, int(spin_rate * (2 if quick else 5)), spin=s) for s in (False, True)}
        # the rate ladder
        ladder: list[dict[str, Any]] = []
        good, bad = None, None
        rate = 12.0
        seconds = 2.0 if quick else 5.0
        while rate <= (48 if quick else 1536):
            row = run(rate, max(48, int(rate * seconds)))
            ladder.append(row)
            if row["skipped"]:
                bad = rate
                break
            good, rate = rate, rate * 2
        if good is not None and bad is not None:
            for _ in range(2):
                mid = round((good + bad) / 2, 1)
                row = run(mid, max(48, int(mid * seconds)))
                ladder.append(row)
                good, bad = (mid, bad) if not row["skipped"] else (good, mid)
    report = {
        "live": {
            "model": f"{model} (random weights, 224-px demo frames), batch 8, --max-lag 32",
            "machine": {
                "cpu": platform.processor() or platform.machine(),
                "cores": os.cpu_count(),
                "loadavg": [round(x, 2) for x in os.getloadavg()],
            },
            "offline_fps": round(offline_fps, 2),
            "max_rate_no_skip": good,
            "first_rate_skipping": bad,
            "ladder": ladder,
            "throughput": throughput,
            "throughput_448px": throughput_448,
            "delay": delays,
            "spin": spin,
        }
    }
    json_path.parent.mkdir(parents=True, exist_ok=True)
    write_text(json_path, json.dumps(report, indent=1))
    print(json.dumps({k: report["live"][k] for k in ("max_rate_no_skip", "first_rate_skipping")}))


def main() -> None:
    run_cli(app, "bench_live")


if __name__ == "__main__":
    main()
