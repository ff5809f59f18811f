"""Forward throughput (images/s) of the model on CPU for each attention variant and formulation.

    python bench/bench_forward.py                       # full-size biomedclip, batch 8
    python bench/bench_forward.py --model tiny --iters 5 --json out.json
    python bench/bench_forward.py --quick --json out.json  # tiny model, batch 2: checks the script only

Random weights (the speed does not depend on them), fp32, ``torch.inference_mode``, eval mode.
Prints a table and then one JSON document on stdout (also written to ``--json`` if given).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from vce.runtime.atomic import write_json
from vce.runtime.cliapp import VCETyper
from vce.runtime.errors import VCEError, run_cli

app = VCETyper()

#: formulations worth timing per variant (for ``paper`` the equal-heads forms are the matmul one)
FORMULATIONS = {
    "none": ["timm"],
    "paper": ["sdpa", "matmul"],
    "diff": ["sdpa", "matmul", "equal-heads", "equal-heads-split"],
}


def bench(model_name: str, variants: list[str], batch: int, warmup: int, iters: int) -> dict[str, Any]:
    import torch
    from rich.console import Console
    from rich.progress import Progress

    from vce.train.factory import create_model
    from vce.train.layers.diff_attention import set_formulation

    rows: list[dict[str, Any]] = []
    jobs = [(v, f) for v in variants for f in FORMULATIONS[v]]
    with Progress(console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task("benchmarking", total=len(jobs) * (warmup + iters))
        for variant in variants:
            torch.manual_seed(0)
            model = create_model(model_name, variant=variant).eval()
            size = model.config.image_size
            x = torch.randn(batch, 3, size, size)
            for formulation in FORMULATIONS[variant]:
                if variant != "none":
                    set_formulation(model, formulation)
                times = []
                with torch.inference_mode():
                    for i in range(warmup + iters):
                        t = time.perf_counter()
                        model(x)
                        if i >= warmup:
                            times.append(time.perf_counter() - t)
                        progress.advance(task)
                median = statistics.median(times)
                rows.append(
                    dict(
                        variant=variant,
                        formulation=formulation,
                        images_per_s=round(batch / median, 3),
                        best_images_per_s=round(batch / min(times), 3),
                        median_batch_s=round(median, 4),
                        times_s=[round(t, 4) for t in times],
                    )
                )
    return dict(
        model=model_name,
        batch=batch,
        warmup=warmup,
        iters=iters,
        device="cpu",
        torch=torch.__version__,
        threads=torch.get_num_threads(),
        cpu_count=os.cpu_count(),
        processor=platform.processor() or platform.machine(),
        results=rows,
    )


def print_table(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"{report['model']} forward on CPU, batch {report['batch']}, {report['threads']} threads"
    )
    for col in ("variant", "formulation", "images/s (median)", "images/s (best)", "s/batch"):
        table.add_column(col)
    for r in report["results"]:
        table.add_row(
            r["variant"],
            r["formulation"],
            f"{r['images_per_s']:.2f}",
            f"{r['best_images_per_s']:.2f}",
            f"{r['median_batch_s']:.3f}",
        )
    Console(stderr=True).print(table)


@app.command("forward")
def forward_command(
    model: Annotated[
        str, typer.Option(help="model config name (biomedclip = full size, tiny)")
    ] = "biomedclip",
    variants: Annotated[str, typer.Option(help="comma-separated attention variants")] = "none,paper,diff",
    batch: Annotated[int, typer.Option(min=1)] = 8,
    warmup: Annotated[int, typer.Option(min=0)] = 1,
    iters: Annotated[int, typer.Option(min=1)] = 3,
    threads: Annotated[int, typer.Option(min=0, help="torch CPU threads (0: torch's default)")] = 0,
    json_path: Annotated[Path | None, typer.Option("--json", help="also write the JSON report here")] = None,
    quick: Annotated[
        bool, typer.Option("--quick", help="tiny model, batch 2, 2 iterations (a smoke run)")
    ] = False,
) -> None:
    """Forward images/s per attention variant and formulation."""
    import torch

    if quick:
        model, batch, warmup, iters = "tiny", 2, 1, 2
    chosen = [v.strip() for v in variants.split(",") if v.strip()]
    bad = [v for v in chosen if v not in FORMULATIONS]
    if bad:
        raise VCEError(f"unknown variant(s) {', '.join(bad)}; choose from {', '.join(FORMULATIONS)}")
    if threads:
        torch.set_num_threads(threads)
    report = bench(model, chosen, batch, warmup, iters)
    print_table(report)
    print(json.dumps(report, indent=2))
    if json_path:
        write_json(json_path, report)


def main() -> None:
    run_cli(app, "bench_forward")


if __name__ == "__main__":
    main()
