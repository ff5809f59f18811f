"""The ONNX audit on hand-made graphs: what passes, and each reason to refuse."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from vce.runtime.graph_audit import audit_model
from vce.runtime.errors import VCEError


def _graph(batch: str | int = "N", extra_nodes=(), out_names=("logits", "probs"), opset: int = 17):
    """images [N,3,224,224] -> GlobalAveragePool -> Flatten -> MatMul [3,17] -> logits -> Sigmoid -> probs."""
    w = numpy_helper.from_array(np.ones((3, 17), np.float32), "w")
    nodes = [
        helper.make_node("GlobalAveragePool", ["images"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("MatMul", ["flat", "w"], [out_names[0]]),
        helper.make_node("Sigmoid", [out_names[0]], [out_names[1]]),
        *extra_nodes,
    ]
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [batch, 3, 224, 224])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [batch, 17]) for n in out_names],
        [w],
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def test_good_graph_passes():
    rep = audit_model(_graph())
    assert rep.ok, rep.problems
    assert rep.batch_dim == "N"
    assert rep.opset == 17
    assert rep.node_count == 4
    assert rep.op_histogram["MatMul"] == 1
    rep.raise_if_failed()


def test_fixed_batch_is_refused():
    rep = audit_model(_graph(batch=2))
    assert any("not dynamic" in p for p in rep.problems)
    with pytest.raises(VCEError, match="fails the audit"):
        rep.raise_if_failed()


def test_custom_domain_op_is_refused():
    m = _graph(extra_nodes=[helper.make_node("MyOp", ["probs"], ["junk"], domain="com.example")])
    m.opset_import.append(helper.make_opsetid("com.example", 1))
    rep = audit_model(m)
    assert any("custom-domain ops ['com.example::MyOp']" in p for p in rep.problems)
    assert any("extra opset domains" in p for p in rep.problems)


def test_control_flow_is_refused():
    branch = helper.make_graph(
        [helper.make_node("Identity", ["probs"], ["b_out"])],
        "branch",
        [],
        [helper.make_tensor_value_info("b_out", TensorProto.FLOAT, None)],
    )
    cond = helper.make_node(
        "Constant", [], ["cond"], value=helper.make_tensor("c", TensorProto.BOOL, [], [True])
    )
    node = helper.make_node("If", ["cond"], ["if_out"], then_branch=branch, else_branch=branch)
    rep = audit_model(_graph(extra_nodes=[cond, node]))
    assert any("control-flow ops ['If']" in p for p in rep.problems)


def test_wrong_output_names_are_refused():
    rep = audit_model(_graph(out_names=("out", "p")))
    assert any("outputs are ['out', 'p']" in p for p in rep.problems)


def test_checker_failure_is_refused():
    # an opset-18 attribute on an opset-17 ReduceMean: what torch's dynamo 18->17 conversion left behind
    bad = helper.make_node("ReduceMean", ["probs"], ["m"], axes=[1], noop_with_empty_axes=0)
    rep = audit_model(_graph(extra_nodes=[bad]))
    assert any("onnx.checker" in p and "noop_with_empty_axes" in p for p in rep.problems)


def test_audit_reads_files(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(_graph(), str(path))
    assert audit_model(path).ok
