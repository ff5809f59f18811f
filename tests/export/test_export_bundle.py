"""Bundles written by vce-export: manifest contents, hashes, ONNX metadata_props, fp16 graph."""

from __future__ import annotations

import json

import onnx
import pytest

from vce.export.bundle_io import add_fp16, write_bundle
from vce.runtime.bundle import Bundle
from vce.runtime.errors import VCEError
from vce.runtime.labels import LABELS
from vce.train.factory import resolve_model


def _props(path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


def test_manifest_of_an_exported_bundle(tiny_bundle):
    b = Bundle.load(tiny_bundle)  # verifies every listed file's sha256
    m = b.manifest
    assert m.schema_version == 1
    assert m.labels == list(LABELS)
    assert m.input == {"name": "images", "dtype": "float32", "layout": "NCHW", "shape": ["N", 3, 224, 224]}
    assert m.files["model.onnx"]["input"] == m.input == m.files["model_fp16.onnx"]["input"]
    assert m.thresholds == dict.fromkeys(LABELS, 0.5)
    assert m.postprocess == {"median": 7, "min_run": 3, "max_gap": 5, "grouping": "tuple"}
    assert m.preprocess["mean"] == pytest.approx([0.48145466, 0.4578275, 0.40821073])
    assert m.model["variant"] == "paper" and m.model["name"] == "tiny"
    assert m.model["random_weights"] is True and m.model["seed"] == 0
    assert m.model["exporter"] == "torchscript" and m.model["opset"] == 17
    assert m.graphs == {"fp32": "model.onnx", "fp16": "model_fp16.onnx"}
    for name in ("model.onnx", "model_fp16.onnx"):
        assert len(m.files[name]["sha256"]) == 64
    assert m.files["model_fp16.onnx"]["check"]["max_abs_probs"] < 1e-2


def test_labels_and_thresholds_in_metadata_props(tiny_bundle):
    for name in ("model.onnx", "model_fp16.onnx"):
        props = _props(tiny_bundle / name)
        assert json.loads(props["vce.labels"]) == list(LABELS)
        assert json.loads(props["vce.thresholds"]) == dict.fromkeys(LABELS, 0.5)
        assert props["vce.variant"] == "paper"


def test_tampered_bundle_is_refused(tmp_path, tiny_bundle):
    import shutil

    copy = tmp_path / "b"
    shutil.copytree(tiny_bundle, copy)
    with open(copy / "model_fp16.onnx", "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(VCEError, match="sha256"):
        Bundle.load(copy)


def test_reexport_clears_stale_graphs(tmp_path, tiny_model):
    root = tmp_path / "b"
    write_bundle(tiny_model("paper"), root)
    add_fp16(root)
    assert (root / "model_fp16.onnx").is_file()
    write_bundle(tiny_model("paper"), root, opset=18)
    b = Bundle.load(root)
    assert b.manifest.graphs == {"fp32": "model.onnx"}
    assert not (root / "model_fp16.onnx").exists()


def test_resolve_model_sources(tmp_path):
    from vce.train.checkpoint import save_model

    model, info = resolve_model("tiny", "diff", seed=3)
    assert info["variant"] == "diff" and info["random_weights"] is True
    save_model(model, tmp_path / "run")
    loaded, info2 = resolve_model(str(tmp_path / "run"))
    assert loaded.config.variant == "diff" and not loaded.training
    assert info2["random_weights"] is False
    # the model's identity is its weights file, as model_config.json (and val_probs.csv's sidecar)
    # record it: files added to the run folder later do not change it
    recorded = json.loads((tmp_path / "run" / "model_config.json").read_text())["weights_sha256"]
    assert info2["weights_sha256"] == recorded and "source_sha256" not in info2
    (tmp_path / "run" / "val_probs.csv").write_text("video,frame\n")
    assert resolve_model(str(tmp_path / "run"))[1]["weights_sha256"] == recorded
    assert resolve_model(str(tmp_path / "run" / "model.safetensors"))[1]["weights_sha256"] == recorded
    assert info2["config"] == info["config"]
    with pytest.raises(VCEError, match="only"):
        resolve_model(str(tmp_path / "run"), "paper")
    with pytest.raises(VCEError, match="neither a checkpoint"):
        resolve_model(str(tmp_path / "missing"))
