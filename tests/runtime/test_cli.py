"""``vce-run`` end to end: outputs, --from-probs, options, bad input, atomic outputs, Ctrl-C and resume."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from runtime_testdata import SEQUENCE, SEQUENCE_EVENTS, colour_frames, make_bundle, write_folder
from trust_testdata import vce_run

import vce.runtime.run as run_module
from vce.runtime.cli import EXIT_PROBLEMS
from vce.runtime.errors import VCEError
from vce.runtime.formats.eventjson import read_events_json
from vce.runtime.formats.framescsv import COLUMNS, read_frames_csv


def assert_clean_failure(code: int, err: str, out_dir: Path, expect: str, exit_code: int = 2) -> None:
    assert code == exit_code
    errors = [line for line in err.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith("vce-run: error:") and expect in errors[0], err
    assert err.strip().splitlines()[-1] == errors[0]
    assert "Traceback" not in err
    for name in ("events.json", "frames.csv"):
        assert not (out_dir / name).exists()
    assert not list(out_dir.glob("*.tmp")) if out_dir.exists() else True


def test_end_to_end_outputs(
    tmp_path: Path, video_file: Path, frame_folder: Path, bundle_dir: Path, capsys, monkeypatch
) -> None:
    out = tmp_path / "out"
    code, stdout, _ = vce_run(
        capsys, monkeypatch, video_file, frame_folder, "-b", bundle_dir, "-o", out, "--batch", 4
    )
    assert code == 0
    events = read_events_json(out / "events.json")
    assert events == {"vid_a": SEQUENCE_EVENTS, "vid_b": SEQUENCE_EVENTS}
    probs = read_frames_csv(out / "frames.csv")
    assert sorted(probs) == ["vid_a", "vid_b"] and probs["vid_a"].frames.tolist() == list(
        range(len(SEQUENCE))
    )
    assert (out / "frames.csv").read_text().splitlines()[0] == ",".join(COLUMNS)
    assert (out / "vid_a_timeline.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "vid_b_timeline.png").stat().st_size > 10_000
    assert not (out / ".partial").exists()
    assert "ort-cpu" in stdout and "frames/s" in stdout and "mouth 2" in stdout


def test_from_probs_reproduces_events_and_takes_options(
    tmp_path: Path, frame_folder: Path, bundle_dir: Path, capsys, monkeypatch
) -> None:
    out = tmp_path / "out"
    assert vce_run(capsys, monkeypatch, frame_folder, "-b", bundle_dir, "-o", out, "--no-plots")[0] == 0
    again = tmp_path / "again"
    code, _, _ = vce_run(
        capsys, monkeypatch, "--from-probs", out / "frames.csv", "-b", bundle_dir, "-o", again, "--no-plots"
    )
    assert code == 0 and (again / "events.json").read_text() == (out / "events.json").read_text()
    assert read_frames_csv(again / "frames.csv")["vid_b"].values.shape == (len(SEQUENCE), 17)
    thresholds = tmp_path / "t.json"
    thresholds.write_text(
        json.dumps({"thresholds": {k: (0.99 if k == "mouth" else 0.5) for k in COLUMNS[2:]}})
    )
    label = tmp_path / "label"
    code, _, _ = vce_run(
        capsys, monkeypatch, "--from-probs", out / "frames.csv", "-b", bundle_dir, "-o", label,
        "--thresholds", thresholds, "--grouping", "label", "--no-plots",
    )  # fmt: skip
    assert code == 0
    # mouth (p ~ 0.99 on red frames, at or below 0.99 on some) disappears or shrinks; no empty events
    events = read_events_json(label / "events.json")["vid_b"]
    assert {"start": 18, "end": 29, "label": ["stomach"]} in events and all(e["label"] for e in events)
    code, _, _ = vce_run(
        capsys,
        monkeypatch,
        "--from-probs",
        out / "frames.csv",
        "-o",
        tmp_path / "f",
        "--thresholds",
        "0.999",
        "--median",
        "1",
        "--no-plots",
    )
    assert code == 0 and all(
        not e["label"] for e in read_events_json(tmp_path / "f" / "events.json")["vid_b"]
    )


def test_stride_and_bundle_defaults(tmp_path: Path, frame_folder: Path, capsys, monkeypatch) -> None:
    bundle = make_bundle(tmp_path / "bundle")
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["postprocess"]["grouping"] = "label"  # a calibrated bundle's choice is the default
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    out = tmp_path / "out"
    code, stdout, _ = vce_run(
        capsys,
        monkeypatch,
        frame_folder,
        "-b",
        bundle,
        "-o",
        out,
        "--stride",
        3,
        "--fill",
        "hold",
        "--no-plots",
    )
    assert code == 0 and "grouping label" in stdout
    assert read_events_json(out / "events.json")["vid_b"] == [e for e in SEQUENCE_EVENTS if e["label"]]
    assert read_frames_csv(out / "frames.csv")["vid_b"].frames.size == len(SEQUENCE)


@pytest.mark.parametrize(
    "case",
    [
        "missing_input",
        "corrupt_video",
        "empty_folder",
        "non_image",
        "bundle_file_missing",
        "bundle_hash",
        "bundle_manifest_json",
        "bad_thresholds",
        "nan",
        "unwritable",
        "all_corrupt",
        "parallel_videos",
    ],
)
def test_bad_input_one_line_nonzero_nothing_written(
    case: str, tmp_path: Path, frame_folder: Path, bundle_dir: Path, capsys, monkeypatch
) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(bundle_dir, bundle)
    out = tmp_path / "out"
    inputs: list[object] = [frame_folder]
    options: list[object] = []
    expect = {
        "missing_input": "no such file or folder",
        "corrupt_video": "unreadable or corrupt video",
        "empty_folder": "no videos and no frame folders",
        "non_image": "not an image file in a frame folder",
        "bundle_file_missing": "listed in the bundle manifest but missing",
        "bundle_hash": "does not match the manifest",
        "bundle_manifest_json": "manifest.json: not valid JSON",
        "bad_thresholds": "t.json: thresholds are missing labels",
        "nan": "NaN/Inf probabilities",
        "unwritable": "cannot write to the output folder",
        "all_corrupt": "no decodable frame",
        "parallel_videos": "--parallel-videos must be at least 1",
    }[case]
    if case == "missing_input":
        inputs = [tmp_path / "nope.mp4"]
    elif case == "corrupt_video":
        inputs = [tmp_path / "noise.mp4"]
        (tmp_path / "noise.mp4").write_bytes(np.random.default_rng(0).bytes(4096))
    elif case == "empty_folder":
        inputs = [tmp_path / "empty"]
        (tmp_path / "empty").mkdir()
    elif case == "non_image":
        (frame_folder / "frame_000099.bin").write_bytes(b"\0")
    elif case == "bundle_manifest_json":
        (bundle / "manifest.json").write_text("{not json")
    elif case == "bad_thresholds":
        (tmp_path / "t.json").write_text('{"mouth": 0.3}')
        options = ["--thresholds", tmp_path / "t.json"]
    elif case == "bundle_file_missing":
        (bundle / "model.onnx").unlink()
    elif case == "bundle_hash":
        with open(bundle / "model.onnx", "ab") as fh:
            fh.write(b"\0")
    elif case == "nan":
        bundle = make_bundle(tmp_path / "nan_bundle", nan=True)
    elif case == "unwritable":
        (tmp_path / "file").write_text("x")
        out = tmp_path / "file" / "out"
    elif case == "parallel_videos":
        options = ["--parallel-videos", 0]
    elif case == "all_corrupt":
        bad = write_folder(tmp_path / "bad", colour_frames("kkk"))
        for f in bad.iterdir():
            f.write_bytes(b"broken")
        inputs = [bad]
    code, _, err = vce_run(capsys, monkeypatch, *inputs, "-b", bundle, "-o", out, *options)
    assert_clean_failure(code, err, out, expect)
    # nothing left behind, not even an empty .partial folder (no video finished before the error)
    assert not out.is_dir() or not list(out.iterdir())


def test_corrupt_frames_are_a_warning_a_row_each_and_exit_3(
    tmp_path: Path, bundle_dir: Path, capsys, monkeypatch
) -> None:
    folder = write_folder(tmp_path / "v", colour_frames(SEQUENCE))
    (folder / "frame_000010.png").write_bytes(b"broken")
    out = tmp_path / "out"
    code, _, err = vce_run(capsys, monkeypatch, folder, "-b", bundle_dir, "-o", out, "--no-plots")
    assert code == EXIT_PROBLEMS
    assert "error" not in err.lower()  # the outputs are complete: a warning, not an error
    assert "vce-run: warning: 1 frame(s) could not be decoded (v: frames 10)" in err
    assert (
        err.strip()
        .splitlines()[-1]
        .startswith("vce-run: done, with problems: 1 frame(s) could not be decoded")
    )
    # frames.csv accounts for every frame: frame 10 is a row without probabilities
    rows = (out / "frames.csv").read_text().splitlines()[1:]
    assert len(rows) == len(SEQUENCE) and rows[10] == "v,10" + "," * 17
    probs = read_frames_csv(out / "frames.csv")["v"]
    assert 10 not in probs.frames and probs.frames.size == len(SEQUENCE) - 1
    assert probs.missing.tolist() == [10]
    # the rule: a missing frame belongs to the event of the decodable frame before it
    assert read_events_json(out / "events.json")["v"] == SEQUENCE_EVENTS
    record = json.loads((out / "run.json").read_text())
    assert record["videos"][0]["frames_not_decoded"] == 1 and record["status"] == "complete"
    again = tmp_path / "again"
    code, _, err = vce_run(
        capsys, monkeypatch, folder, "-b", bundle_dir, "-o", again, "--no-plots", "--allow-corrupt"
    )
    assert code == 0 and "warning: 1 frame(s) could not be decoded" in err
    # --from-probs reads the marked rows and applies the same rule: the same events
    rerun = tmp_path / "rerun"
    code, _, _ = vce_run(
        capsys, monkeypatch, "--from-probs", out / "frames.csv", "-b", bundle_dir, "-o", rerun
    )
    assert code == 0 and (rerun / "events.json").read_text() == (out / "events.json").read_text()
    assert (rerun / "frames.csv").read_text() == (out / "frames.csv").read_text()


def test_ctrl_c_leaves_no_output_and_the_next_run_resumes(
    tmp_path: Path, frame_folder: Path, bundle_dir: Path, capsys, monkeypatch
) -> None:
    calls = {"n": 0, "frames": 0}
    real = run_module.create_runner

    def interrupting(*a, **kw):  # type: ignore[no-untyped-def]
        inner = real(*a, **kw)
        original = inner.infer

        def infer(x: np.ndarray) -> dict[str, np.ndarray]:
            calls["n"] += 1
            if calls["n"] == 3:
                raise KeyboardInterrupt
            calls["frames"] += x.shape[0]
            return original(x)

        inner.infer = infer  # type: ignore[method-assign]
        return inner

    monkeypatch.setattr(run_module, "create_runner", interrupting)
    out = tmp_path / "out"
    code, _, err = vce_run(capsys, monkeypatch, frame_folder, "-b", bundle_dir, "-o", out, "--batch", 4)
    assert code == 130 and err.strip().splitlines()[-1].startswith("vce-run: error: interrupted; no output")
    assert sorted(p.name for p in out.iterdir()) == [".partial", "run.json"]
    assert json.loads((out / "run.json").read_text())["status"] == "running"
    code, stdout, _ = vce_run(
        capsys, monkeypatch, frame_folder, "-b", bundle_dir, "-o", out, "--batch", 4, "--no-plots"
    )
    assert code == 0 and "resumed from an interrupted run: vid_b" in stdout
    assert calls["frames"] == len(SEQUENCE)  # 8 before Ctrl-C, 22 after: nothing inferred twice
    # frames/s counts only this run's work: 22 frames, the 8 of the killed run are reported apart
    assert f"backend: ort-cpu; {len(SEQUENCE) - 8} frames in" in stdout
    assert "8 more from the interrupted run" in stdout
    assert read_events_json(out / "events.json")["vid_b"] == SEQUENCE_EVENTS


def test_a_crash_while_writing_outputs_leaves_none(
    tmp_path: Path, frame_folder: Path, bundle_dir: Path, capsys, monkeypatch
) -> None:
    import vce.runtime.formats.timeline as timeline

    def broken_plot(path, *a, **kw):  # type: ignore[no-untyped-def]
        Path(path).write_bytes(b"half a png")
        raise OSError("disk full")

    monkeypatch.setattr(timeline, "plot_timeline", broken_plot)
    out = tmp_path / "out"
    with pytest.raises(
        VCEError, match=r"cannot write .*_timeline\.png: disk full"
    ):  # one line, see atomic.py
        run_module.run([frame_folder], bundle_dir, out)
    # no output; what remains is what the next run resumes from (the record and the partials)
    assert sorted(p.name for p in out.iterdir()) == [".partial", "run.json"]


def test_without_matplotlib_plots_are_skipped_with_one_warning(
    tmp_path: Path, frame_folder: Path, bundle_dir: Path, capsys, monkeypatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    out = tmp_path / "out"
    code, _, err = vce_run(capsys, monkeypatch, frame_folder, "-b", bundle_dir, "-o", out)
    assert code == 0 and not list(out.glob("*.png")) and (out / "events.json").is_file()
    assert err.count("warning: timeline plots skipped") == 1 and "vce[plots]" in err
