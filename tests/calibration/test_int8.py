"""INT8: QDQ and dynamic graphs of a small ViT-like ONNX, default-domain only, drift within tolerance."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip("onnx")

from tinymodel import build_tiny_vit

from vce.calibration.cli import calibrate_app
from vce.calibration.int8 import read_frames
from vce.runtime.bundle import Bundle, Manifest
from vce.runtime.errors import VCEError
from vce.runtime.graph_audit import audit_file
from vce.runtime.preprocess import PreprocessSpec

SIZE = 32


def _frames(folder, n: int = 40) -> None:
    folder.mkdir()
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:48, 0:48]
    for i in range(n):  # smooth colour fields that drift over time, like a capsule video
        phase = i / n * 2 * np.pi
        img = np.stack(
            [127 + 100 * np.sin(xx / 9 + phase + k) * np.cos(yy / 13 - k) for k in range(3)], axis=-1
        )
        img = np.clip(img + rng.normal(0, 4, img.shape), 0, 255).astype(np.uint8)
        cv2.imwrite(str(folder / f"frame_{i:06d}.png"), img)


@pytest.fixture()
def bundle(tmp_path):
    root = tmp_path / "bundle"
    spec = PreprocessSpec(image_size=SIZE, resample="cv2-area")
    b = Bundle.create(root, Manifest(preprocess=spec.to_dict()))
    build_tiny_vit(root / "model.onnx", image_size=SIZE)
    b.add_file("model.onnx", "fp32")
    b.save()
    _frames(tmp_path / "frames")
    return root


def test_int8_graphs_added_default_domain_and_within_drift(bundle, tmp_path) -> None:
    res = CliRunner().invoke(
        calibrate_app, ["int8", str(bundle), "--frames", str(tmp_path / "frames"), "--count", "40"]
    )
    assert res.exit_code == 0, res.output
    b = Bundle.load(bundle)  # hashes verified
    assert b.manifest.graphs["int8"] == "model_int8.onnx"
    assert b.manifest.graphs["int8-dynamic"] == "model_int8_dynamic.onnx"
    static = audit_file(bundle / "model_int8.onnx", image_size=SIZE, input_kind="float32")
    dynamic = audit_file(bundle / "model_int8_dynamic.onnx", image_size=SIZE, input_kind="float32")
    assert static.ok and dynamic.ok, static.problems + dynamic.problems  # the one audit, as at export
    static_ops, dynamic_ops = static.op_histogram, dynamic.op_histogram
    assert static_ops["QuantizeLinear"] > 0 and static_ops["DequantizeLinear"] > 0
    assert dynamic_ops["MatMulInteger"] > 0
    assert static_ops["LayerNormalization"] == 2 and static_ops["Softmax"] == 1  # kept in float
    for name in ("model_int8.onnx", "model_int8_dynamic.onnx"):
        entry = b.manifest.files[name]
        assert entry["within_tolerance"] is True
        assert entry["drift"]["max_abs_prob"] <= 0.05
        assert entry["drift"]["frames"] == 20


def test_drift_beyond_tolerance_is_refused_unless_forced(bundle, tmp_path) -> None:
    args = ["int8", str(bundle), "--frames", str(tmp_path / "frames"), "--count", "12", "--mode", "dynamic"]
    res = CliRunner().invoke(calibrate_app, [*args, "--max-prob-drift", "0"])
    assert res.exit_code != 0 and "beyond tolerance" in str(res.exception)
    b = Bundle.load(bundle)
    assert "int8-dynamic" not in b.manifest.graphs
    assert b.manifest.calibration["int8"]["reports"][0]["within_tolerance"] is False
    assert (bundle / "model_int8_dynamic.rejected.onnx").is_file()  # kept for inspection, not listed
    assert not (bundle / "model_int8_dynamic.onnx").exists()
    res = CliRunner().invoke(calibrate_app, [*args, "--max-prob-drift", "0", "--force"])
    assert res.exit_code == 0, res.output
    entry = Bundle.load(bundle).manifest.files["model_int8_dynamic.onnx"]
    assert entry["within_tolerance"] is False and entry["drift"]["max_abs_prob"] > 0
    # a later rejected graph leaves the listed one in place, hashes intact
    res = CliRunner().invoke(calibrate_app, [*args, "--max-prob-drift", "0"])
    assert res.exit_code != 0
    b = Bundle.load(bundle)  # verifies every listed file's sha256
    assert b.manifest.graphs["int8-dynamic"] == "model_int8_dynamic.onnx"
    assert b.manifest.files["model_int8_dynamic.onnx"]["sha256"] == entry["sha256"]
    assert not [p.name for p in bundle.iterdir() if "candidate" in p.name or p.suffix == ".tmp"]


def test_a_model_with_nan_outputs_is_refused_before_quantizing(tmp_path) -> None:
    root = tmp_path / "nan_bundle"
    b = Bundle.create(
        root, Manifest(preprocess=PreprocessSpec(image_size=SIZE, resample="cv2-area").to_dict())
    )
    build_tiny_vit(root / "model.onnx", image_size=SIZE, nan=True)
    b.add_file("model.onnx", "fp32")
    b.save()
    _frames(tmp_path / "frames", n=8)
    res = CliRunner().invoke(calibrate_app, ["int8", str(root), "--frames", str(tmp_path / "frames")])
    assert res.exit_code != 0 and "the fp32 graph gives NaN/Inf probabilities on 4 of 4" in str(res.exception)
    assert sorted(p.name for p in root.iterdir()) == ["manifest.json", "model.onnx"]


def test_frames_from_a_video(tmp_path) -> None:
    _frames(tmp_path / "frames", n=30)
    path = tmp_path / "v.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (48, 48))
    for f in sorted((tmp_path / "frames").iterdir()):
        writer.write(cv2.imread(str(f)))
    writer.release()
    got = read_frames(video=path, count=10, spec=PreprocessSpec(image_size=SIZE))
    assert got.images.shape == (10, 3, SIZE, SIZE) and got.numbers.tolist() == list(range(0, 30, 3))
    folder = read_frames(frames_dir=tmp_path / "frames", count=4, spec=PreprocessSpec(image_size=SIZE))
    assert folder.numbers.tolist() == [0, 10, 19, 29]  # spread over the folder
    np.testing.assert_allclose(folder.images[0], got.images[0], atol=0.5)  # same frame, MJPG-lossy
    with pytest.raises(VCEError, match="exactly one source"):
        read_frames(count=3)
    (tmp_path / "noise.mp4").write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(VCEError, match=r"noise\.mp4: unreadable or corrupt video"):
        read_frames(video=tmp_path / "noise.mp4")
    (tmp_path / "frames" / "frame_000010.png").write_bytes(b"broken")
    with pytest.raises(VCEError, match=r"frame_000010\.png: cannot read this image"):
        read_frames(frames_dir=tmp_path / "frames", count=4)


def test_int8_table_shows_whole_graph_names_at_80_columns(bundle, tmp_path, monkeypatch) -> None:
    from rich.console import Console

    import vce.calibration.cli as cli

    screen = Console(width=80, record=True, color_system=None)
    monkeypatch.setattr(cli, "console", screen)
    res = CliRunner().invoke(
        calibrate_app, ["int8", str(bundle), "--frames", str(tmp_path / "frames"), "--count", "40"]
    )
    assert res.exit_code == 0, res.output
    text = screen.export_text()
    lines = text.splitlines()
    assert all(len(line) <= 80 for line in lines) and "…" not in text
    rows = [line.split() for line in lines if line.split()[:1] in (["added"], ["forced"], ["NOT"])]
    assert [row[1] for row in rows] == ["model_int8.onnx", "model_int8_dynamic.onnx"]
    assert "Δprob: max |probability difference|" in " ".join(text.split())


@pytest.mark.parametrize("sabotage", ["foreign op", "wrong output"])
def test_an_int8_graph_failing_the_audit_is_refused(bundle, tmp_path, monkeypatch, sabotage) -> None:
    """The quantizer's graph goes through the one graph audit (as the fp32 graph at export)."""
    import onnx
    from onnx import helper

    from vce.calibration import int8

    real = int8.quantize_dynamic_int8

    def quantized(fp32, output):
        real(fp32, output)
        model = onnx.load(str(output))
        if sabotage == "foreign op":
            model.graph.node.append(helper.make_node("MyOp", ["probs"], ["junk"], domain="com.microsoft"))
            model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
        else:
            model.graph.output[1].type.tensor_type.elem_type = onnx.TensorProto.DOUBLE
        onnx.save(model, str(output))
        return output

    monkeypatch.setattr(int8, "quantize_dynamic_int8", quantized)
    reason = "custom-domain ops" if sabotage == "foreign op" else r"output probs is float64"
    with pytest.raises(
        VCEError, match=f"model_int8_dynamic.onnx: the INT8 graph fails the audit: .*{reason}"
    ):
        int8.quantize_bundle(bundle, frames_dir=tmp_path / "frames", modes=("dynamic",), count=8)
    assert sorted(p.name for p in bundle.iterdir()) == ["manifest.json", "model.onnx"]  # no candidate left
    assert "int8-dynamic" not in Bundle.load(bundle).manifest.graphs
