"""The output folder: one run per folder, a lock, the run record, overwrite, leftovers, separation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from runtime_testdata import colour_frames, write_folder
from trust_testdata import vce_run

from vce.runtime.outdir import LOCK_FILE, clean_temp_files


def one_error(err: str) -> str:
    errors = [line for line in err.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith("vce-run: error:") and "Traceback" not in err, err
    return errors[0]


@pytest.fixture
def two_inputs(tmp_path: Path) -> tuple[Path, Path]:
    return (
        write_folder(tmp_path / "in" / "first", colour_frames("kkrr")),
        write_folder(tmp_path / "in2" / "second", colour_frames("ggkk")),
    )


def test_run_record_describes_the_run(
    tmp_path: Path, two_inputs, bundle_dir: Path, capsys, monkeypatch
) -> None:
    first, _ = two_inputs
    out = tmp_path / "out"
    assert vce_run(capsys, monkeypatch, first, "-b", bundle_dir, "-o", out, "--stride", 2)[0] == 0
    record = json.loads((out / "run.json").read_text())
    assert record["format"] == "vce-run-record" and record["status"] == "complete"
    assert record["inputs"] == [str(first)] and record["vce_version"]
    assert (
        record["bundle"]["path"] == str(bundle_dir.resolve())
        and len(record["bundle"]["manifest_sha256"]) == 64
    )
    assert record["settings"]["stride"] == 2 and record["settings"]["postprocess"]["median"] == 7
    assert [v["video"] for v in record["videos"]] == ["first"] and record["problems"] == []
    assert sorted(record["files"]) == sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    assert not (out / LOCK_FILE).exists()  # the lock goes with the run


def test_a_second_run_into_a_used_folder_is_refused_then_overwrite_replaces_it(
    tmp_path: Path, two_inputs, bundle_dir: Path, capsys, monkeypatch
) -> None:
    first, second = two_inputs
    out = tmp_path / "out"
    assert vce_run(capsys, monkeypatch, first, "-b", bundle_dir, "-o", out)[0] == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    code, _, err = vce_run(capsys, monkeypatch, second, "-b", bundle_dir, "-o", out)
    assert code == 2 and "already holds a finished run" in one_error(err) and "--overwrite" in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # untouched
    # the same command again is a second run too
    assert vce_run(capsys, monkeypatch, first, "-b", bundle_dir, "-o", out)[0] == 2
    (out / "notes.txt").write_text("mine")  # a user's file in the folder, and one named like ours
    (out / "mine_timeline.png").write_bytes(b"mine")
    assert vce_run(capsys, monkeypatch, second, "-b", bundle_dir, "-o", out, "--overwrite")[0] == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(
        ["events.json", "frames.csv", "frames.provenance.json", "run.json", "second_timeline.png", "notes.txt",
         "mine_timeline.png"]
    )  # fmt: skip
    assert json.loads((out / "events.json").read_text())["videos"][0]["video_id"] == "second"


def test_overwrite_deletes_only_output_names_whatever_the_record_lists(
    tmp_path: Path, two_inputs, bundle_dir: Path, capsys, monkeypatch
) -> None:
    first, _ = two_inputs
    out = tmp_path / "out"
    assert vce_run(capsys, monkeypatch, first, "-b", bundle_dir, "-o", out)[0] == 0
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    (out / "thesis.docx").write_text("keep")
    record = json.loads((out / "run.json").read_text())
    record["files"] += ["../victim.txt", str(victim), "thesis.docx", ".", "", 5]
    (out / "run.json").write_text(json.dumps(record))
    assert vce_run(capsys, monkeypatch, first, "-b", bundle_dir, "-o", out, "--overwrite")[0] == 0
    assert victim.read_text() == "keep" and (out / "thesis.docx").read_text() == "keep"


@pytest.mark.parametrize("content", ["{not json", "[]", '{"format": "something-else"}'])
def test_a_folder_with_foreign_files_or_a_foreign_record_is_refused(
    tmp_path: Path, two_inputs, bundle_dir: Path, capsys, monkeypatch, content: str
) -> None:
    first, _ = two_inputs
    out = tmp_path / "out"
    out.mkdir()
    (out / "events.json").write_text("my ground truth")
    code, _, err = vce_run(capsys, monkeypatch, first, "-b", bundle_dir, "-o", out, "--overwrite")
    assert code == 2 and "holds files that no vce run record lists (events.json)" in one_error(err)
    (out / "run.json").write_text(content)
    code, _, err = vce_run(capsys, monkeypatch, first, "-b", bundle_dir, "-o", out, "--overwrite")
    assert code == 2 and "run.json" in one_error(err)
    assert (out / "events.json").read_text() == "my ground truth"


def test_an_interrupted_run_is_resumed_only_by_the_same_command(
    tmp_path: Path, two_inputs, bundle_dir: Path, capsys, monkeypatch
) -> None:
    first, second = two_inputs
    out = tmp_path / "out"
    assert vce_run(capsys, monkeypatch, first, "-b", bundle_dir, "-o", out)[0] == 0
    record = json.loads((out / "run.json").read_text())
    for name in record["files"]:
        if name != "run.json":
            (out / name).unlink()
    record.update(status="running", files=[])  # as a killed run leaves it
    (out / "run.json").write_text(json.dumps(record))
    code, _, err = vce_run(capsys, monkeypatch, second, "-b", bundle_dir, "-o", out)
    assert code == 2 and "already holds an interrupted run" in one_error(err)
    assert "run its command again to finish it" in err
    code, *_ = vce_run(capsys, monkeypatch, first, "-b", bundle_dir, "-o", out, "--median", 3)
    assert code == 2  # other settings: another run
    assert (
        vce_run(capsys, monkeypatch, first, "-b", bundle_dir, "-o", out, "--no-plots", "--batch", 2)[0] == 0
    )


def test_a_second_vce_run_on_a_locked_folder_stops_at_once(
    tmp_path: Path, two_inputs, bundle_dir: Path, capsys, monkeypatch
) -> None:
    first, _ = two_inputs
    out = tmp_path / "out"
    out.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from pathlib import Path
            from vce.runtime.outdir import FolderLock
            lock = FolderLock(Path({str(out)!r}))
            lock.acquire()
            print("locked", flush=True)
            sys.stdin.read()
            lock.release()
        """)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        code, _, err = vce_run(capsys, monkeypatch, first, "-b", bundle_dir, "-o", out)
        assert code == 2
        assert f"is in use by another vce-run (pid {holder.pid})" in one_error(err)
        assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE]  # nothing written, lock kept
    finally:
        holder.communicate("", timeout=30)
    assert not (out / LOCK_FILE).exists()
    assert vce_run(capsys, monkeypatch, first, "-b", bundle_dir, "-o", out)[0] == 0


def test_a_symlinked_lock_file_is_not_followed(
    tmp_path: Path, two_inputs, bundle_dir: Path, capsys, monkeypatch
) -> None:
    first, _ = two_inputs
    out = tmp_path / "out"
    out.mkdir()
    target = tmp_path / "precious.txt"
    target.write_text("keep")
    os.symlink(target, out / LOCK_FILE)
    code, _, err = vce_run(capsys, monkeypatch, first, "-b", bundle_dir, "-o", out)
    assert code == 2 and "lock file" in one_error(err) and target.read_text() == "keep"


def test_leftover_temporary_files_of_a_killed_run_are_removed(
    tmp_path: Path, two_inputs, bundle_dir: Path, capsys, monkeypatch
) -> None:
    first, _ = two_inputs
    out = tmp_path / "out"
    (out / ".partial").mkdir(parents=True)
    ours = [
        ".frames.csv.k2j3h4g5.csv.tmp",
        ".events.json.abc_1234.json.tmp",
        ".run.json.zzzzzzzz.json.tmp",
        ".first_timeline.png.q1w2e3r4.png.tmp",
        ".vce-write-test.a1b2c3d4",
        ".partial/.first-0123abcd.npz.k2j3h4g5.npz.tmp",
    ]
    theirs = [
        ".notes.txt.k2j3h4g5.txt.tmp",  # a temp name, but not of a file vce writes
        ".frames.csv.k2j3h4g5.tmp",  # suffix does not match
        ".frames.csv.TOOLONG123.csv.tmp",
        "frames.csv.tmp",
        ".partial/.notes.k2j3h4g5.npz.tmp",
    ]
    for name in ours + theirs:
        (out / name).write_text("x")
    assert sorted(clean_temp_files(out)) == sorted(ours)
    for name in ours:
        (out / name).write_text("x")
    (out / "frames.csv.tmp").unlink()  # leave only hidden names: the folder counts as empty
    assert vce_run(capsys, monkeypatch, first, "-b", bundle_dir, "-o", out)[0] == 0
    assert not any((out / name).exists() for name in ours)
    assert all((out / name).exists() for name in theirs if name != "frames.csv.tmp")


@pytest.mark.parametrize("where", ["same", "inside", "contains", "bundle"])
def test_output_folder_must_be_apart_from_the_inputs(
    tmp_path: Path, two_inputs, bundle_dir: Path, capsys, monkeypatch, where: str
) -> None:
    first, _ = two_inputs
    parent = first.parent
    out, inputs, expect = {
        "same": (first, [first], "is the input"),
        "inside": (first / "out", [first], "lies inside the input"),
        "contains": (parent.parent, [first], "lies inside the output folder"),
        "bundle": (bundle_dir / "out", [first], "lies inside the bundle"),
    }[where]
    listing = sorted(p.name for p in first.iterdir())
    code, _, err = vce_run(capsys, monkeypatch, *inputs, "-b", bundle_dir, "-o", out)
    assert code == 2 and expect in one_error(err)
    assert sorted(p.name for p in first.iterdir()) == listing
    assert not (bundle_dir / "out").exists()


def test_from_probs_follows_the_same_folder_rules(
    tmp_path: Path, two_inputs, bundle_dir: Path, capsys, monkeypatch
) -> None:
    first, _ = two_inputs
    out = tmp_path / "out"
    assert vce_run(capsys, monkeypatch, first, "-b", bundle_dir, "-o", out)[0] == 0
    code, _, err = vce_run(capsys, monkeypatch, "--from-probs", out / "frames.csv", "-o", out)
    assert code == 2 and "lies inside the output folder" in one_error(err)
    again = tmp_path / "again"
    assert (
        vce_run(capsys, monkeypatch, "--from-probs", out / "frames.csv", "-b", bundle_dir, "-o", again)[0]
        == 0
    )
    assert (
        vce_run(capsys, monkeypatch, "--from-probs", out / "frames.csv", "-b", bundle_dir, "-o", again)[0]
        == 2
    )
    code, *_ = vce_run(
        capsys, monkeypatch, "--from-probs", out / "frames.csv", "-b", bundle_dir, "-o", again, "--overwrite"
    )
    assert code == 0
    assert json.loads((again / "run.json").read_text())["command"] == "from-probs"


def test_the_batch_size_is_part_of_the_signature_only_for_a_batch_dependent_graph(tmp_path: Path) -> None:
    from vce.runtime.backends.select import Choice
    from vce.runtime.run import run_record

    def signature(graph: str, batch: int) -> dict:
        choice = Choice("ort-cpu", tmp_path / "m.onnx", graph, "0" * 64)
        return run_record("run", [tmp_path], None, choice, {"batch": batch, "stride": 1}, [])["signature"]

    # dynamic INT8 quantizes activations per batch: another --batch gives other probabilities
    assert signature("int8-dynamic", 8) != signature("int8-dynamic", 4)
    assert signature("fp32", 8) == signature("fp32", 4) and "batch" not in signature("fp32", 8)
