"""Which model made a per-frame CSV: the sidecar vce-run writes, and the check against a bundle."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from runtime_testdata import make_bundle
from trust_testdata import vce_run

from vce.runtime.bundle import Bundle, sha256_file
from vce.runtime.errors import VCEError
from vce.runtime.formats.framescsv import VideoFrames, write_frames_csv
from vce.runtime.formats.provenance import (
    check_model,
    make_record,
    read_provenance,
    sidecar_path,
    write_sidecar,
)

A, B = "a" * 64, "b" * 64


def bundle_with_weights(root: Path, weights: str | None) -> Bundle:
    make_bundle(root)
    b = Bundle.load(root)
    if weights is not None:
        b.manifest.model["weights_sha256"] = weights
        b.save()
    return b


def csv_with(path: Path, *, weights: str | None = None, graph: str | None = None) -> Path:
    write_frames_csv(path, [VideoFrames("v", [0, 1], np.full((2, 17), 0.3))])
    graph_info = {"role": "fp32", "sha256": graph} if graph else None
    write_sidecar(
        path, make_record(path, made_by="test", model={"weights_sha256": weights}, graph=graph_info)
    )
    return path


def test_vce_run_records_the_model_and_graph_beside_frames_csv(
    tmp_path: Path, frame_folder: Path, capsys, monkeypatch
) -> None:
    bundle = bundle_with_weights(tmp_path / "bundle", A)
    out = tmp_path / "out"
    assert vce_run(capsys, monkeypatch, frame_folder, "-b", bundle.root, "-o", out, "--no-plots")[0] == 0
    side = json.loads((out / "frames.provenance.json").read_text())
    assert side["format"] == "vce-provenance" and side["made_by"] == "vce-run"
    assert side["csv"] == "frames.csv" and side["csv_sha256"] == sha256_file(out / "frames.csv")
    assert side["model"]["weights_sha256"] == A
    assert side["graph"] == {"role": "fp32", "sha256": sha256_file(bundle.root / "model.onnx")}
    assert check_model(out / "frames.csv", bundle) == []
    # --from-probs carries the identity forward
    again = tmp_path / "again"
    assert (
        vce_run(capsys, monkeypatch, "--from-probs", out / "frames.csv", "-b", bundle.root, "-o", again)[0]
        == 0
    )
    prov, _ = read_provenance(again / "frames.csv")
    assert prov is not None and prov.weights_sha256 == A and prov.made_by == "vce-run --from-probs"


def test_a_mismatch_is_refused_unless_allowed(tmp_path: Path) -> None:
    bundle = bundle_with_weights(tmp_path / "bundle", A)
    other = csv_with(tmp_path / "other.csv", weights=B)
    with pytest.raises(VCEError, match=r"other\.csv was made by another model .* --allow-other-model"):
        check_model(other, bundle)
    [warning] = check_model(other, bundle, allow_other_model=True)
    assert "used anyway (--allow-other-model)" in warning
    assert check_model(csv_with(tmp_path / "same.csv", weights=A), bundle) == []


def test_without_weights_the_graph_hash_decides(tmp_path: Path) -> None:
    bundle = bundle_with_weights(tmp_path / "bundle", None)  # random weights: no weights file
    graph = sha256_file(bundle.root / "model.onnx")
    assert check_model(csv_with(tmp_path / "ok.csv", graph=graph), bundle) == []
    with pytest.raises(VCEError, match=r"graph sha256 c{12}\.\.\. is none of the bundle's graphs"):
        check_model(csv_with(tmp_path / "bad.csv", graph="c" * 64), bundle)


def test_nothing_to_compare_is_a_warning(tmp_path: Path) -> None:
    bundle = bundle_with_weights(tmp_path / "bundle", A)
    bare = tmp_path / "bare.csv"
    write_frames_csv(bare, [VideoFrames("v", [0], np.full((1, 17), 0.3))])
    [warning] = check_model(bare, bundle)
    assert "has no provenance sidecar (bare.provenance.json)" in warning
    stale = csv_with(tmp_path / "stale.csv", weights=B)
    write_frames_csv(stale, [VideoFrames("v", [0], np.full((1, 17), 0.9))])  # edited after the fact
    [warning] = check_model(stale, bundle)
    assert "describes another version of stale.csv" in warning
    sidecar_path(stale).write_text('{"format": "vce-provenance", "csv_sha256": 5, "model": []}')
    assert "another version" in check_model(stale, bundle)[0]
    sidecar_path(stale).write_text("[1, 2")
    assert "not valid JSON" in check_model(stale, bundle)[0]


def test_from_probs_refuses_another_models_probabilities(
    tmp_path: Path, frame_folder: Path, capsys, monkeypatch
) -> None:
    mine = bundle_with_weights(tmp_path / "mine", A)
    theirs = tmp_path / "theirs"
    shutil.copytree(mine.root, theirs)
    b = Bundle.load(theirs)
    b.manifest.model["weights_sha256"] = B
    b.save()
    out = tmp_path / "out"
    assert vce_run(capsys, monkeypatch, frame_folder, "-b", mine.root, "-o", out, "--no-plots")[0] == 0
    code, _, err = vce_run(
        capsys, monkeypatch, "--from-probs", out / "frames.csv", "-b", theirs, "-o", tmp_path / "x"
    )
    assert code == 2 and "was made by another model" in err and not (tmp_path / "x").exists()
    code, _, err = vce_run(
        capsys, monkeypatch, "--from-probs", out / "frames.csv", "-b", theirs, "-o", tmp_path / "y",
        "--allow-other-model",
    )  # fmt: skip
    assert code == 0 and "warning:" in err and "used anyway" in err
