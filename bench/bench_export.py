"""Measure the ONNX exporters and attention formulations: export time, graph size, ORT CPU speed, parity.

Runs on random weights (no download). For each (variant, exporter, formulation) case: export time,
node count, op histogram, file size, max |delta| against PyTorch fp32; the fp16 graph of each case:
conversion time, max |delta prob| against fp32 (ORT CPU). Then ONNX Runtime CPU speed at batch 8,
measured round-robin over all graphs (one batch of each in turn, median per graph), so that load
changes on a shared machine hit every case alike. Prints a table and the JSON (also to --json).

    python bench/bench_export.py --model biomedclip --json bench_export.json
    python bench/bench_export.py --model tiny --cases paper:torchscript:matmul,diff:dynamo:matmul
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
import typer

from vce.export.fp16 import convert_fp16
from vce.export.onnx_export import export_onnx, torch_outputs
from vce.runtime.atomic import write_text
from vce.runtime.backends import create_runner
from vce.runtime.cliapp import VCETyper
from vce.runtime.errors import VCEError, run_cli
from vce.train.factory import create_model

DEFAULT_CASES = (
    "paper:torchscript:matmul",
    "paper:dynamo:matmul",
    "diff:torchscript:matmul",
    "diff:dynamo:matmul",
    "diff:torchscript:equal-heads",
    "diff:torchscript:equal-heads-split",
)

app = VCETyper()


def interleaved_speed(paths: list[Path], batch: int, reps: int) -> list[float]:
    """Images/s of ONNX Runtime CPU per graph: ``reps`` rounds of one batch per graph, median per graph."""
    x = np.random.default_rng(0).standard_normal((batch, 3, 224, 224), dtype=np.float32)
    runners = [create_runner("ort-cpu", p) for p in paths]
    try:
        for r in runners:
            r.infer(x)  # warm-up
        times: list[list[float]] = [[] for _ in runners]
        for _ in range(reps):
            for i, r in enumerate(runners):
                t = time.perf_counter()
                r.infer(x)
                times[i].append(time.perf_counter() - t)
    finally:
        for r in runners:
            r.close()
    return [batch / float(np.median(t)) for t in times]


def run_case(
    model_name: str, variant: str, exporter: str, form: str, folder: Path, opset: int, fp16: bool
) -> dict[str, Any]:
    torch.manual_seed(0)
    model = create_model(model_name, variant=variant).eval()
    path = folder / f"{model_name}_{variant}_{exporter}_{form}.onnx"
    res = export_onnx(model, path, exporter=exporter, formulation_name=form, opset=opset)
    x = np.random.default_rng(3).standard_normal((4, 3, 224, 224), dtype=np.float32)
    ref = torch_outputs(model, x)
    with create_runner("ort-cpu", path) as runner:
        out = runner.infer(x)
    row: dict[str, Any] = {
        "model": model_name,
        "variant": variant,
        "exporter": exporter,
        "formulation": form,
        "opset": opset,
        **res.to_dict(),
        "bytes": path.stat().st_size,
        "fp32_max_abs_probs": float(np.abs(out["probs"] - ref["probs"]).max()),
        "fp32_max_abs_logits": float(np.abs(out["logits"] - ref["logits"]).max()),
    }
    if fp16:
        p16 = path.with_name(path.stem + "_fp16.onnx")
        rep = convert_fp16(path, p16)
        with create_runner("ort-cpu", p16) as runner:
            o16 = runner.infer(x)
        row["fp16"] = {
            **rep.to_dict(),
            "vs_torch_max_abs_probs": float(np.abs(o16["probs"] - ref["probs"]).max()),
        }
        row["fp16_path"] = str(p16)
    return row


def parse_cases(cases: str) -> list[tuple[str, str, str]]:
    """``variant:exporter:formulation,...`` -> [(variant, exporter, formulation), ...]."""
    parsed = [tuple(case.strip().split(":")) for case in cases.split(",") if case.strip()]
    bad = [":".join(case) for case in parsed if len(case) != 3 or not all(case)]
    if bad or not parsed:
        raise VCEError(f"--cases: {', '.join(bad) or 'none given'}; write variant:exporter:formulation,...")
    return parsed  # type: ignore[return-value]


@app.command("export")
def export_command(
    model: Annotated[
        str, typer.Option(help="model config name (biomedclip = full size, tiny)")
    ] = "biomedclip",
    cases: Annotated[str, typer.Option(help="variant:exporter:formulation,...")] = ",".join(DEFAULT_CASES),
    opset: Annotated[int, typer.Option(help="ONNX opset")] = 17,
    batch: Annotated[int, typer.Option(min=1, help="batch of the ORT CPU timing")] = 8,
    reps: Annotated[int, typer.Option(min=1, help="timed rounds (median per graph)")] = 7,
    fp16: Annotated[
        bool, typer.Option("--fp16/--no-fp16", help="also convert and time each fp16 graph")
    ] = True,
    json_path: Annotated[Path | None, typer.Option("--json", help="also write the JSON here")] = None,
) -> None:
    """Exporters and attention formulations: export time, graph size, ORT CPU speed, parity."""
    chosen = parse_cases(cases)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for variant, exporter, form in chosen:
            row = run_case(model, variant, exporter, form, Path(tmp), opset, fp16)
            rows.append(row)
            f16 = row.get("fp16", {})
            print(
                f"{variant:6s} {exporter:11s} {form:18s} export {row['export_seconds']:7.1f}s "
                f"nodes {row['node_count']:5d} {row['bytes'] / 1e6:7.1f} MB |dp| fp32 {row['fp32_max_abs_probs']:.1e}"
                + (f"  fp16 |dp| {f16['check'].get('max_abs_probs', float('nan')):.1e}" if f16 else ""),
                flush=True,
            )
        for key in ("path", "fp16_path"):
            paths = [Path(r[key]) for r in rows if key in r]
            if not paths:
                continue
            speeds = interleaved_speed(paths, batch, reps)
            for row, speed in zip([r for r in rows if key in r], speeds, strict=True):
                target = row if key == "path" else row["fp16"]
                target["ort_cpu_images_per_s"] = speed
                print(f"ORT CPU {'fp32' if key == 'path' else 'fp16'} {row['variant']:6s} {row['exporter']:11s} "
                      f"{row['formulation']:18s} {speed:7.2f} images/s (batch {batch}, median of {reps})",
                      flush=True)  # fmt: skip
            for p in paths:
                p.unlink()
        for row in rows:
            row.pop("path", None)
            row.pop("fp16_path", None)
    text = json.dumps({"model": model, "batch": batch, "cases": rows}, indent=2)
    print(text)
    if json_path:
        write_text(json_path, text + "\n")


def main() -> None:
    run_cli(app, "bench_export")


if __name__ == "__main__":
    main()
