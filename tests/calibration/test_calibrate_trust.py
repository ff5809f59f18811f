"""vce-calibrate and vce-eval against hostile or unlucky input (issue 11): the bundle stays loadable
whatever happens between the plot and the manifest, --dry-run writes nothing inside the bundle, and
probabilities outside [0, 1] or a header-only CSV are one clear line."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from vce.calibration.cli import calibrate_main, eval_main
from vce.runtime.bundle import Bundle
from vce.runtime.formats.framescsv import COLUMNS, VideoFrames, write_frames_csv
from vce.runtime.formats.labelcsv import write_label_csv
from vce.runtime.labels import LABEL_INDEX, NUM_LABELS

pytest.importorskip("matplotlib")

FAST = ["--folds", "0", "--medians", "1,3", "--min-runs", "1", "--max-gaps", "0", "--groupings", "tuple"]


def _data(tmp_path: Path, t: int = 120) -> tuple[Path, Path]:
    """Two videos: mouth on frames 20-59, colon on 70-109; probabilities that mostly agree."""
    rng = np.random.default_rng(0)
    labels_dir = tmp_path / "labels"
    labels_dir.mkdir()
    videos = []
    for v in range(2):
        y = np.zeros((t, NUM_LABELS))
        y[20:60, LABEL_INDEX["mouth"]] = 1
        y[70:110, LABEL_INDEX["colon"]] = 1
        p = np.clip(0.8 * y + 0.3 * rng.random((t, NUM_LABELS)), 0, 1)
        write_label_csv(labels_dir / f"v{v}.csv", np.arange(t), y)
        videos.append(VideoFrames(f"v{v}", np.arange(t), p))
    write_frames_csv(tmp_path / "val.csv", videos)
    return tmp_path / "val.csv", labels_dir


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    root = tmp_path / "bundle"
    Bundle.create(root).save()
    return root


def _cli(capsys, monkeypatch, main, prog: str, *args: object) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", [prog, *map(str, args)])
    with pytest.raises(SystemExit) as exc:
        main()
    return int(exc.value.code or 0), capsys.readouterr().err


def _one_line(err: str, prog: str) -> str:
    # warnings (e.g. a CSV without a provenance sidecar) may precede it; the error is one line
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith(f"{prog}: warning:")]
    assert "Traceback" not in err and len(lines) == 1 and lines[0].startswith(f"{prog}: error:"), err
    return lines[0]


def _sha(bundle: Path) -> str:
    import hashlib

    return hashlib.sha256((bundle / "calibration.png").read_bytes()).hexdigest()


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_dry_run_writes_nothing_inside_the_bundle(tmp_path: Path, bundle: Path, capsys, monkeypatch) -> None:
    csv, labels = _data(tmp_path)
    fit = ["fit", csv, "--labels", labels, "--bundle", bundle, *FAST]
    assert _cli(capsys, monkeypatch, calibrate_main, "vce-calibrate", *fit)[0] == 0  # lists calibration.png
    before = _snapshot(bundle)
    code, err = _cli(
        capsys,
        monkeypatch,
        calibrate_main,
        "vce-calibrate",
        *fit,
        "--dry-run",
        "--plot",
        bundle / "calibration.png",
    )
    assert code == 2 and "--dry-run" in _one_line(err, "vce-calibrate")
    assert _snapshot(bundle) == before
    Bundle.load(bundle)
    # a plot outside the bundle is fine with --dry-run
    code, _ = _cli(
        capsys, monkeypatch, calibrate_main, "vce-calibrate", *fit, "--dry-run", "--plot", tmp_path / "p.png"
    )
    assert code == 0 and (tmp_path / "p.png").stat().st_size > 1000 and _snapshot(bundle) == before


@pytest.mark.parametrize("name", ["model.onnx", "manifest.json", "plot.txt"])
def test_the_plot_never_replaces_a_bundle_file(name: str, tmp_path: Path, capsys, monkeypatch) -> None:
    from tinymodel import build_tiny_vit

    csv, labels = _data(tmp_path)
    root = tmp_path / "b"
    b = Bundle.create(root)
    build_tiny_vit(root / "model.onnx")
    b.add_file("model.onnx", "fp32")
    (root / "plot.txt").write_text("not a plot")
    b.save()
    before = _snapshot(root)
    code, err = _cli(
        capsys, monkeypatch, calibrate_main, "vce-calibrate", "fit", csv, "--labels", labels, "--bundle", root,
        *FAST, "--plot", root / name,
    )  # fmt: skip
    assert code == 2 and "plot" in _one_line(err, "vce-calibrate")
    assert _snapshot(root) == before


def test_a_kill_between_plot_and_manifest_leaves_a_loadable_bundle(
    tmp_path: Path, bundle: Path, capsys, monkeypatch
) -> None:
    csv, labels = _data(tmp_path)
    fit = ["fit", csv, "--labels", labels, "--bundle", bundle, *FAST]
    assert _cli(capsys, monkeypatch, calibrate_main, "vce-calibrate", *fit)[0] == 0
    manifest = (bundle / "manifest.json").read_bytes()

    def killed(self: Bundle) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(Bundle, "save", killed)
    other = ["fit", csv, "--labels", labels, "--bundle", bundle, "--folds", "0", "--medians", "1,5"]
    code, _ = _cli(capsys, monkeypatch, calibrate_main, "vce-calibrate", *other)
    monkeypatch.undo()
    assert code == 130 and (bundle / "manifest.json").read_bytes() == manifest
    assert Bundle.load(bundle, verify=False).manifest.files["calibration.png"]["sha256"] != _sha(bundle)
    Bundle.load(bundle)  # the (new) plot does not match its listed hash; vce-run never reads it


@pytest.mark.parametrize("value", ["-0.1", "1.5"])
@pytest.mark.parametrize("command", ["calibrate", "eval"])
def test_probabilities_outside_0_1_are_refused(
    value: str, command: str, tmp_path: Path, bundle: Path, capsys, monkeypatch
) -> None:
    csv, labels = _data(tmp_path)
    lines = csv.read_text().splitlines()
    cells = lines[5].split(",")
    cells[2 + LABEL_INDEX["colon"]] = value
    lines[5] = ",".join(cells)
    csv.write_text("\n".join(lines) + "\n")
    code, err = _read_probs(command, csv, labels, bundle, capsys, monkeypatch)
    line = _one_line(err, f"vce-{command}")
    assert code == 2 and "outside [0, 1]" in line and value in line and "colon" in line


def _read_probs(command: str, csv: Path, labels: Path, bundle: Path, capsys, monkeypatch) -> tuple[int, str]:
    """``vce-calibrate fit`` or ``vce-eval frames`` on ``csv``: (exit code, stderr)."""
    if command == "calibrate":
        return _cli(capsys, monkeypatch, calibrate_main, "vce-calibrate", "fit", csv, "--labels", labels,
                    "--bundle", bundle, *FAST)  # fmt: skip
    return _cli(capsys, monkeypatch, eval_main, "vce-eval", "frames", csv, labels)


@pytest.mark.parametrize("command", ["calibrate", "eval"])
def test_a_header_only_csv_is_one_line(
    command: str, tmp_path: Path, bundle: Path, capsys, monkeypatch
) -> None:
    _, labels = _data(tmp_path)
    csv = tmp_path / "empty.csv"
    csv.write_text(",".join(COLUMNS) + "\n")
    code, err = _read_probs(command, csv, labels, bundle, capsys, monkeypatch)
    assert code == 2 and "no rows" in _one_line(err, f"vce-{command}")
    shutil.rmtree(labels)
