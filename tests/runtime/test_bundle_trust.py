"""Hostile bundles (issue 11, holes 1, 2, 5): external data, paths that leave the bundle, manifests of
the wrong shape, graphs that do not match their manifest. Each is refused with one line before the
model runs; nothing is written."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from runtime_testdata import SEQUENCE, colour_frames, make_bundle, make_onnx, write_folder
from trust_testdata import SECRET_W, make_graph, one_error_line, run_cli, write_secret

from vce.runtime.atomic import write_json
from vce.runtime.backends import create_runner
from vce.runtime.bundle import MANIFEST, Bundle, Manifest
from vce.runtime.cli import main as vce_run
from vce.runtime.errors import VCEError
from vce.runtime.formats.framescsv import read_frames_csv
from vce.runtime.labels import LABEL_INDEX


def _bundle(root: Path, **graph: Any) -> Path:
    """make_bundle's bundle; with ``graph`` options, its model.onnx is make_graph's (hashed as valid)."""
    make_bundle(root)
    if graph:
        make_graph(root / "model.onnx", **graph)
        b = Bundle.load(root, verify=False)
        b.add_file("model.onnx", "fp32")
        b.save()
    return root


def _edit(root: Path, change: Any) -> None:
    data = json.loads((root / MANIFEST).read_text())
    change(data)
    (root / MANIFEST).write_text(json.dumps(data))


def _run(capsys, monkeypatch, folder: Path, bundle: Path, out: Path) -> tuple[int, str]:
    code, _, err = run_cli(capsys, monkeypatch, vce_run, "vce-run", folder, "-b", bundle, "-o", out, "-q")
    return code, err


def _refused(capsys, monkeypatch, folder: Path, bundle: Path, out: Path, expect: str) -> str:
    code, err = _run(capsys, monkeypatch, folder, bundle, out)
    line = one_error_line(err, "vce-run")
    assert code == 2 and expect in line, err
    assert not (out / "frames.csv").exists() and not (out / "events.json").exists()
    return line


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return write_folder(tmp_path / "vid", colour_frames(SEQUENCE[:8]))


# --- hole 1: external data --------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["initializer", "constant", "sparse", "subgraph"])
@pytest.mark.parametrize("location", ["inside", "absolute", "parent"])
def test_external_data_is_refused_before_the_model_runs(
    where: str, location: str, tmp_path: Path, folder: Path, capsys, monkeypatch
) -> None:
    """A graph whose W lives in another file (valid sha256 in the manifest): its bytes never reach
    frames.csv. ``inside``: a file beside the graph that no manifest lists (ONNX Runtime itself
    allows that); ``absolute``/``parent``: a file outside the bundle (recent ONNX Runtime refuses
    those itself; vce refuses them all, on any version)."""
    root = tmp_path / "bundle"
    target = {
        "inside": ("secret.bin", root / "secret.bin"),
        "absolute": (str(tmp_path / "secret.bin"), tmp_path / "secret.bin"),
        "parent": ("../secret.bin", tmp_path / "secret.bin"),
    }[location]
    _bundle(root, external=target[0], where=where)
    write_secret(target[1])
    out = tmp_path / "out"
    line = _refused(capsys, monkeypatch, folder, root, out, "stores tensor data in external files")
    assert "model.onnx" in line


def test_the_inside_external_file_would_reach_the_output_without_the_check(tmp_path: Path) -> None:
    """The crafted graph is a real attack: ONNX Runtime alone reads the unlisted file into W."""
    import onnxruntime as ort

    root = tmp_path / "b"
    root.mkdir()
    write_secret(root / "secret.bin")
    make_graph(root / "model.onnx", external="secret.bin")
    session = ort.InferenceSession(str(root / "model.onnx"), providers=["CPUExecutionProvider"])
    probs = session.run(["probs"], {"images": np.ones((1, 3, 8, 8), np.float32)})[0]
    assert probs[0, LABEL_INDEX["polyp"]] == 1.0  # only the secret W gives polyp 1000 * 1
    assert SECRET_W[0, LABEL_INDEX["polyp"]] == 1000.0


def test_the_runner_refuses_external_data_too(tmp_path: Path) -> None:
    """create_runner on a bare graph path (vce-calibrate int8, parity) scans it as well."""
    write_secret(tmp_path / "secret.bin")
    make_graph(tmp_path / "m.onnx", external="secret.bin")
    with pytest.raises(VCEError, match="external files"):
        create_runner("ort-cpu", tmp_path / "m.onnx")


# --- hole 2: every path a listed, hashed file inside the bundle ----------------------------------


@pytest.mark.parametrize("name", ["absolute", "../model.onnx", "sub/model.onnx", "unlisted.onnx"])
def test_graph_paths_must_be_listed_files_inside_the_bundle(
    name: str, tmp_path: Path, folder: Path, capsys, monkeypatch
) -> None:
    """graphs.fp32 pointing elsewhere: main ran that graph unverified."""
    root = _bundle(tmp_path / "bundle")
    other = make_graph(tmp_path / "model.onnx", raw_probs=False)  # a graph outside the bundle
    (root / "sub").mkdir()
    shutil.copy(other, root / "sub" / "model.onnx")
    shutil.copy(other, root / "unlisted.onnx")
    target = str(other) if name == "absolute" else name

    def point(d: dict[str, Any]) -> None:
        d["graphs"]["fp32"] = target

    _edit(root, point)
    line = _refused(capsys, monkeypatch, folder, root, tmp_path / "out", "graphs.fp32")
    assert "plain file name" in line or "not listed" in line


@pytest.mark.parametrize("key", ["file", "sidecar"])
def test_engine_paths_must_be_listed_files_inside_the_bundle(key: str, tmp_path: Path) -> None:
    root = _bundle(tmp_path / "bundle")
    (root / "model.engine").write_bytes(b"engine")
    (root / "model.engine.json").write_text("{}")
    b = Bundle.load(root)
    b.add_file("model.engine", "engine")
    b.add_file("model.engine.json", "engine-sidecar")
    b.manifest.engines = [{"file": "model.engine", "sidecar": "model.engine.json"}]
    b.save()
    _edit(root, lambda d: d["engines"][0].__setitem__(key, "/etc/passwd"))
    with pytest.raises(VCEError, match=rf"engines\[0\]\.{key} must be a plain file name"):
        Bundle.load(root)
    _edit(root, lambda d: d["engines"][0].__setitem__(key, "other.engine"))
    with pytest.raises(VCEError, match="not listed"):
        Bundle.load(root)


def test_a_symlink_leaving_the_bundle_is_refused(tmp_path: Path, folder: Path, capsys, monkeypatch) -> None:
    """model.onnx -> a graph outside the bundle, with that graph's (valid) hash listed."""
    root = _bundle(tmp_path / "bundle")
    outside = make_onnx(tmp_path / "outside.onnx")
    (root / "model.onnx").unlink()
    os.symlink(outside, root / "model.onnx")
    b = Bundle.load(root, verify=False)
    b.manifest.files["model.onnx"]["sha256"] = hashlib.sha256(outside.read_bytes()).hexdigest()
    write_json(root / MANIFEST, b.manifest.to_dict())
    _refused(capsys, monkeypatch, folder, root, tmp_path / "out", "a link to a file outside the bundle")


def test_a_link_inside_the_bundle_is_fine(tmp_path: Path) -> None:
    root = _bundle(tmp_path / "bundle")
    (root / "model.onnx").rename(root / "real.onnx")
    os.symlink("real.onnx", root / "model.onnx")
    assert Bundle.load(root).graph("fp32") == root / "model.onnx"


def test_a_mismatch_never_shows_the_hash_of_a_file_outside_the_bundle(tmp_path: Path) -> None:
    root = _bundle(tmp_path / "bundle")
    secret = tmp_path / "secret.txt"
    secret.write_text("the user's private file\n")
    digest = hashlib.sha256(secret.read_bytes()).hexdigest()

    def probe(d: dict[str, Any]) -> None:
        d["files"]["../secret.txt"] = {"role": "engine", "sha256": "0" * 64}

    _edit(root, probe)
    with pytest.raises(VCEError) as exc:
        Bundle.load(root)
    assert digest[:12] not in str(exc.value) and "plain file name" in str(exc.value)


# --- hole 5: files vce never reads ------------------------------------------------------------------


def test_a_changed_calibration_plot_does_not_make_the_bundle_unloadable(tmp_path: Path) -> None:
    root = _bundle(tmp_path / "bundle")
    (root / "calibration.png").write_bytes(b"\x89PNG plot")
    b = Bundle.load(root)
    b.add_file("calibration.png", "calibration-plot")
    b.save()
    (root / "calibration.png").write_bytes(b"\x89PNG another plot")  # a kill between plot and manifest
    assert Bundle.load(root).graph("fp32").name == "model.onnx"
    (root / "calibration.png").unlink()
    Bundle.load(root)
    with pytest.raises(VCEError, match="missing"):
        Bundle.load(root).file("calibration.png")  # checked when something does read it


# --- the manifest's schema ------------------------------------------------------------------------


def _set(path: str, value: Any) -> Any:
    def change(d: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        for key in parents:
            d = d[key]
        d[last] = value

    return change


BAD_MANIFESTS: dict[str, tuple[Any, str]] = {
    "files_string": (_set("files", "model.onnx"), "files must be a JSON object"),
    "files_list": (_set("files", ["model.onnx"]), "files must be a JSON object"),
    "graphs_string": (_set("graphs", "model.onnx"), "graphs must be a JSON object"),
    "graphs_list": (_set("graphs", ["model.onnx"]), "graphs must be a JSON object"),
    "thresholds_strings": (_set("thresholds.mouth", "0.5"), "thresholds.mouth must be a number"),
    "thresholds_count": (lambda d: d["thresholds"].pop("polyp"), "missing: ['polyp']"),
    "thresholds_list": (_set("thresholds", [0.5] * 16), "an object {label: threshold}"),
    "median_string": (_set("postprocess.median", "7"), "postprocess.median must be an integer"),
    "median_float": (_set("postprocess.median", 7.5), "postprocess.median must be an integer"),
    "postprocess_null": (_set("postprocess", None), "postprocess must be a JSON object"),
    "image_size_zero": (
        _set("preprocess.image_size", 0),
        "preprocess.image_size must be an integer in 8..2048",
    ),
    "image_size_string": (_set("preprocess.image_size", "224"), "preprocess.image_size must be an integer"),
    "mean_length_2": (_set("preprocess.mean", [0.5, 0.5]), "preprocess.mean must be a list of 3 items"),
    "std_zero": (_set("preprocess.std", [0.2, 0.0, 0.2]), "preprocess.std[1] must be a number"),
    "channel_order_bgr": (
        _set("preprocess.channel_order", "BGR"),
        "preprocess.channel_order must be one of 'RGB'",
    ),
    "layout_nhwc": (_set("preprocess.layout", "NHWC"), "preprocess.layout must be one of 'NCHW'"),
    "crop_none": (_set("preprocess.crop", "none"), "preprocess.crop must be one of 'center'"),
    "resize_unknown": (
        _set("preprocess.resize", "fit"),
        "preprocess.resize must be one of 'shortest', 'squash'",
    ),
    "preprocess_unknown_key": (
        _set("preprocess.flip", True),
        "preprocess.flip is not a field this vce knows",
    ),
    "unknown_top_level": (_set("extra_graphs", {}), "extra_graphs is not a field this vce knows"),
    "labels_reordered": (lambda d: d["labels"].reverse(), "not the 17 RARE-VISION labels"),
    "sha256_not_hex": (
        _set("files.model.onnx", {"role": "fp32", "sha256": 5}),
        "files.model.onnx.sha256 must be a sha256",
    ),
    "deep_record": (
        _set("calibration", json.loads("[" * 50 + "]" * 50)),
        "calibration must be a JSON object",
    ),
    "deep_record_object": (
        _set("calibration", {"a": json.loads("[" * 50 + "]" * 50)}),
        "nested more than 32",
    ),
    "format": (_set("format", "something-else"), "format must be one of 'vce-bundle'"),
}


@pytest.mark.parametrize("case", sorted(BAD_MANIFESTS))
def test_manifests_of_the_wrong_shape_are_one_clear_line(case: str, tmp_path: Path) -> None:
    change, expect = BAD_MANIFESTS[case]
    root = _bundle(tmp_path / "bundle")
    if case == "sha256_not_hex":
        _edit(root, lambda d: d["files"].__setitem__("model.onnx", {"role": "fp32", "sha256": 5}))
    else:
        _edit(root, change)
    with pytest.raises(VCEError) as exc:
        Bundle.load(root, verify=False)
    message = str(exc.value)
    assert message.startswith(str(root / MANIFEST)) and expect in message, message
    assert "\n" not in message


@pytest.mark.parametrize("text", ["[]", '"bundle"', "[" * 200_000 + "]" * 200_000, '{"a": ' * 200_000])
def test_a_manifest_that_is_not_an_object_or_nested_200k_deep(
    text: str, tmp_path: Path, folder: Path, capsys, monkeypatch
) -> None:
    root = _bundle(tmp_path / "bundle")
    (root / MANIFEST).write_text(text)
    _refused(capsys, monkeypatch, folder, root, tmp_path / "out", "manifest.json")


def test_the_cli_refuses_a_bad_manifest_with_one_line(
    tmp_path: Path, folder: Path, capsys, monkeypatch
) -> None:
    root = _bundle(tmp_path / "bundle")
    _edit(root, _set("postprocess.median", "7"))
    _refused(capsys, monkeypatch, folder, root, tmp_path / "out", "postprocess.median must be an integer")


def test_vce_never_writes_an_invalid_manifest(tmp_path: Path) -> None:
    b = Bundle.load(_bundle(tmp_path / "bundle"))
    before = (b.root / MANIFEST).read_text()
    b.manifest.preprocess["image_size"] = "224"
    with pytest.raises(VCEError, match=r"preprocess\.image_size"):
        b.save()
    assert (b.root / MANIFEST).read_text() == before


def test_a_good_manifest_round_trips(tmp_path: Path) -> None:
    b = Bundle.load(_bundle(tmp_path / "bundle"))
    again = Manifest.from_dict(json.loads((b.root / MANIFEST).read_text()))
    assert again.to_dict() == b.manifest.to_dict()


# --- graphs that do not match their manifest ------------------------------------------------------


def test_an_image_size_that_differs_from_the_graph_is_one_line(
    tmp_path: Path, folder: Path, capsys, monkeypatch
) -> None:
    root = _bundle(tmp_path / "bundle", size=64)  # the bundle's preprocessing makes 32x32
    line = _refused(capsys, monkeypatch, folder, root, tmp_path / "out", "takes 3x64x64 images")
    assert "makes 32x32" in line


def test_a_model_with_an_extra_required_input_is_one_line(
    tmp_path: Path, folder: Path, capsys, monkeypatch
) -> None:
    root = _bundle(tmp_path / "bundle", extra_input=True)
    _refused(capsys, monkeypatch, folder, root, tmp_path / "out", "needs 2 inputs (images, mask)")
    with pytest.raises(VCEError, match="needs 2 inputs"):
        create_runner("ort-cpu", root / "model.onnx")


def test_probabilities_outside_0_1_from_a_model_are_one_line(
    tmp_path: Path, folder: Path, capsys, monkeypatch
) -> None:
    root = _bundle(tmp_path / "bundle", raw_probs=True)  # "probs" = logits, in [-8, 2]
    _refused(capsys, monkeypatch, folder, root, tmp_path / "out", "outside [0, 1]")


def test_good_bundle_still_runs(tmp_path: Path, folder: Path, capsys, monkeypatch) -> None:
    root = _bundle(tmp_path / "bundle", raw_probs=False)
    code, err = _run(capsys, monkeypatch, folder, root, tmp_path / "out")
    assert code == 0, err
    assert read_frames_csv(tmp_path / "out" / "frames.csv")["vid"].values.max() <= 1.0


def test_loading_a_bundle_needs_no_onnx_package(tmp_path: Path) -> None:
    """vce-run's checks (schema, hashes, the graph scan) run where onnx is not installed."""
    root = _bundle(tmp_path / "bundle", external="secret.bin")
    write_secret(root / "secret.bin")
    code = (
        "import importlib.abc, sys\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('onnx', 'torch'):\n"
        "            raise ImportError(name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "from vce.runtime.bundle import Bundle\n"
        "from vce.runtime.errors import VCEError\n"
        "try:\n"
        f"    Bundle.load({str(root)!r})\n"
        "except VCEError as exc:\n"
        "    print('REFUSED', 'external files' in str(exc))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == "REFUSED True", proc.stdout + proc.stderr


def test_the_schema_covers_every_pre_and_postprocessing_field() -> None:
    """A field added to PreprocessSpec/PostprocessConfig/Manifest needs its line in the schema
    (vce.runtime.manifest_schema): closed sections refuse keys they do not know."""
    import dataclasses

    from vce.runtime.manifest_schema import MANIFEST_FIELDS, POSTPROCESS_FIELDS, PREPROCESS_FIELDS
    from vce.runtime.postprocess import PostprocessConfig
    from vce.runtime.preprocess import PreprocessSpec

    assert set(PREPROCESS_FIELDS) == {f.name for f in dataclasses.fields(PreprocessSpec)}
    assert set(POSTPROCESS_FIELDS) == {f.name for f in dataclasses.fields(PostprocessConfig)}
    assert set(MANIFEST_FIELDS) == set(Manifest().to_dict())
