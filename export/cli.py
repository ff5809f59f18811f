"""``vce-export``: ONNX bundles, typed fp16 graphs, TensorRT engines and parity checks."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from vce.export.exporters import DEFAULT_EXPORTER, Exporter
from vce.export.tensorrt_build import BuildOptions, Precision
from vce.export.uint8_input import InputKind
from vce.runtime.cliapp import VCETyper
from vce.runtime.errors import VCEError, run_cli
from vce.train.config import ExportFormulation, Formulation, Variant, available_configs

app = VCETyper(help="Export a VCE model to a deployable bundle (ONNX, fp16, TensorRT) and check parity.")
B = BuildOptions  # the defaults of `vce-export trt`
console = Console(stderr=True)
EXIT_PARITY_FAILED = 1


@app.command("onnx")
def onnx_command(
    checkpoint: Annotated[
        str,
        typer.Argument(
            help="vce-train run/checkpoint, paper .pth, or a model spec with random weights: "
            + ", ".join(available_configs())
        ),
    ],
    output: Annotated[Path, typer.Option("-o", "--output", help="bundle folder to write")],
    variant: Annotated[Variant | None, typer.Option(help="attention (model specs only)")] = None,
    exporter: Annotated[
        Exporter | None, typer.Option(help="ONNX exporter (default: the measured best)")
    ] = None,
    opset: Annotated[int, typer.Option(help="ONNX opset, 17-20")] = 17,
    formulation: Annotated[ExportFormulation, typer.Option(help="attention formulation")] = ExportFormulation(
        Formulation.MATMUL
    ),
    seed: Annotated[int, typer.Option(help="seed for random-weight model specs")] = 0,
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="write into a non-empty folder that is not a bundle (its files are never deleted)"
        ),
    ] = False,
    input_kind: Annotated[
        InputKind,
        typer.Option(
            "--input",
            help="float32: normalised [N,3,S,S] in; uint8: RGB crops [N,S,S,3] in, normalised inside "
            "the graph (same outputs, bit for bit; 4x fewer bytes to a GPU, no CPU normalisation)",
        ),
    ] = InputKind.FLOAT32,
) -> None:
    """Export CHECKPOINT to BUNDLE/model.onnx + manifest.json, audited and checked against PyTorch."""
    from vce.export.bundle_io import check_output_folder, write_bundle
    from vce.train.factory import resolve_model

    check_output_folder(output, force=force)  # before the (slow) model load
    with console.status(f"loading {checkpoint}"):
        model, info = resolve_model(checkpoint, None if variant is None else variant.value, seed=seed)
    with console.status(
        f"exporting ({exporter or DEFAULT_EXPORTER}, opset {opset}, {formulation}) and checking with ONNX Runtime"
    ):
        bundle, result = write_bundle(
            model,
            output,
            model_info=info,
            exporter=str(exporter or DEFAULT_EXPORTER),
            opset=opset,
            formulation_name=formulation.value,
            force=force,
            input_kind=input_kind.value,
        )
    ops = ", ".join(f"{k} {v}" for k, v in list(result.audit.op_histogram.items())[:8])
    console.print(
        f"wrote {bundle.root / 'model.onnx'}: {result.exporter} opset {result.opset}, {result.audit.node_count} nodes "
        f"({ops}, ...), input {result.audit.inputs['images']['dtype']} {result.audit.inputs['images']['shape']}, "
        f"batch dim {result.audit.batch_dim!r} dynamic; export {result.seconds:.1f}s; "
        f"ORT CPU vs PyTorch max |delta prob| {result.check.get('probs', float('nan')):.1e}"
    )


@app.command("fp16")
def fp16_command(
    bundle: Annotated[Path, typer.Argument(help="bundle folder (from `vce-export onnx`)")],
    atol: Annotated[float, typer.Option(help="refuse beyond this max |delta prob| against fp32")] = 1e-2,
) -> None:
    """Write the typed fp16 graph (fp32 I/O, norms/softmax/lambda in fp32) for strongly typed TensorRT."""
    from vce.export.bundle_io import add_fp16

    with console.status("converting to fp16 and checking with ONNX Runtime"):
        b, report = add_fp16(bundle, atol_probs=atol)
    chk = report.check
    verdict = (
        f"ORT CPU vs fp32 max |delta prob| {chk['max_abs_probs']:.1e}"
        if chk.get("ran")
        else f"not checked: {chk.get('reason', 'no ONNX Runtime kernel')}"
    )
    console.print(
        f"wrote {b.root / 'model_fp16.onnx'}: {report.fp16_fraction:.0%} of compute nodes fp16, kept fp32 "
        f"{report.kept_fp32}; {verdict}"
    )


@app.command("trt")
def trt_command(
    bundle: Annotated[Path, typer.Argument(help="bundle folder")],
    precision: Annotated[Precision, typer.Option(help="fp16 (from the fp16 graph) | fp32")] = Precision(
        B.precision
    ),
    min_batch: Annotated[int, typer.Option(help="optimisation profile: smallest batch")] = B.min_batch,
    opt_batch: Annotated[int, typer.Option(help="optimisation profile: batch tuned for")] = B.opt_batch,
    max_batch: Annotated[int, typer.Option(help="optimisation profile: largest batch")] = B.max_batch,
    workspace: Annotated[int, typer.Option(help="builder workspace in MiB")] = B.workspace_mib,
    timing_cache: Annotated[
        Path | None, typer.Option(help="timing cache file (read if present, then updated)")
    ] = None,
    dla_core: Annotated[
        int | None,
        typer.Option(
            help="build for this DLA core (Jetson AGX Orin), GPU fallback on, static batch = --opt-batch"
        ),
    ] = None,
    version_compatible: Annotated[
        bool, typer.Option("--version-compatible", help="engine loadable by later TensorRT versions")
    ] = B.version_compatible,
    hardware_compatible: Annotated[
        bool, typer.Option("--hardware-compatible", help="engine for all Ampere+ GPUs")
    ] = B.hardware_compatible,
    layers_json: Annotated[
        Path | None, typer.Option(help="save the engine inspector's layer JSON here")
    ] = None,
) -> None:
    """Build a TensorRT engine from the typed graph, inspect its layer precisions, write it + sidecar."""
    from vce.export.tensorrt_build import ENGINE_FILES, add_engine, require_tensorrt

    require_tensorrt()
    options = BuildOptions(
        precision=precision.value,
        min_batch=min_batch,
        opt_batch=opt_batch,
        max_batch=max_batch,
        workspace_mib=workspace,
        timing_cache=timing_cache,
        dla_core=dla_core,
        version_compatible=version_compatible,
        hardware_compatible=hardware_compatible,
        layers_json=layers_json,
    )
    note = options.profile_batches()[3]
    if note:
        console.print(note)
    with console.status(f"building the {precision} TensorRT engine"):
        b, info = add_engine(bundle, options)
    console.print(
        f"wrote {b.root / ENGINE_FILES[precision]} ({info.precision}; {info.precision_check}) for "
        f"{info.gpu_name} sm {info.compute_capability}, TensorRT {info.tensorrt_version}, batch "
        f"{info.profile['min'][0]}-{info.profile['max'][0]}; build {info.build_seconds}s"
    )


@app.command("parity")
def parity_command(
    bundle: Annotated[Path, typer.Argument(help="bundle folder")],
    checkpoint: Annotated[
        str,
        typer.Option(help="the checkpoint (or model spec + --variant/--seed) the bundle was exported from"),
    ],
    variant: Annotated[Variant | None, typer.Option(help="attention (model specs only)")] = None,
    seed: Annotated[int, typer.Option(help="seed for random-weight model specs")] = 0,
    frames: Annotated[Path | None, typer.Option(help="frame folder to run on")] = None,
    video: Annotated[Path | None, typer.Option(help="video file to run on")] = None,
    limit: Annotated[int, typer.Option(help="use at most this many frames")] = 64,
    backends: Annotated[
        str | None,
        typer.Option(
            help="comma list: ort-cpu, ort-cpu-fp16, ort-cuda(-fp16), ort-trt(-fp16), trt (default: all available)"
        ),
    ] = None,
    batch: Annotated[int, typer.Option(help="inference batch size")] = 8,
    fp32_tol: Annotated[float, typer.Option(help="max |delta prob| for fp32 targets")] = 1e-4,
    fp16_tol: Annotated[float, typer.Option(help="max |delta prob| for fp16 targets")] = 1e-2,
    json_report: Annotated[Path | None, typer.Option("--json", help="write the JSON report here")] = None,
) -> None:
    """PyTorch fp32 against each backend: error statistics, label flips, event identity."""
    from rich.console import Console as OutConsole

    from vce.export.parity import load_source, render_table, run_parity, synthetic_frames
    from vce.runtime.atomic import write_json
    from vce.runtime.bundle import Bundle
    from vce.train.factory import resolve_model

    if frames is not None and video is not None:
        raise VCEError("give --frames or --video, not both")
    if limit < 1 or batch < 1:
        raise VCEError("--limit and --batch must be at least 1")
    b = Bundle.load(bundle)
    model, info = resolve_model(checkpoint, None if variant is None else variant.value, seed=seed)
    recorded = b.manifest.model.get("config")
    if recorded is not None and recorded != info["config"]:
        raise VCEError(f"{checkpoint}: its model config differs from the one {bundle} was exported from")
    if "weights_sha256" in b.manifest.model and info.get("weights_sha256") not in (
        None,
        b.manifest.model["weights_sha256"],
    ):
        raise VCEError(f"{checkpoint}: not the checkpoint {bundle} was exported from (sha256 differs)")
    spec = b.manifest.preprocess_spec()
    with console.status("reading frames"):
        if frames is not None or video is not None:
            source = str(frames or video)
            images, numbers = load_source(source, spec, limit)
        else:
            images, numbers = synthetic_frames(spec, limit)
            source = "a synthetic capsule video"
    targets = [t.strip() for t in backends.split(",") if t.strip()] if backends else None
    with console.status("running the reference and the backends") as status:
        report = run_parity(
            model,
            b,
            images,
            numbers,
            targets=targets,
            batch=batch,
            source=source,
            tolerance={"fp32": fp32_tol, "fp16": fp16_tol},
            progress=lambda name: status.update(f"done: {name}"),
        )
    OutConsole(highlight=False).print(render_table(report))
    if json_report is not None:
        write_json(json_report, report.to_dict())
    if not report.targets:
        raise VCEError("no backend to compare on this machine (the bundle needs model.onnx and onnxruntime)")
    if not report.passed:
        failed = ", ".join(t.target for t in report.targets if not t.passed)
        raise VCEError(f"parity failed for {failed} (see the table)", exit_code=EXIT_PARITY_FAILED)


def main() -> None:
    run_cli(app, "vce-export")


if __name__ == "__main__":
    main()
