"""``vce-run --follow`` end to end: a recorder writes a demo-like synthetic video at 20 frames/s while
vce-run follows it (folder, stdin); the final outputs equal the offline run's byte for byte and every
event comes within the delay bound; resume after a kill, Ctrl-C, keeping up, batching, idling, bad input."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from runtime_testdata import grow_in_thirds, make_bundle, write_video
from trust_testdata import vce_run

import vce.runtime.live.follow as follow_module
import vce.runtime.live.status as livestatus
from vce.runtime.backends.base import create_runner
from vce.runtime.bundle import Bundle
from vce.runtime.cli import EXIT_PROBLEMS
from vce.runtime.formats.eventjson import read_events_json
from vce.runtime.formats.framefolder import list_frames
from vce.runtime.formats.framescsv import VideoFrames, read_frames_csv, write_frames_csv
from vce.runtime.labels import LABELS
from vce.runtime.live.sources import write_frame
from vce.runtime.online import delay_bound_frames
from vce.runtime.pipeline import fill_probs
from vce.runtime.postprocess import PostprocessConfig, postprocess
from vce.runtime.preprocess import preprocess
from vce.runtime.run import PostOptions, RunOptions
from vce.runtime.sources import read_image
from vce.train.recorder import record_folder, record_stream
from vce.train.synth import write_dataset

FPS = 20.0
FRAMES = 120
OUTPUTS = ("events.json", "frames.csv", "frames.provenance.json", "synth_000_timeline.png")
VCE_RUN = str(Path(sys.executable).parent / "vce-run")


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A held-out demo-like video: the synthetic generator's first video, as a frame folder."""
    root = tmp_path_factory.mktemp("synth")
    write_dataset(root, 1, FRAMES, seed=3, size=64)
    return root / "frames" / "synth_000"


@pytest.fixture(scope="module")
def thresholds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Thresholds under which the tiny colour model gives the synthetic video a dozen events."""
    t = dict.fromkeys(LABELS, 0.99)
    t.update({"mouth": 0.2, "stomach": 0.05, "active bleeding": 0.05})
    path = tmp_path_factory.mktemp("t") / "t.json"
    path.write_text(json.dumps(t))
    return path


@pytest.fixture(scope="module")
def offline(
    tmp_path_factory: pytest.TempPathFactory, video: Path, bundle_dir: Path, thresholds: Path
) -> Path:
    """The offline run on the whole video (the reference the live runs must equal)."""
    out = tmp_path_factory.mktemp("offline") / "out"
    proc = subprocess.run(
        [VCE_RUN, str(video), "-b", str(bundle_dir), "-o", str(out), "--fps", str(FPS), "--thresholds", str(thresholds), "-q"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert len(read_events_json(out / "events.json")["synth_000"]) >= 8
    return out


def assert_same_outputs(live: Path, offline: Path, names: tuple[str, ...] = OUTPUTS) -> None:
    for name in names:
        assert (live / name).read_bytes() == (offline / name).read_bytes(), name


def logged_events(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]


def start_recorder(video: Path, dest: Path, after: Path | None = None, **kw: Any) -> threading.Thread:
    """The recorder in a thread; with ``after``, it starts once that file exists (vce-run is up)."""

    def run() -> None:
        deadline = time.monotonic() + 60
        while after is not None and not after.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        record_folder(video, dest, FPS, **kw)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


# --- end to end ------------------------------------------------------------------------------------


def test_follow_a_folder_being_written_equals_offline_and_events_come_within_the_bound(
    tmp_path: Path, video: Path, bundle_dir: Path, thresholds: Path, offline: Path, capsys, monkeypatch
) -> None:
    live_dir, out = tmp_path / "rec" / "synth_000", tmp_path / "live"
    recorder = start_recorder(video, live_dir, after=out / "status.json", pause_at=60, pause=0.4)
    snapshots: list[dict[str, Any]] = []
    stop = threading.Event()

    def viewer() -> None:  # a viewer polling status.json: always a whole snapshot, counts never go back
        while not stop.is_set():
            with contextlib.suppress(FileNotFoundError):
                snapshots.append(json.loads((out / "status.json").read_text()))
            time.sleep(0.05)

    poller = threading.Thread(target=viewer, daemon=True)
    poller.start()
    code, stdout, err = vce_run(
        capsys, monkeypatch, "--follow", live_dir, "-b", bundle_dir, "-o", out, "--fps", FPS,
        "--thresholds", thresholds, "--idle-timeout", 10,
    )  # fmt: skip
    stop.set()
    recorder.join()
    poller.join()
    assert code == 0, err
    bound = delay_bound_frames(PostprocessConfig())
    assert f"delay bound: an event is final at most {bound} frames after its last frame = 0.55 s at 20" in err
    assert_same_outputs(out, offline)
    # events.jsonl: every final event once, as it became final, within the bound
    lines = logged_events(out)
    final = read_events_json(out / "events.json")["synth_000"]
    assert [{k: e[k] for k in ("start", "end", "label")} for e in lines] == final  # tuple: in order
    assert all(e["post_frames"] <= bound for e in lines)
    assert max(e["delay_frames"] for e in lines[:-1]) <= bound + 8  # + the backlog of at most a batch
    assert max(e["delay_frames"] for e in lines[:-1]) >= 5  # a real wait (median 7 alone needs 3)
    assert all(e["delay_s"] is not None and e["delay_s"] >= 0 for e in lines)
    assert stdout.count("event synth_000 ") == len(final)
    # status.json: a viewer saw it grow; the last one says finished
    seen = [s["frames"]["seen"] for s in snapshots if s["state"] == "running"]
    assert len(seen) > 10 and seen == sorted(seen)
    status = json.loads((out / "status.json").read_text())
    assert status["state"] == "finished" and status["ended_by"] == "marker"
    assert status["frames"] == {
        "seen": FRAMES,
        "inferred": FRAMES,
        "skipped": 0,
        "corrupt": 0,
        "settled": FRAMES,
    }
    assert status["delay_bound"] == {"frames": bound, "seconds": 0.55}
    record = json.loads((out / "run.json").read_text())
    assert record["status"] == "complete" and record["live"]["skipped"] == 0
    assert record["live"]["delay"]["frames"]["max"] == max(e["delay_frames"] for e in lines if e["delay_s"])
    assert {"events.jsonl", "status.json", "events.json", "frames.csv"} <= set(record["files"])
    assert not (out / ".partial").exists()


def piped(tmp_path: Path, args: list[str], write: Callable[[Any], None]) -> tuple[int, str]:
    """``recorder | vce-run --follow - ARGS -q``: (exit code, stderr)."""
    with open(tmp_path / "stderr", "wb") as err:
        proc = subprocess.Popen(
            [VCE_RUN, "--follow", "-", *args, "-q"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
        assert proc.stdin is not None
        write(proc.stdin)
        proc.stdin.close()
        code = proc.wait(timeout=60)
    return code, (tmp_path / "stderr").read_text()


def test_follow_stdin_equals_offline(
    tmp_path: Path, video: Path, bundle_dir: Path, thresholds: Path, offline: Path
) -> None:
    out = tmp_path / "live"
    args = ["--fps", str(FPS), "--thresholds", str(thresholds), "--video-id", "synth_000"]
    code, err = piped(
        tmp_path, [*args, "-b", str(bundle_dir), "-o", str(out)], lambda w: record_stream(video, w, FPS)
    )
    assert code == 0, err
    assert_same_outputs(out, offline)
    assert json.loads((out / "status.json").read_text())["ended_by"] == "marker"


# --- resume, Ctrl-C ------------------------------------------------------------------------------


def status_of(out: Path) -> dict[str, Any]:
    try:
        return json.loads((out / "status.json").read_text())
    except FileNotFoundError:
        return {}


def wait_for(predicate: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_a_killed_live_run_resumes_with_the_same_command_and_ends_equal(
    tmp_path: Path, video: Path, bundle_dir: Path, thresholds: Path, offline: Path
) -> None:
    live_dir, out = tmp_path / "rec" / "synth_000", tmp_path / "live"
    command = [VCE_RUN, "--follow", str(live_dir), "-b", str(bundle_dir), "-o", str(out), "--fps", str(FPS),
               "--thresholds", str(thresholds), "--idle-timeout", "10", "--max-lag", "0", "-q"]  # fmt: skip
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    recorder = start_recorder(video, live_dir, after=out / "status.json")
    wait_for(lambda: (out / "events.jsonl").is_file() and len(logged_events(out)) >= 3)
    first.kill()  # SIGKILL: no chance to clean up
    first.wait()
    before = logged_events(out)
    assert json.loads((out / "run.json").read_text())["status"] == "running"
    assert list((out / ".partial").glob("*.live"))
    second = subprocess.run(command, capture_output=True, text=True, timeout=60)
    recorder.join()
    assert second.returncode == 0, second.stderr
    assert_same_outputs(out, offline)
    after = logged_events(out)
    assert after[: len(before)] == before  # nothing written before is changed or written again
    keys = [(e["start"], e["end"], tuple(e["label"])) for e in after]
    assert len(keys) == len(set(keys))
    final = read_events_json(out / "events.json")["synth_000"]
    assert sorted(keys) == sorted((e["start"], e["end"], tuple(e["label"])) for e in final)
    record = json.loads((out / "run.json").read_text())
    assert record["videos"][0]["resumed_frames"] > 0 and not (out / ".partial").exists()


def test_ctrl_c_ends_the_source_and_writes_the_outputs(
    tmp_path: Path, video: Path, bundle_dir: Path, thresholds: Path
) -> None:
    live_dir, out = tmp_path / "rec" / "synth_000", tmp_path / "live"
    proc = subprocess.Popen(
        [VCE_RUN, "--follow", str(live_dir), "-b", str(bundle_dir), "-o", str(out), "--fps", str(FPS),
         "--thresholds", str(thresholds), "--no-plots", "--idle-timeout", "30"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    recorder = start_recorder(video, live_dir, after=out / "status.json", end_marker=False)
    wait_for(lambda: (out / "events.jsonl").is_file() and len(logged_events(out)) >= 3)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=30)
    recorder.join()
    assert proc.returncode == 0, stderr
    assert "stopping: finishing the frames that arrived" in stderr and "Traceback" not in stderr
    record = json.loads((out / "run.json").read_text())
    assert record["status"] == "complete" and record["live"]["ended_by"] == "stopped"
    probs = read_frames_csv(out / "frames.csv")["synth_000"]
    assert 3 < probs.frames.size < FRAMES
    t = json.loads(thresholds.read_text())
    events = read_events_json(out / "events.json")["synth_000"]
    assert events == postprocess(probs.values, probs.frames, t)  # what --from-probs gives
    logged = [{k: e[k] for k in ("start", "end", "label")} for e in logged_events(out)]
    assert logged == events


# --- keeping up, batching, stride, idling ---------------------------------------------------------


class _Slow:
    """The real runner, made slower by ``delay`` seconds per batch (a slower model); records batch sizes."""

    def __init__(self, runner: Any, delay: float, sizes: list[int]) -> None:
        self.runner, self.delay, self.sizes = runner, delay, sizes

    def __enter__(self) -> _Slow:
        self.runner.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.runner.__exit__(*exc)

    def infer(self, images: np.ndarray) -> dict[str, np.ndarray]:
        self.sizes.append(images.shape[0])
        time.sleep(self.delay)
        return self.runner.infer(images)


def slow_runner(monkeypatch: pytest.MonkeyPatch, delay: float) -> list[int]:
    sizes: list[int] = []
    real = follow_module.open_runner
    monkeypatch.setattr(follow_module, "open_runner", lambda *a, **k: _Slow(real(*a, **k), delay, sizes))
    return sizes


def test_when_inference_is_slower_newest_frames_are_inferred_and_older_ones_skipped(
    tmp_path: Path, video: Path, bundle_dir: Path, thresholds: Path, offline: Path, monkeypatch
) -> None:
    live_dir, out = tmp_path / "rec" / "synth_000", tmp_path / "live"
    sizes = slow_runner(monkeypatch, 0.2)  # 5 batches of 2 per second against 20 frames/s
    recorder = start_recorder(video, live_dir)
    opts = RunOptions(batch=2, fps=FPS, post=PostOptions(thresholds=str(thresholds)))
    result = follow_module.follow(
        str(live_dir),
        bundle_dir,
        out,
        opts,
        follow_module.FollowOptions(max_lag=4, idle_timeout=10, handle_signals=False),
    )
    recorder.join()
    skipped = result.live["skipped"]
    assert skipped > FRAMES / 4 and max(sizes) == 2
    status = json.loads((out / "status.json").read_text())
    assert status["frames"]["skipped"] == skipped and status["frames"]["inferred"] == FRAMES - skipped
    ranges = result.live["skipped_frames"]
    assert sum(b - a + 1 for a, b in ranges) == skipped
    assert json.loads((out / "run.json").read_text())["live"]["skipped_frames"] == ranges
    # frames.csv = the model's probabilities of the inferred frames (computed here as the offline
    # pipeline does: read_image, preprocess, the runner), the skipped ones filled (--fill linear)
    files = list_frames(video)
    mask = np.ones(FRAMES, bool)
    for a, b in ranges:
        mask[a : b + 1] = False
    assert mask[-1]  # the newest frame is always inferred
    spec = Bundle.load(bundle_dir).manifest.preprocess_spec()
    with create_runner("ort-cpu", bundle_dir / "model.onnx") as runner:
        x = preprocess([read_image(f.path) for f, m in zip(files, mask, strict=True) if m], spec, bgr=True)
        inferred = runner.infer(x)["probs"]
    full = np.zeros((FRAMES, len(LABELS)), np.float32)
    full[mask] = inferred
    values = fill_probs(full, mask, "linear")
    frames = np.array([f.frame for f in files])
    write_frames_csv(tmp_path / "expected.csv", [VideoFrames("synth_000", frames, values)])
    assert (out / "frames.csv").read_bytes() == (tmp_path / "expected.csv").read_bytes()
    t = json.loads(thresholds.read_text())
    assert read_events_json(out / "events.json")["synth_000"] == postprocess(values, frames, t)
    assert any("skipped to keep up" in w for w in result.warnings)


def test_frames_that_wait_are_inferred_in_batches_and_stride_equals_offline(
    tmp_path: Path, video: Path, bundle_dir: Path, thresholds: Path, capsys, monkeypatch
) -> None:
    live_dir = tmp_path / "rec" / "synth_000"
    record_folder(video, live_dir, 1000, half_written=False)  # already there: every frame waits
    sizes = slow_runner(monkeypatch, 0.05)  # the reader gets ahead: frames wait
    args = ["-b", bundle_dir, "--fps", FPS, "--thresholds", thresholds, "--stride", 3, "--batch", 8, "-q"]
    code, _, err = vce_run(
        capsys, monkeypatch, "--follow", live_dir, "-o", tmp_path / "live", "--max-lag", 0, *args
    )
    assert code == 0, err
    assert sizes.count(8) >= 4  # 40 frames to infer (every third and the last) in batches of 8
    code, _, err = vce_run(capsys, monkeypatch, live_dir, "-o", tmp_path / "off", *args)
    assert code == 0, err
    assert_same_outputs(tmp_path / "live", tmp_path / "off")


def test_one_frame_at_a_time_when_idle_and_no_spinning(
    tmp_path: Path, video: Path, bundle_dir: Path, thresholds: Path, monkeypatch
) -> None:
    live_dir, out = tmp_path / "rec" / "synth_000", tmp_path / "live"
    sizes = slow_runner(monkeypatch, 0.0)
    few = tmp_path / "few"
    few.mkdir()
    for f in list_frames(video)[:12]:
        shutil.copy(f.path, few / f.path.name)
    done = threading.Event()
    result: list[Any] = []

    def run() -> None:
        opts = RunOptions(fps=5.0, plots=False, post=PostOptions(thresholds=str(thresholds)))
        result.append(
            follow_module.follow(
                str(live_dir),
                bundle_dir,
                out,
                opts,
                follow_module.FollowOptions(idle_timeout=4, handle_signals=False),
            )
        )
        done.set()

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    record_folder(few, live_dir, 5.0, end_marker=False)  # 5 frames/s: the model is far faster
    wait_for(lambda: status_of(out).get("frames", {}).get("inferred") == 12)
    cpu0, wall0 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
    time.sleep(1.5)  # idle: no frame comes
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    busy = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    assert busy < 0.1 * (time.monotonic() - wall0), busy
    assert done.wait(10) and result[0].live["ended_by"] == "idle"
    assert sizes == [1] * 12


# --- timeline refresh -------------------------------------------------------------------------------


def test_timeline_is_refreshed_while_running(
    tmp_path: Path, video: Path, bundle_dir: Path, thresholds: Path
) -> None:
    live_dir, out = tmp_path / "rec" / "synth_000", tmp_path / "live"
    recorder = start_recorder(video, live_dir)  # 6 s at 20 frames/s
    seen: list[bool] = []
    opts = RunOptions(fps=FPS, post=PostOptions(thresholds=str(thresholds)))
    follow_module.follow(
        str(live_dir), bundle_dir, out, opts,
        follow_module.FollowOptions(timeline_every=2 / 60, idle_timeout=10, handle_signals=False),
        on_event=lambda v, e, d: seen.append((out / "synth_000_timeline.png").is_file()),
    )  # fmt: skip
    recorder.join()
    # the last events are written before the final outputs: the file there then is a refreshed one
    assert seen[-1] is True


# --- bad input --------------------------------------------------------------------------------------


def one_error(err: str) -> str:
    lines = [line for line in err.splitlines() if "error" in line.lower()]
    assert len(lines) == 1 and lines[0].startswith("vce-run: error:") and "Traceback" not in err, err
    return lines[0]


def test_a_source_that_never_appears(tmp_path: Path, bundle_dir: Path, capsys, monkeypatch) -> None:
    out = tmp_path / "out"
    code, _, err = vce_run(
        capsys, monkeypatch, "--follow", tmp_path / "nope", "-b", bundle_dir, "-o", out, "--idle-timeout", 0.3
    )
    assert code == 2
    assert "nope: no such frame folder after waiting 0 s; start the recorder first" in one_error(err)
    assert not out.exists() or not list(out.iterdir())  # nothing left behind: the next run starts clean


def test_an_unwritable_output_folder(tmp_path: Path, bundle_dir: Path, capsys, monkeypatch) -> None:
    (tmp_path / "file").write_text("x")
    code, _, err = vce_run(
        capsys, monkeypatch, "--follow", tmp_path / "src", "-b", bundle_dir, "-o", tmp_path / "file" / "out"
    )
    assert code == 2 and "cannot write to the output folder" in one_error(err)


def test_a_frame_that_stays_corrupt(
    tmp_path: Path, video: Path, bundle_dir: Path, thresholds: Path, capsys, monkeypatch
) -> None:
    source = tmp_path / "src" / "synth_000"
    source.mkdir(parents=True)
    for f in list_frames(video)[:30]:
        shutil.copy(f.path, source / f.path.name)
    (source / "frame_000012.png").write_bytes(b"not an image" + b"\x00\x00\x00\x00IEND\xaeB`\x82")
    live_dir = tmp_path / "rec" / "synth_000"
    record_folder(source, live_dir, 1000, half_written=False)
    args = ["-b", bundle_dir, "--fps", FPS, "--thresholds", thresholds, "-q"]
    code, _, err = vce_run(
        capsys, monkeypatch, "--follow", live_dir, "-o", tmp_path / "live", "--corrupt-timeout", 1, *args
    )
    assert code == EXIT_PROBLEMS
    assert "frame_000012.png: frame 12 cannot be decoded; counted as corrupt" in err
    assert "done, with problems: 1 frame(s) could not be decoded" in err and "Traceback" not in err
    code, _, _ = vce_run(capsys, monkeypatch, live_dir, "-o", tmp_path / "off", *args)
    assert code == EXIT_PROBLEMS
    assert_same_outputs(tmp_path / "live", tmp_path / "off")  # an empty row for frame 12 in both


def test_a_stream_that_stops_mid_frame_keeps_every_complete_frame(
    tmp_path: Path, video: Path, bundle_dir: Path, thresholds: Path
) -> None:
    out = tmp_path / "live"
    files = list_frames(video)

    def recorder(w: Any) -> None:
        for f in files[:40]:
            write_frame(w, f.path.read_bytes())
        data = files[40].path.read_bytes()
        w.write(len(data).to_bytes(4, "big") + data[:100])  # the recorder dies inside frame 40

    code, text = piped(
        tmp_path, ["-b", str(bundle_dir), "-o", str(out), "--thresholds", str(thresholds)], recorder
    )
    assert code == EXIT_PROBLEMS, text
    lines = [line for line in text.splitlines() if line.startswith("vce-run:")]
    assert lines[-1].startswith("vce-run: done, with problems: the source ended early (stdin: the stream ended "
                                "in the middle of frame 40 (100 of")  # fmt: skip
    assert "Traceback" not in text
    probs = read_frames_csv(out / "frames.csv")["stdin"]
    assert probs.frames.tolist() == list(range(40))
    assert json.loads((out / "run.json").read_text())["live"]["problem"].startswith("stdin: the stream ended")
    assert logged_events(out)  # the events final before the cut stay


class _FullAfter:
    """A file whose writes fail as write(2) does on a full disk (ENOSPC: "The device containing the
    file referred to by fd has no room for the data", man 2 write) once ``ok`` writes have passed."""

    def __init__(self, fh: Any, ok: int) -> None:
        self.fh, self.ok = fh, ok

    def write(self, data: str) -> int:
        if self.ok <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.ok -= 1
        return self.fh.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.fh, name)


def test_a_write_failure_mid_run_keeps_what_is_final_and_the_same_command_resumes(
    tmp_path: Path, video: Path, bundle_dir: Path, thresholds: Path, offline: Path, capsys, monkeypatch
) -> None:
    live_dir, out = tmp_path / "rec" / "synth_000", tmp_path / "live"
    record_folder(video, live_dir, 1000, half_written=False)
    args = ["--follow", live_dir, "-b", bundle_dir, "-o", out, "--fps", FPS, "--thresholds", thresholds]
    args += ["--max-lag", 0, "-q"]  # every frame is there already: none may be skipped
    real_open = open
    monkeypatch.setattr(livestatus, "open", lambda *a, **k: _FullAfter(real_open(*a, **k), 4), raising=False)
    code, _, err = vce_run(capsys, monkeypatch, *args)
    assert code == 2
    assert f"cannot append to {out / 'events.jsonl'}: No space left on device" in one_error(err)
    assert len(logged_events(out)) == 4  # the events final before the disk filled up stay
    assert json.loads((out / "run.json").read_text())["status"] == "running"
    assert status_of(out)["state"] == "failed"
    monkeypatch.setattr(livestatus, "open", real_open, raising=False)
    code, _, err = vce_run(capsys, monkeypatch, *args)
    assert code == 0, err
    assert_same_outputs(out, offline)
    keys = [(e["start"], e["end"]) for e in logged_events(out)]
    assert len(keys) == len(set(keys)) == len(read_events_json(out / "events.json")["synth_000"])


def test_follow_option_errors(tmp_path: Path, bundle_dir: Path, capsys, monkeypatch) -> None:
    for args, expect in (
        (["--follow", tmp_path, tmp_path], "pass no INPUT"),
        (["--follow", tmp_path, "--max-lag", -1, "-b", bundle_dir], "--max-lag must be a whole number"),
        (["--follow", tmp_path], "--bundle is required"),
    ):
        code, _, err = vce_run(capsys, monkeypatch, *args, "-o", tmp_path / "o")
        assert code == 2 and expect in one_error(err)


def test_the_dynamic_int8_graph_is_named_as_batch_dependent(tmp_path: Path, video: Path) -> None:
    """quantize_dynamic's DynamicQuantizeLinear takes one scale per input tensor, i.e. per batch
    (ONNX operator spec), so live batches need not give the offline probabilities: a warning says so."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = make_bundle(tmp_path / "bundle")
    quantize_dynamic(
        str(root / "model.onnx"), str(root / "model_int8_dynamic.onnx"), weight_type=QuantType.QInt8
    )
    bundle = Bundle.load(root)
    bundle.add_file("model_int8_dynamic.onnx", "int8-dynamic", within_tolerance=True)
    bundle.save()
    live_dir = tmp_path / "rec" / "synth_000"
    record_folder(video, live_dir, 1000, half_written=False)
    opts = RunOptions(plots=False)
    result = follow_module.follow(
        str(live_dir), root, tmp_path / "out", opts, follow_module.FollowOptions(handle_signals=False)
    )
    assert result.backend == "ort-cpu" and "int8-dynamic" in result.backend_note
    assert any("quantizes each batch as a whole" in w for w in result.warnings)
    record = json.loads((tmp_path / "out" / "run.json").read_text())
    assert any("--graph fp32" in w for w in record["warnings"])


def test_follow_a_growing_video_file_equals_offline(
    tmp_path: Path, video: Path, bundle_dir: Path, thresholds: Path, capsys, monkeypatch
) -> None:
    """A stream OpenCV opens: an MJPEG AVI that grows while vce-run follows it (FFmpeg's ``follow``)."""
    rgb = np.stack([read_image(f.path)[..., ::-1] for f in list_frames(video)[:60]])
    data = write_video(tmp_path / "full.avi", rgb, fps=10.0).read_bytes()
    grow = tmp_path / "exam.avi"
    writer = grow_in_thirds(data, grow)
    args = ["-b", bundle_dir, "--thresholds", thresholds, "--max-lag", 0]
    code, _, err = vce_run(
        capsys, monkeypatch, "--follow", grow, "-o", tmp_path / "live", *args, "--idle-timeout", 1.5
    )
    writer.join()
    assert code == 0, err
    assert "= 1.10 s at 10 frames/s" in err  # the bound in seconds at the stream's own frame rate
    code, _, err = vce_run(capsys, monkeypatch, grow, "-o", tmp_path / "off", *args, "-q")
    assert code == 0, err
    assert_same_outputs(
        tmp_path / "live", tmp_path / "off", ("events.json", "frames.csv", "frames.provenance.json")
    )
    assert read_frames_csv(tmp_path / "live" / "frames.csv")["exam"].frames.size == 60
