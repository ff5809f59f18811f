"""The uint8 graph (``vce-export onnx --input uint8``): bit-identical to the float graph fed by
``normalise()``, its fp16 and INT8 variants, audit, parity and vce-run feeding it uint8."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest

from vce.export.bundle_io import add_fp16, write_bundle
from vce.export.fp16 import precision_split
from vce.export.parity import run_parity, synthetic_frames
from vce.export.uint8_input import PREAMBLE_PREFIX, add_uint8_input
from vce.runtime.backends import create_runner
from vce.runtime.bundle import Bundle
from vce.runtime.errors import VCEError
from vce.runtime.graph_audit import audit_model
from vce.runtime.preprocess import normalise
from vce.train.factory import resolve_model

PREAMBLE_OPS = ["Transpose", "Cast", "Mul", "Sub", "Mul"]


@pytest.fixture(scope="module")
def u8_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny paper model of ``tiny_bundle`` (same weights), exported with a uint8 input, + fp16."""
    root = tmp_path_factory.mktemp("u8") / "tiny_u8"
    model, info = resolve_model("tiny", "paper", seed=0)
    write_bundle(model, root, model_info=info, input_kind="uint8")
    add_fp16(root)
    return root


def _crops(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 224, 224, 3), dtype=np.uint8)


def test_manifest_and_graph_describe_a_uint8_nhwc_input(u8_bundle: Path) -> None:
    b = Bundle.load(u8_bundle)
    want = {"name": "images", "dtype": "uint8", "layout": "NHWC", "shape": ["N", 224, 224, 3]}
    assert b.manifest.input == want
    assert b.graph_input("model.onnx") == want == b.graph_input("model_fp16.onnx")  # fp16 carries it
    model = onnx.load(str(u8_bundle / "model.onnx"))
    assert [n.op_type for n in model.graph.node[:5]] == PREAMBLE_OPS
    assert all(n.name.startswith(PREAMBLE_PREFIX) for n in model.graph.node[:5])
    report = audit_model(model, input_kind="uint8")
    assert report.ok, report.problems
    assert report.inputs["images"] == {"dtype": "uint8", "shape": ["N", 224, 224, 3]}
    # the float contract refuses it, and the uint8 contract refuses a float graph
    assert any("expected float32" in p for p in audit_model(model, input_kind="float32").problems)


def test_uint8_graph_is_bit_identical_to_the_float_graph_fed_by_normalise(
    u8_bundle: Path, tiny_bundle: Path
) -> None:
    crops = _crops(5)
    spec = Bundle.load(tiny_bundle).manifest.preprocess_spec()
    with (
        create_runner("ort-cpu", tiny_bundle / "model.onnx") as f32,
        create_runner("ort-cpu", u8_bundle / "model.onnx") as u8,
    ):
        assert f32.input_dtype == np.float32 and u8.input_dtype == np.uint8
        ref = f32.infer(normalise(crops, spec))
        got = u8.infer(crops)
        for name in ("logits", "probs"):
            assert np.array_equal(got[name], ref[name]), name
        with pytest.raises(VCEError, match=r"takes uint8 RGB crops \[N, 224, 224, 3\], got float32"):
            u8.infer(normalise(crops, spec))
        with pytest.raises(VCEError, match=r"takes float \[N, 3, 224, 224\], got uint8"):
            f32.infer(crops)


def test_preamble_is_the_lookup_tables_arithmetic_on_every_value(tmp_path: Path) -> None:
    """Graph of the preamble alone: all 256 values per channel give normalise()'s table, bit for bit."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["images"], ["out"])],
        "preamble_only",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, 16, 16])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 3, 16, 16])],
    )
    model = add_uint8_input(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), _spec())
    onnx.save(model, str(tmp_path / "p.onnx"))
    import onnxruntime as ort

    sess = ort.InferenceSession(str(tmp_path / "p.onnx"), providers=["CPUExecutionProvider"])
    values = np.broadcast_to(np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1), (1, 16, 16, 3)).copy()
    (out,) = sess.run(None, {"images": values})
    assert np.array_equal(out, normalise(values, _spec()))


def _spec():
    from vce.runtime.preprocess import BIOMEDCLIP

    return BIOMEDCLIP


def test_add_uint8_input_refuses_a_graph_that_is_not_float_nchw(u8_bundle: Path) -> None:
    model = onnx.load(str(u8_bundle / "model.onnx"))
    with pytest.raises(VCEError, match="not float32 \\[N,3,H,W\\]"):
        add_uint8_input(model, _spec())


def test_fp16_variant_keeps_the_preamble_in_fp32(u8_bundle: Path) -> None:
    m16 = onnx.load(str(u8_bundle / "model_fp16.onnx"))
    assert m16.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    inits = {i.name: i.data_type for i in m16.graph.initializer}
    for key in ("scale", "mean", "inv_std"):
        assert inits[PREAMBLE_PREFIX + key] == onnx.TensorProto.FLOAT
    cast = next(n for n in m16.graph.node if n.name == PREAMBLE_PREFIX + "cast")
    assert next(a.i for a in cast.attribute if a.name == "to") == onnx.TensorProto.FLOAT
    kept, fraction = precision_split(m16)
    assert (
        kept.get("Sub", 0) >= 1 and kept.get("Mul", 0) >= 2 and fraction > 0.5
    )  # (the Transpose is on uint8)
    entry = Bundle.load(u8_bundle).manifest.files["model_fp16.onnx"]
    assert entry["check"]["ran"] and entry["check"]["max_abs_probs"] < 1e-2


def test_parity_covers_the_uint8_graphs(u8_bundle: Path) -> None:
    bundle = Bundle.load(u8_bundle)
    model, _ = resolve_model("tiny", "paper", seed=0)
    crops, frames = synthetic_frames(bundle.manifest.preprocess_spec(), 12)
    report = run_parity(model, bundle, crops, frames, batch=4, source="synthetic")
    assert [t.target for t in report.targets][:2] == ["ort-cpu", "ort-cpu-fp16"]
    assert report.targets[0].outputs["probs"].max_abs <= 1e-4 and report.passed
    with pytest.raises(VCEError, match="parity runs on uint8 RGB crops"):
        run_parity(model, bundle, normalise(crops), frames, batch=4)


def test_int8_graphs_of_a_uint8_bundle_take_uint8(u8_bundle: Path, tmp_path: Path) -> None:
    from vce.calibration.int8 import quantize_bundle

    root = tmp_path / "b"
    shutil.copytree(u8_bundle, root)
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(12):
        img = np.random.default_rng(i).integers(0, 256, (64, 80, 3), dtype=np.uint8)
        cv2.imwrite(str(frames / f"frame_{i:06d}.png"), cv2.GaussianBlur(img, (0, 0), 3))
    reports = quantize_bundle(root, frames_dir=frames, count=12, force=True)
    assert [r.added for r in reports] == [True, True]
    b = Bundle.load(root)
    for role in ("int8", "int8-dynamic"):
        name = b.manifest.graphs[role]
        assert b.graph_input(name)["dtype"] == "uint8"
        with create_runner("ort-cpu", root / name) as runner:
            assert runner.input_dtype == np.uint8
            assert runner.infer(_crops(2))["probs"].shape == (2, 17)


def test_vce_run_feeds_uint8_and_writes_the_same_frames_csv(
    u8_bundle: Path, tiny_bundle: Path, tmp_path: Path
) -> None:
    from vce.runtime.run import RunOptions, run
    from vce.train.synth import iter_video

    _, it = iter_video(np.random.default_rng(3), 24, size=256)
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (256, 256))
    for frame in it:
        writer.write(np.ascontiguousarray(frame[..., ::-1]))
    writer.release()
    opts = RunOptions(backend="ort-cpu", graph="fp32", batch=5, plots=False)
    a = run([video], tiny_bundle, tmp_path / "f32", opts)
    b = run([video], u8_bundle, tmp_path / "u8", opts)
    assert a.frames == b.frames == 24
    assert (tmp_path / "u8" / "frames.csv").read_bytes() == (tmp_path / "f32" / "frames.csv").read_bytes()
    assert (tmp_path / "u8" / "events.json").read_bytes() == (tmp_path / "f32" / "events.json").read_bytes()


def test_one_check_of_the_input_kind() -> None:
    """The export and the manifest description refuse an unknown input kind with the same one line."""
    from vce.export.uint8_input import check_input_kind, input_description

    assert check_input_kind("uint8") == "uint8"
    for call in (lambda: check_input_kind("float16"), lambda: input_description("float16", 224)):
        with pytest.raises(VCEError, match=r"unknown graph input 'float16'; choose one of float32, uint8"):
            call()
