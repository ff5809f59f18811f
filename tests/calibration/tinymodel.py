"""A tiny ViT-like ONNX graph (patch conv, LayerNorm, attention, GELU MLP, 17 sigmoid outputs) for INT8 tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def build_tiny_vit(
    path: Path, image_size: int = 32, dim: int = 32, seed: int = 0, *, nan: bool = False
) -> Path:
    """``nan``: the probabilities are multiplied by NaN (a broken model)."""
    rng = np.random.default_rng(seed)
    patch = 8
    tokens = (image_size // patch) ** 2

    def w(name: str, *shape: int, scale: float = 0.15) -> onnx.TensorProto:
        return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)

    inits = [
        w("conv_w", dim, 3, patch, patch, scale=0.05),
        w("conv_b", dim),
        numpy_helper.from_array(np.array([0, dim, tokens], dtype=np.int64), "shape_tok"),
        numpy_helper.from_array(np.ones(dim, np.float32), "ln_g"),
        numpy_helper.from_array(np.zeros(dim, np.float32), "ln_b"),
        w("wq", dim, dim),
        w("wk", dim, dim),
        w("wv", dim, dim),
        w("wo", dim, dim),
        w("w1", dim, 2 * dim),
        w("b1", 2 * dim),
        w("w2", 2 * dim, dim),
        numpy_helper.from_array(np.array(1.0 / np.sqrt(dim), np.float32), "scale"),
        numpy_helper.from_array(np.array(np.sqrt(0.5), np.float32), "inv_sqrt2"),
        numpy_helper.from_array(np.array(0.5, np.float32), "half"),
        numpy_helper.from_array(np.array(1.0, np.float32), "one"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1"),
        w("head_w", dim, 17, scale=0.15),
        w("head_b", 17, scale=0.3),
    ]
    n = helper.make_node
    nodes = [
        n("Conv", ["images", "conv_w", "conv_b"], ["c"], strides=[patch, patch], kernel_shape=[patch, patch]),
        n("Reshape", ["c", "shape_tok"], ["t0"]),
        n("Transpose", ["t0"], ["x0"], perm=[0, 2, 1]),
        n("LayerNormalization", ["x0", "ln_g", "ln_b"], ["h"], axis=-1),
        n("MatMul", ["h", "wq"], ["q"]),
        n("MatMul", ["h", "wk"], ["k"]),
        n("MatMul", ["h", "wv"], ["v"]),
        n("Transpose", ["k"], ["kt"], perm=[0, 2, 1]),
        n("MatMul", ["q", "kt"], ["s0"]),
        n("Mul", ["s0", "scale"], ["s"]),
        n("Softmax", ["s"], ["a"], axis=-1),
        n("MatMul", ["a", "v"], ["o0"]),
        n("MatMul", ["o0", "wo"], ["o"]),
        n("Add", ["x0", "o"], ["x1"]),
        n("LayerNormalization", ["x1", "ln_g", "ln_b"], ["h2"], axis=-1),
        n("MatMul", ["h2", "w1"], ["m0"]),
        n("Add", ["m0", "b1"], ["m1"]),
        n("Mul", ["m1", "inv_sqrt2"], ["g0"]),
        n("Erf", ["g0"], ["g1"]),
        n("Add", ["g1", "one"], ["g2"]),
        n("Mul", ["m1", "g2"], ["g3"]),
        n("Mul", ["g3", "half"], ["g4"]),
        n("MatMul", ["g4", "w2"], ["m2"]),
        n("Add", ["x1", "m2"], ["x2"]),
        n("ReduceMean", ["x2", "axis1"], ["pooled0"], keepdims=0),
        n("Gemm", ["pooled0", "head_w", "head_b"], ["logits"]),
        n("Sigmoid", ["logits"], ["p0" if nan else "probs"]),
    ]
    if nan:
        inits.append(numpy_helper.from_array(np.array(np.nan, np.float32), "nan"))
        nodes.append(n("Mul", ["p0", "nan"], ["probs"]))
    graph = helper.make_graph(
        nodes,
        "tiny_vit",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, image_size, image_size])],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 17]),
            helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 17]),
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path
