"""The typed fp16 conversion: what stays fp32, the converter's pitfalls, and the numbers."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from vce.export.fp16 import convert_fp16, lambda_nodes, precision_split
from vce.runtime.backends import create_runner


def _diff_graph(shared_bias: bool = False):
    """images -> pool/flatten [N,3] -> MatMul [3,34] -> split x1,x2 [N,17]; q-like scale Mul;
    logits = x1 - lam * x2 (lam a scalar constant); LayerNorm on the way; probs = Sigmoid(logits)."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((3, 34)).astype(np.float32), "w"),
        numpy_helper.from_array(np.array(0.125, np.float32), "scale"),
        numpy_helper.from_array(np.array(0.8, np.float32), "lam"),
        numpy_helper.from_array(np.ones(34, np.float32), "ln_w"),
        numpy_helper.from_array(np.zeros(34, np.float32), "ln_b"),
        numpy_helper.from_array(np.array([17, 17], np.int64), "split"),
    ]
    bias = "ln_b" if shared_bias else "b2"
    if not shared_bias:
        inits.append(numpy_helper.from_array(np.zeros(34, np.float32), "b2"))
    nodes = [
        helper.make_node("GlobalAveragePool", ["images"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("MatMul", ["flat", "w"], ["h"], name="proj"),
        helper.make_node("Add", ["h", bias], ["hb"], name="bias_add"),
        helper.make_node("LayerNormalization", ["hb", "ln_w", "ln_b"], ["hn"], name="ln"),
        helper.make_node("Mul", ["hn", "scale"], ["hs"], name="q_scale"),
        helper.make_node("Split", ["hs", "split"], ["x1", "x2"], axis=1),
        helper.make_node("Mul", ["x2", "lam"], ["lx2"], name="lam_mul"),
        helper.make_node("Sub", ["x1", "lx2"], ["logits"], name="lam_sub"),
        helper.make_node("Sigmoid", ["logits"], ["probs"], name="sig"),
    ]
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, 224, 224])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", 17]) for n in ("logits", "probs")],
        inits,
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_lambda_application_is_found_and_the_q_scale_is_not():
    names = lambda_nodes(_diff_graph())
    assert "lam_mul" in names and "lam_sub" in names
    assert "q_scale" not in names  # a scalar Mul that does not feed a Sub stays fp16


def test_parameter_only_computation_is_kept():
    m = _diff_graph()
    # lam computed from parameters (as an unfolded lambda would be): exp(a) - exp(b) + 0.8
    m.graph.initializer.extend(
        [
            numpy_helper.from_array(np.array(v, np.float32), n)
            for n, v in (("la", 0.1), ("lb", 0.05), ("li", 0.8))
        ]
    )
    m.graph.initializer.remove(next(i for i in m.graph.initializer if i.name == "lam"))
    pre = [
        helper.make_node("Exp", ["la"], ["ea"], name="exp_a"),
        helper.make_node("Exp", ["lb"], ["eb"], name="exp_b"),
        helper.make_node("Sub", ["ea", "eb"], ["d"], name="lam_diff"),
        helper.make_node("Add", ["d", "li"], ["lam"], name="lam_add"),
    ]
    for i, n in enumerate(pre):
        m.graph.node.insert(i, n)
    names = lambda_nodes(m)
    assert {"exp_a", "exp_b", "lam_diff", "lam_add", "lam_mul", "lam_sub"} <= set(names)


def _convert(tmp_path, model):
    src, dst = tmp_path / "m.onnx", tmp_path / "m16.onnx"
    onnx.save(model, str(src))
    return src, dst, convert_fp16(src, dst)


def test_fp16_graph_types_and_numbers(tmp_path):
    src, dst, rep = _convert(tmp_path, _diff_graph())
    m16 = onnx.load(str(dst))
    # fp32 inputs/outputs
    assert [o.type.tensor_type.elem_type for o in m16.graph.output] == [TensorProto.FLOAT] * 2
    assert m16.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    # LayerNorm, Sigmoid and the lambda application stay fp32; the MatMul is fp16
    assert {"LayerNormalization", "Sigmoid", "Mul", "Sub"} <= set(rep.kept_fp32)
    assert rep.kept_fp32["Mul"] == 1  # the lambda Mul only, not the q scale
    weights = {i.name: i.data_type for i in m16.graph.initializer}
    assert weights["w"] == TensorProto.FLOAT16
    assert 0 < rep.fp16_fraction < 1
    assert rep.check["ran"] is True
    assert 0 < rep.check["max_abs_probs"] < 1e-2
    # the check's figure is what ORT really gives
    x = np.random.default_rng(5).standard_normal((3, 3, 224, 224), dtype=np.float32)
    with create_runner("ort-cpu", src) as a, create_runner("ort-cpu", dst) as b:
        d = np.abs(a.infer(x)["probs"] - b.infer(x)["probs"]).max()
    assert 0 < d < 1e-2


def test_initializer_shared_by_fp32_and_fp16_nodes(tmp_path):
    # the exporters' optimisers deduplicate equal tensors (zero biases): LayerNorm and an Add share one
    _, dst, rep = _convert(tmp_path, _diff_graph(shared_bias=True))
    assert rep.audit.ok
    m16 = onnx.load(str(dst))
    types = {i.name: i.data_type for i in m16.graph.initializer}
    assert types["ln_b"] == TensorProto.FLOAT and types["ln_b__fp16"] == TensorProto.FLOAT16


def test_precision_split_of_an_fp32_graph_is_zero():
    kept, fraction = precision_split(_diff_graph())
    assert fraction == 0.0
    assert kept["MatMul"] == 1
