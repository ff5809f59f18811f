"""The one ONNX graph audit (vce.runtime.graph_audit): hand-made graphs, each reason to refuse, and every
export path (fp32, uint8 input, fp16) refusing a bad graph through it."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from vce.runtime.errors import VCEError
from vce.runtime.graph_audit import audit_model


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


def test_external_data_is_refused_without_reading_it(tmp_path):
    """The audit finds external data in the file's bytes; onnx.load would have opened the other file."""
    from onnx.external_data_helper import convert_model_to_external_data

    model = _graph()
    convert_model_to_external_data(model, all_tensors_to_one_file=True, location="w.bin", size_threshold=0)
    onnx.save(model, str(tmp_path / "m.onnx"))
    (tmp_path / "w.bin").unlink()  # nothing to read: a reading audit would crash here
    rep = audit_model(tmp_path / "m.onnx")
    assert any("tensor data in external files ['w']" in p for p in rep.problems), rep.problems


def test_missing_file_is_one_line(tmp_path):
    from vce.runtime.graph_audit import audit_file

    with pytest.raises(VCEError, match="ONNX file not found"):
        audit_file(tmp_path / "nope.onnx")


# --- every path that writes a graph refuses a bad one with the same audit -----------------------


def _add_foreign_op(model) -> None:
    model.graph.node.append(helper.make_node("MyOp", ["probs"], ["junk"], domain="com.example"))
    model.opset_import.append(helper.make_opsetid("com.example", 1))


def _rename_probs(model) -> None:
    """A valid graph whose second output is called ``p`` instead of ``probs``."""
    for node in model.graph.node:
        for i, name in enumerate(node.output):
            if name == "probs":
                node.output[i] = "p"
    model.graph.output[1].name = "p"


SABOTAGE = {
    "foreign op": (_add_foreign_op, "custom-domain ops"),
    "wrong output": (_rename_probs, "outputs are"),
}


@pytest.mark.parametrize("input_kind", ["float32", "uint8"])
@pytest.mark.parametrize("sabotage", list(SABOTAGE))
def test_export_refuses_a_bad_graph(tmp_path, monkeypatch, tiny_model, input_kind, sabotage):
    from vce.export import onnx_export

    change, reason = SABOTAGE[sabotage]
    real = onnx_export.export_model_proto

    def exported(*args, **kwargs):
        proto, seconds = real(*args, **kwargs)
        change(proto)
        return proto, seconds

    monkeypatch.setattr(onnx_export, "export_model_proto", exported)
    path = tmp_path / "model.onnx"
    with pytest.raises(VCEError, match=f"the exported graph fails the audit: .*{reason}"):
        onnx_export.export_onnx(tiny_model("paper"), path, check=False, input_kind=input_kind)
    assert not path.exists()


@pytest.mark.parametrize("sabotage", list(SABOTAGE))
def test_fp16_conversion_refuses_a_bad_graph(tmp_path, monkeypatch, sabotage):
    from vce.export import fp16

    change, reason = SABOTAGE[sabotage]
    real = fp16._fp32_outputs

    def converted(onnx_module, model) -> None:
        real(onnx_module, model)
        change(model)

    monkeypatch.setattr(fp16, "_fp32_outputs", converted)
    onnx.save(_graph(), str(tmp_path / "m.onnx"))
    with pytest.raises(VCEError, match=f"the fp16 graph fails the audit: .*{reason}"):
        fp16.convert_fp16(tmp_path / "m.onnx", tmp_path / "m16.onnx", check=False)
    assert not (tmp_path / "m16.onnx").exists()


def test_fp16_graph_keeps_the_sources_contract(tmp_path):
    """A source with 96-px images: its fp16 graph is audited against 96, and against 224 it fails."""
    from vce.export.fp16 import convert_fp16

    model = _graph()
    for dim in model.graph.input[0].type.tensor_type.shape.dim[2:]:
        dim.dim_value = 96
    onnx.save(model, str(tmp_path / "m.onnx"))
    assert convert_fp16(tmp_path / "m.onnx", tmp_path / "a.onnx", check=False).audit.ok
    with pytest.raises(VCEError, match=r"expected float32 \[N, 3, 224, 224\]"):
        convert_fp16(tmp_path / "m.onnx", tmp_path / "b.onnx", check=False, image_size=224)
