"""One way to write a command line (issue 14 §1-§3), checked over every vce command line.

- every app is a ``VCETyper``, every command function ``<command>_command``, every parameter
  ``Annotated`` (no ``x = typer.Option(...)`` defaults);
- a fixed set of values is a ``StrEnum`` that Typer validates;
- defaults are read from the options objects (``FitConfig``, ``SearchSpace``, ``BuildOptions``,
  ``RunOptions``), so the command line builds the same object as the library's defaults;
- the options objects check themselves on construction; the command lines only parse.
"""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from vce.calibration.cli import calibrate_app, eval_app
from vce.calibration.search import SearchSpace
from vce.export.cli import app as export_app
from vce.export.demo import app as demo_app
from vce.export.tensorrt_build import BuildOptions
from vce.runtime.cli import app as run_app
from vce.runtime.cliapp import VCETyper
from vce.runtime.errors import VCEError
from vce.runtime.run import RunOptions
from vce.train.cli import app as train_app
from vce.train.cli import fit_argv
from vce.train.fit_config import FitConfig

ROOT = Path(__file__).resolve().parents[1]
CLI_MODULES = ["runtime/cli.py", "train/cli.py", "export/cli.py", "calibration/cli.py", "export/demo.py"]
APPS = [run_app, train_app, export_app, calibrate_app, eval_app, demo_app]


class _Called(Exception):
    pass


def _capture(monkeypatch: pytest.MonkeyPatch, module: Any, name: str) -> list[tuple[Any, ...]]:
    calls: list[tuple[Any, ...]] = []

    def recorder(*args: Any, **kwargs: Any) -> None:
        calls.append((args, kwargs))
        raise _Called

    monkeypatch.setattr(module, name, recorder)
    return calls


def _invoke(app: typer.Typer, args: list[str]) -> Any:
    res = CliRunner().invoke(app, args)
    assert isinstance(res.exception, _Called), res.output
    return res


@pytest.mark.parametrize("path", CLI_MODULES)
def test_one_style_of_command(path: str) -> None:
    tree = ast.parse((ROOT / path).read_text())
    commands = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and any(
            isinstance(d, ast.Call) and isinstance(d.func, ast.Attribute) and d.func.attr == "command"
            for d in node.decorator_list
        ):
            commands.append(node)
            for default in node.args.defaults + node.args.kw_defaults:
                assert not (
                    isinstance(default, ast.Call)
                    and isinstance(default.func, ast.Attribute)
                    and default.func.attr in ("Option", "Argument")
                ), f"{path}:{node.name}: a typer.Option/Argument default; use Annotated[...]"
            assert node.name.endswith("_command"), f"{path}: {node.name} is not named <command>_command"
            for dec in node.decorator_list:
                if isinstance(dec, ast.Call) and dec.args:  # the command's name, spelled out
                    assert node.name == f"{dec.args[0].value.replace('-', '_')}_command"  # type: ignore[attr-defined]
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "Typer":
            raise AssertionError(f"{path}: typer.Typer(...); build apps with VCETyper")
    assert commands, path


def test_every_app_is_a_vce_typer_with_help_on_no_command() -> None:
    assert all(isinstance(app, VCETyper) for app in APPS)
    for app in (train_app, export_app, calibrate_app, eval_app):
        res = CliRunner().invoke(app, [])
        assert "Usage:" in res.output and "Commands" in res.output


@pytest.mark.parametrize(
    ("app", "args", "values"),
    [
        (run_app, ["x.mp4", "-o", "o", "--grouping", "frame"], "'tuple', 'label'"),
        (run_app, ["x.mp4", "-o", "o", "--fill", "cubic"], "'hold', 'linear'"),
        (
            run_app,
            ["x.mp4", "-o", "o", "--backend", "cuda"],
            "'auto', 'trt', 'ort-trt', 'ort-cuda', 'ort-cpu'",
        ),
        (
            run_app,
            ["x.mp4", "-o", "o", "--graph", "int4"],
            "'fp32', 'fp16', 'int8', 'int8-dynamic', 'engine'",
        ),
        (train_app, ["fit", "--sampler", "random"], "'sqrt', 'uniform'"),
        (train_app, ["fit", "--variant", "vanilla"], "'paper', 'diff', 'none'"),
        (export_app, ["onnx", "tiny", "-o", "b", "--formulation", "sdpa"], "'matmul', 'equal-heads'"),
        (export_app, ["trt", "b", "--precision", "int4"], "'fp16', 'fp32'"),
        (export_app, ["onnx", "tiny", "-o", "b", "--exporter", "onnxmltools"], "'torchscript', 'dynamo'"),
        (export_app, ["onnx", "tiny", "-o", "b", "--input", "float16"], "'float32', 'uint8'"),
        (calibrate_app, ["fit", "f.csv", "--labels", "l", "--bundle", "b", "--objective", "f1"], "'map50'"),
        (calibrate_app, ["int8", "b", "--mode", "int4"], "'static', 'dynamic', 'both'"),
    ],
)
def test_choices_are_validated_by_the_command_line(app: typer.Typer, args: list[str], values: str) -> None:
    """A value outside the choices is refused before anything runs, in one VCEError line (exit 2)."""
    res = CliRunner().invoke(app, args)
    assert isinstance(res.exception, VCEError), res.output
    message = str(res.exception)
    assert message.startswith("Invalid value for '--") and values in message and "\n" not in message


def test_fit_defaults_are_fit_configs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import vce.train.trainer as trainer

    calls = _capture(monkeypatch, trainer, "fit")
    _invoke(train_app, ["fit", "--data", str(tmp_path), "--out", str(tmp_path / "run")])
    assert calls[0][0][0] == FitConfig(data=str(tmp_path), out=str(tmp_path / "run"))


def test_fit_argv_round_trips_every_option(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every FitConfig field with an option, changed from its default, comes back through the CLI."""
    import vce.train.trainer as trainer

    changed: dict[str, Any] = {"data": str(tmp_path), "out": str(tmp_path / "run"), "model": "tiny",
        "variant": "diff", "head": "linear", "pretrained": "p", "contrastive": True, "epochs": 7, "stop_after": 2,
        "val_videos": ["a", "b"], "sampler": "uniform", "cache": str(tmp_path / "c"), "device": "cpu",
        "augment": False, "amp": False, "ema_warmup": False, "deterministic": True, "workers": 3}  # fmt: skip
    for f in dataclasses.fields(FitConfig):
        if f.name not in changed and isinstance(f.default, float):
            changed[f.name] = (
                round(f.default * 0.5 + 0.01, 6)
                if f.name not in ("div_factor", "final_div_factor")
                else f.default
            )
        elif f.name not in changed and isinstance(f.default, int) and not isinstance(f.default, bool):
            changed[f.name] = f.default + 1
    cfg = FitConfig(**changed)
    argv = fit_argv(cfg)
    calls = _capture(monkeypatch, trainer, "fit")
    _invoke(train_app, argv)
    assert calls[0][0][0] == cfg
    assert "--ema" in argv and "--no-ema-warmup" in argv and "--val-videos" in argv
    with pytest.raises(ValueError, match="div_factor"):
        fit_argv(dataclasses.replace(cfg, div_factor=3.0))


def test_calibrate_defaults_are_the_search_space(monkeypatch: pytest.MonkeyPatch) -> None:
    import vce.calibration.calibrate as calibrate

    calls = _capture(monkeypatch, calibrate, "fit_bundle")
    _invoke(calibrate_app, ["fit", "f.csv", "--labels", "l", "--bundle", "b"])
    kwargs = calls[0][1]
    assert kwargs["space"] == SearchSpace()
    assert (kwargs["method"], kwargs["objective"]) == ("paper", "map50")
    assert type(kwargs["method"]) is str and type(kwargs["objective"]) is str


def test_search_space_checks_itself() -> None:
    with pytest.raises(VCEError, match=r"--groupings takes tuple and/or label, got \['frame'\]"):
        SearchSpace(groupings=("tuple", "frame"))
    with pytest.raises(VCEError, match="medians must be >= 1, min-runs and max-gaps >= 0"):
        SearchSpace(medians=(0, 3))
    with pytest.raises(VCEError, match="medians must be >= 1"):
        SearchSpace(max_gaps=(-1,))
    res = CliRunner().invoke(
        calibrate_app, ["fit", "f.csv", "--labels", "l", "--bundle", "b", "--groupings", "x"]
    )
    assert isinstance(res.exception, VCEError) and "--groupings takes tuple and/or label" in str(
        res.exception
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"data": ""}, "fit needs --data DIR"),
        ({"out": ""}, "fit needs --out RUN"),
        ({"epochs": 0}, "--epochs must be >= 1"),
        ({"val_stride": 0}, "--val-stride must be >= 1"),
        ({"sampler": "random"}, "--sampler must be 'sqrt' or 'uniform'"),
        ({"ema_decay": 1.0}, r"--ema must be in \[0, 1\)"),
        ({"pct_start": 0.0}, r"--pct-start must be in \(0, 1\)"),
        ({"stop_after": 0}, "--stop-after must be >= 1"),
    ],
)
def test_fit_config_checks_itself(change: dict[str, Any], message: str) -> None:
    with pytest.raises(VCEError, match=message):
        FitConfig(**{"data": "d", "out": "o", **change})
    assert not hasattr(FitConfig, "check")


def test_trt_defaults_are_build_options(monkeypatch: pytest.MonkeyPatch) -> None:
    import vce.export.tensorrt_build as tensorrt_build

    monkeypatch.setattr(tensorrt_build, "require_tensorrt", lambda: None)
    calls = _capture(monkeypatch, tensorrt_build, "add_engine")
    _invoke(export_app, ["trt", "b"])
    assert calls[0][0][1] == BuildOptions()
    res = CliRunner().invoke(export_app, ["trt", "b", "--min-batch", "9"])
    assert isinstance(res.exception, VCEError) and "batch sizes must satisfy" in str(res.exception)


def test_run_defaults_are_run_options(monkeypatch: pytest.MonkeyPatch) -> None:
    import vce.runtime.cli as run_cli

    calls = _capture(monkeypatch, run_cli, "run")
    _invoke(run_app, ["x.mp4", "-b", "b", "-o", "o"])
    options = calls[0][0][3]
    assert options == RunOptions()
    assert type(options.backend) is str and type(options.fill) is str
