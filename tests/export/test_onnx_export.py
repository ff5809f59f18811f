"""ONNX export of the tiny model: both variants x each formulation, exporters, opsets, refusals."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from vce.export import onnx_export
from vce.export.onnx_export import check_with_ort, export_onnx, torch_outputs
from vce.runtime.backends import create_runner
from vce.runtime.errors import VCEError
from vce.runtime.graph_audit import audit_model

CASES = [
    ("paper", "matmul"),
    ("paper", "equal-heads"),
    ("diff", "matmul"),
    ("diff", "equal-heads"),
    ("diff", "equal-heads-split"),
]


def _ort_vs_training_module(model, path, batch: int = 5) -> float:
    """Max |delta logit| of the graph against the model in its training formulation (sdpa)."""
    x = np.random.default_rng(7).standard_normal((batch, 3, 224, 224), dtype=np.float32)
    ref = torch_outputs(model, x)
    with create_runner("ort-cpu", path) as r:
        out = r.infer(x)
    assert out["logits"].shape == (batch, 17)
    return float(np.abs(out["logits"] - ref["logits"]).max())


@pytest.mark.parametrize(("variant", "form"), CASES)
def test_formulation_exports_equal_to_training_module(tmp_path, tiny_model, variant, form):
    model = tiny_model(variant)
    path = tmp_path / "m.onnx"
    res = export_onnx(model, path, formulation_name=form)
    assert res.audit.ok and res.audit.batch_dim == "N"
    assert res.check["probs"] <= 1e-4  # the export's own ORT check (batches 1 and 3)
    assert _ort_vs_training_module(model, path) <= 1e-5
    # the formulation reached the graph, and the model is back in its training formulation
    ops = audit_model(path).op_histogram
    assert ops.get("Softmax") == model.config.depth  # one attention call per block
    if variant == "diff" and form == "equal-heads":
        assert ops.get("Pad", 0) >= 2 * model.config.depth  # q and k padded to v's head size
    assert {m.formulation for m in model.modules() if hasattr(m, "lambda_value")} == {"sdpa"}
    # standard ops only, the lambda folded away (no parameter-only Exp left in the graph)
    assert "Exp" not in ops and "If" not in ops and "Loop" not in ops


def test_opset_18_is_selectable(tmp_path, tiny_model):
    res = export_onnx(tiny_model("paper"), tmp_path / "m.onnx", opset=18)
    assert res.audit.opset == 18
    assert onnx.load(str(tmp_path / "m.onnx")).opset_import[0].version == 18


@pytest.mark.slow
def test_dynamo_exporter_opset17(tmp_path, tiny_model):
    # dynamo translates at 18; the down-conversion to 17 must still give a valid graph (ReduceMean of DIFF's RMSNorm)
    model = tiny_model("diff")
    res = export_onnx(model, tmp_path / "m.onnx", exporter="dynamo", opset=17)
    assert res.audit.opset == 17 and res.audit.ok
    assert _ort_vs_training_module(model, tmp_path / "m.onnx") <= 1e-5


def test_bad_arguments_are_user_errors(tmp_path, tiny_model):
    with pytest.raises(VCEError, match="opset 16"):
        export_onnx(tiny_model("paper"), tmp_path / "m.onnx", opset=16)
    with pytest.raises(VCEError, match="unknown exporter"):
        export_onnx(tiny_model("paper"), tmp_path / "m.onnx", exporter="jit")
    with pytest.raises(VCEError, match="at least 2"):
        export_onnx(tiny_model("paper"), tmp_path / "m.onnx", trace_batch=1)
    with pytest.raises(VCEError, match="formulation"):
        export_onnx(tiny_model("paper"), tmp_path / "m.onnx", formulation_name="flash")
    assert not (tmp_path / "m.onnx").exists()


def test_parity_failure_refuses_the_export(tmp_path, tiny_model, monkeypatch):
    path = tmp_path / "m.onnx"
    export_onnx(tiny_model("paper"), path, check=False)
    # a different model (other weights) against this graph: beyond tolerance
    torch.manual_seed(123)
    from vce.train.factory import create_model

    other = create_model("tiny", variant="paper").eval()
    with pytest.raises(VCEError, match="differs from PyTorch beyond tolerance"):
        check_with_ort(other, path)

    # and when the check fails during an export, nothing is left behind
    def failing(*args, **kwargs):
        raise VCEError("boom")

    monkeypatch.setattr(onnx_export, "check_with_ort", failing)
    path2 = tmp_path / "m2.onnx"
    with pytest.raises(VCEError, match="boom"):
        export_onnx(tiny_model("paper"), path2)
    assert not path2.exists()
