"""vce-export end to end on the tiny model: onnx, fp16, parity (exit codes, JSON), trt without TensorRT."""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest

from vce.export.cli import main


def _run(monkeypatch, *args: str) -> int:
    monkeypatch.setattr(sys, "argv", ["vce-export", *args])
    with pytest.raises(SystemExit) as exc:
        main()
    return int(exc.value.code or 0)


def test_onnx_fp16_parity(tmp_path, monkeypatch, capsys):
    out = tmp_path / "bundle"
    assert _run(monkeypatch, "onnx", "tiny", "--variant", "diff", "-o", str(out)) == 0
    err = capsys.readouterr().err
    assert "model.onnx" in err and "dynamic" in err
    assert _run(monkeypatch, "fp16", str(out)) == 0
    assert "max |delta prob|" in capsys.readouterr().err
    report = tmp_path / "parity.json"
    code = _run(
        monkeypatch, "parity", str(out), "--checkpoint", "tiny", "--variant", "diff",
        "--limit", "12", "--backends", "ort-cpu,ort-cpu-fp16", "--json", str(report),
    )  # fmt: skip
    assert code == 0
    data = json.loads(report.read_text())
    assert data["passed"] is True and data["frames"] == 12
    assert [t["target"] for t in data["targets"]] == ["ort-cpu", "ort-cpu-fp16"]
    assert data["targets"][0]["outputs"]["probs"]["max_abs"] <= 1e-4
    # the wrong checkpoint: a config mismatch is a user error (exit 2), one line
    assert _run(monkeypatch, "parity", str(out), "--checkpoint", "tiny", "--variant", "paper") == 2
    assert capsys.readouterr().err.strip().count("\n") == 0
    # the right architecture, other weights: beyond tolerance -> exit 1
    code = _run(monkeypatch, "parity", str(out), "--checkpoint", "tiny", "--variant", "diff", "--seed", "5",
                "--limit", "4", "--backends", "ort-cpu")  # fmt: skip
    assert code == 1
    assert "parity failed for ort-cpu" in capsys.readouterr().err


def test_user_errors_are_one_line(tmp_path, monkeypatch, capsys):
    assert _run(monkeypatch, "onnx", "nonexistent-model", "-o", str(tmp_path / "b")) == 2
    err = capsys.readouterr().err
    assert err.startswith("vce-export: error:") and "Traceback" not in err
    assert _run(monkeypatch, "fp16", str(tmp_path / "nothing")) == 2
    assert "no such bundle folder" in capsys.readouterr().err


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here")
def test_trt_without_tensorrt_names_the_extra(tmp_path, monkeypatch, capsys):
    assert _run(monkeypatch, "trt", str(tmp_path)) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "vce[trt]" in err


def test_onnx_input_uint8_and_a_bad_input_kind(tmp_path, monkeypatch, capsys):
    from vce.runtime.bundle import Bundle

    out = tmp_path / "u8"
    assert _run(monkeypatch, "onnx", "tiny", "--variant", "paper", "-o", str(out), "--input", "uint8") == 0
    assert "input uint8 ['N', 224, 224, 3]" in " ".join(capsys.readouterr().err.split())
    assert Bundle.load(out).graph_input("model.onnx")["layout"] == "NHWC"
    assert _run(monkeypatch, "onnx", "tiny", "-o", str(tmp_path / "b"), "--input", "int16") == 2
    err = capsys.readouterr().err.strip()
    assert (
        err.count("\n") == 0
        and "Invalid value for '--input': 'int16' is not one of 'float32', 'uint8'" in err
        and not (tmp_path / "b").exists()
    )
