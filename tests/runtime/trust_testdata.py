"""Hostile bundles for the trust tests (imported as ``trust_testdata``): ONNX graphs built with onnx.

Each graph is the tiny colour model of ``runtime_testdata`` with one twist: its weight ``W`` stored
as external data (as an initializer, a ``Constant`` node or a sparse initializer), a second required
input, or probabilities that are not probabilities.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from vce.runtime.labels import LABEL_INDEX, NUM_LABELS

#: the colour model's weight W [3, 17] as the "secret" file holds it: huge values on ``polyp``,
#: so a frame's polyp probability is 1.0 exactly when W came from the secret file
SECRET_W = np.zeros((3, NUM_LABELS), np.float32)
SECRET_W[:, LABEL_INDEX["polyp"]] = 1000.0


def _colour_weights() -> tuple[np.ndarray, np.ndarray]:
    w = np.zeros((3, NUM_LABELS), np.float32)
    b = np.full(NUM_LABELS, -6.0, np.float32)
    for channel, label in enumerate(("mouth", "stomach", "active bleeding")):
        w[channel, LABEL_INDEX[label]] = 4.0
        b[LABEL_INDEX[label]] = -2.0
    return w, b


def external_tensor(name: str, location: str, nbytes: int) -> Any:
    """A float32 [3, 17] TensorProto whose data lives in ``location`` (ONNX's external-data fields)."""
    from onnx import TensorProto

    t = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=[3, NUM_LABELS])
    t.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", str(nbytes))):
        entry = t.external_data.add()
        entry.key, entry.value = key, value
    return t


def write_secret(path: Path) -> Path:
    path.write_bytes(SECRET_W.tobytes())
    return path


def make_graph(
    path: Path,
    *,
    external: str | None = None,
    where: str = "initializer",
    extra_input: bool = False,
    raw_probs: bool = False,
    size: int | None = None,
) -> Path:
    """The colour model, W external at ``external`` (``where``: initializer | constant | sparse |
    subgraph), with a second required input, or with ``probs`` = logits (outside [0, 1])."""
    from onnx import TensorProto, helper, numpy_helper

    w, b = _colour_weights()
    inits = [numpy_helper.from_array(b, "B")]
    sparse: list[Any] = []
    nodes: list[Any] = []
    if external is None:
        inits.append(numpy_helper.from_array(w, "W"))
    elif where == "initializer":
        inits.append(external_tensor("W", external, SECRET_W.nbytes))
    elif where == "constant":
        nodes.append(
            helper.make_node("Constant", [], ["W"], value=external_tensor("Wc", external, SECRET_W.nbytes))
        )
    elif where == "sparse":
        values = external_tensor("W", external, SECRET_W.nbytes)
        values.dims[:] = [3 * NUM_LABELS]
        indices = numpy_helper.from_array(np.arange(3 * NUM_LABELS, dtype=np.int64), "W_indices")
        sparse.append(helper.make_sparse_tensor(values, indices, [3, NUM_LABELS]))
    elif where == "subgraph":
        branch = helper.make_graph(
            [
                helper.make_node(
                    "Constant", [], ["Wb"], value=external_tensor("Wt", external, SECRET_W.nbytes)
                )
            ],
            "then",
            [],
            [helper.make_tensor_value_info("Wb", TensorProto.FLOAT, [3, NUM_LABELS])],
        )
        inits.append(numpy_helper.from_array(np.array(True), "T"))
        nodes.append(helper.make_node("If", ["T"], ["W"], then_branch=branch, else_branch=branch))
    else:
        raise ValueError(where)
    nodes += [
        helper.make_node("GlobalAveragePool", ["images"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["feat"]),
        helper.make_node("MatMul", ["feat", "W"], ["mm"]),
        helper.make_node("Add", ["mm", "B"], ["logits"]),
    ]
    inputs = [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, size or "H", size or "W"])]
    if extra_input:
        inputs.append(helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["N", NUM_LABELS]))
        nodes[-1] = helper.make_node("Add", ["mm", "B"], ["logits0"])
        nodes.append(helper.make_node("Mul", ["logits0", "mask"], ["logits"]))
    nodes.append(helper.make_node("Identity" if raw_probs else "Sigmoid", ["logits"], ["probs"]))
    graph = helper.make_graph(
        nodes,
        "tiny_colour",
        inputs,
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", NUM_LABELS]),
            helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", NUM_LABELS]),
        ],
        inits,
        sparse_initializer=sparse,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())
    return path


def run_cli(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, main: Any, prog: str, *args: object
) -> tuple[int, str, str]:
    """Run a console entry point; (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", [prog, *map(str, args)])
    with pytest.raises(SystemExit) as exc:
        main()
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err


def vce_run(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *args: object
) -> tuple[int, str, str]:
    """``vce-run ARGS`` in this process: (exit code, stdout, stderr)."""
    from vce.runtime.cli import main

    return run_cli(capsys, monkeypatch, main, "vce-run", *args)


def one_error_line(err: str, prog: str) -> str:
    """The single ``prog: error:`` line of ``err`` (asserts there is exactly one and no traceback)."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err, err
    errors = [line for line in lines if line.startswith(f"{prog}: error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], err
    return errors[0]
