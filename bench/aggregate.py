"""Ratios and the markdown table of ``bench/run`` from the per-benchmark JSON results (stdlib only).

``build_ratios(results)`` turns ``{benchmark name: its JSON result or None}`` into named ratios, each
with its value, the issue's target, pass/fail and the raw numbers it came from; ``render_markdown``
writes the report (machine, ratios, benchmark status) as markdown; ``parse_demo_output`` reads the
demo's final mAP line.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

#: the benchmarks bench/run knows, in run order (cheap first)
BENCHMARKS = (
    "stride", "calibration", "memory", "pipeline", "forward", "ort-vs-torch", "e2e", "int8", "export", "live",
    "demo",
)  # fmt: skip

Result = Mapping[str, Any] | None
_OPS = {
    ">=": lambda v, t: v >= t,
    ">": lambda v, t: v > t,
    "<": lambda v, t: v < t,
    "<=": lambda v, t: v <= t,
}


def _ratio(
    benchmark: str,
    label: str,
    value: float | None,
    unit: str,
    target: tuple[str, float] | None,
    raw: dict[str, Any],
) -> dict[str, Any]:
    op, threshold = target if target else (None, None)
    ok = None if value is None or op is None else bool(_OPS[op](value, threshold))
    return {
        "benchmark": benchmark,
        "label": label,
        "value": None if value is None else round(float(value), 4),
        "unit": unit,
        "target": None if op is None else f"{op} {threshold:g}",
        "pass": ok,
        "raw": raw,
    }


def _div(a: Any, b: Any) -> float | None:
    try:
        return float(a) / float(b) if float(b) else None
    except (TypeError, ValueError):
        return None


def _get(d: Any, *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, Mapping) or k not in d:
            return None
        d = d[k]
    return d


def _ort_vs_torch(res: Result) -> dict[str, dict[str, Any]]:
    r = _get(res, "ort_vs_torch") or {}
    keys = ("model", "batch", "torch_eager_fps", "ort_cpu_int8_dynamic_fps", "int8_max_abs_prob_diff")
    raw = {k: r.get(k) for k in keys}
    raw_fp32 = {
        k: r.get(k)
        for k in (
            "torch_eager_fps",
            "ort_cpu_fp32_fps",
            "sgemm_gflops",
            "torch_gflops",
            "fp32_ceiling_vs_torch",
        )
    }
    return {
        "ort_cpu_vs_torch_eager": _ratio(
            "ort-vs-torch",
            "ORT CPU (default graph: dynamic INT8) / PyTorch eager fp32 images/s (ViT-B/16)",
            _div(r.get("ort_cpu_int8_dynamic_fps"), r.get("torch_eager_fps")),
            "x",
            (">=", 1.8),
            raw,
        ),
        "ort_cpu_fp32_vs_torch_eager": _ratio(
            "ort-vs-torch",
            "ORT CPU fp32 graph / PyTorch eager fp32 images/s (ViT-B/16)",
            _div(r.get("ort_cpu_fp32_fps"), r.get("torch_eager_fps")),
            "x",
            None,
            raw_fp32,
        ),
    }


def _int8(res: Result) -> dict[str, dict[str, Any]]:
    graphs = _get(res, "graphs") or {}
    quant = {q.get("mode"): q for q in (_get(res, "quantize") or [])}
    fp32 = _get(graphs, "fp32", "images_per_s")
    out = {}
    for mode, role in (("static", "int8"), ("dynamic", "int8-dynamic")):
        speed = _get(graphs, role, "images_per_s")
        drift = _get(quant.get(mode), "drift") or {}
        raw = {
            "model": _get(res, "model"),
            "fp32_images_per_s": fp32,
            f"{role}_images_per_s": speed,
            "max_abs_prob": drift.get("max_abs_prob"),
            "events_changed": drift.get("events_changed"),
            "within_tolerance": _get(quant.get(mode), "within_tolerance"),
        }
        out[f"int8_{mode}_vs_fp32"] = _ratio(
            "int8", f"INT8 {mode} / fp32 ORT CPU images/s", _div(speed, fp32), "x", None, raw
        )
    return out


def _e2e(res: Result) -> dict[str, dict[str, Any]]:
    r = _get(res, "e2e") or {}
    raw = {k: r.get(k) for k in ("model", "frames", "batch", "pure_inference_fps")}
    pure = r.get("pure_inference_fps")
    return {
        "e2e_wall_vs_pure": _ratio(
            "e2e",
            "vce-run end-to-end (wall) / pure inference frames/s",
            _div(r.get("e2e_wall_fps"), pure),
            "x",
            (">=", 0.9),
            {**raw, "e2e_wall_fps": r.get("e2e_wall_fps")},
        ),
        "e2e_pipeline_vs_pure": _ratio(
            "e2e",
            "vce-run pipeline loop / pure inference frames/s",
            _div(r.get("e2e_pipeline_fps"), pure),
            "x",
            (">=", 0.9),
            {**raw, "e2e_pipeline_fps": r.get("e2e_pipeline_fps")},
        ),
    }


def _memory(res: Result) -> dict[str, dict[str, Any]]:
    runs = _get(res, "memory", "runs") or {}
    sizes = sorted(runs, key=int)
    peaks = {f"peak_rss_mb@{n}": _get(runs, n, "peak_rss_mb") for n in sizes}
    value = None
    if len(sizes) >= 2 and None not in peaks.values():
        value = float(runs[sizes[-1]]["peak_rss_mb"]) - float(runs[sizes[0]]["peak_rss_mb"])
    label = f"peak memory growth {sizes[0]} -> {sizes[-1]} frames" if len(sizes) >= 2 else "memory growth"
    return {"memory_growth_mb": _ratio("memory", label, value, "MB", ("<", 50), peaks)}


def _calibration(res: Result) -> dict[str, dict[str, Any]]:
    r = res or {}
    raw = {k: r.get(k) for k in ("frames", "videos", "configurations", "folds", "heldout_map50_cv")}
    frames = r.get("frames")
    label = f"calibration time on {frames:,} frames" if isinstance(frames, int) else "calibration time"
    return {
        "calibration_seconds": _ratio(
            "calibration", label, r.get("calibration_seconds"), "s", ("<", 600), raw
        )
    }


def _demo(res: Result) -> dict[str, dict[str, Any]]:
    r = res or {}
    raw = {"final_line": r.get("final_line")}
    return {
        "demo_wall_s": _ratio("demo", "vce-demo wall time", r.get("wall_s"), "s", ("<", 180), raw),
        "demo_map50": _ratio("demo", "demo held-out mAP@0.5", r.get("mAP@0.5"), "", (">=", 0.8), raw),
        "demo_map95": _ratio("demo", "demo held-out mAP@0.95", r.get("mAP@0.95"), "", None, raw),
    }


def _forward(res: Result) -> dict[str, dict[str, Any]]:
    rows = _get(res, "results") or []
    base = next((r for r in rows if r.get("variant") == "none"), None)
    out = {}
    for r in rows:
        if r is base or r.get("variant") == "none":
            continue
        name = f"{r.get('variant')}/{r.get('formulation')}"
        raw = {
            "model": _get(res, "model"),
            "batch": _get(res, "batch"),
            f"{name} images/s": r.get("images_per_s"),
            "none images/s": _get(base, "images_per_s"),
        }
        out[f"forward_{r.get('variant')}_{r.get('formulation')}_vs_none"] = _ratio(
            "forward",
            f"forward images/s {name} / none",
            _div(r.get("images_per_s"), _get(base, "images_per_s")),
            "x",
            None,
            raw,
        )
    return out


def _export(res: Result) -> dict[str, dict[str, Any]]:
    cases = [c for c in (_get(res, "cases") or []) if c.get("ort_cpu_images_per_s") is not None]
    if not cases:
        return {}
    base = cases[0]

    def key(c: Mapping[str, Any]) -> str:
        return f"{c.get('variant')}:{c.get('exporter')}:{c.get('formulation')}"

    out = {}
    for c in cases[1:]:
        raw = {
            "model": _get(res, "model"),
            f"{key(c)} images/s": c.get("ort_cpu_images_per_s"),
            f"{key(base)} images/s": base.get("ort_cpu_images_per_s"),
            "export_seconds": c.get("export_seconds"),
        }
        out[f"export_{key(c).replace(':', '_')}_vs_first"] = _ratio(
            "export",
            f"ORT CPU images/s {key(c)} / {key(base)}",
            _div(c.get("ort_cpu_images_per_s"), base.get("ort_cpu_images_per_s")),
            "x",
            None,
            raw,
        )
    return out


def _stride(res: Result) -> dict[str, dict[str, Any]]:
    stride = _get(res, "stride") or {}
    if not stride:
        return {}
    noise = sorted(stride)[0]  # the lowest noise level
    out = {}
    for name, score in (_get(stride, noise, "results") or {}).items():
        raw = {
            "noise": noise.removeprefix("noise"),
            "mAP@0.95": score.get("mAP@0.95"),
            "identical_events": score.get("identical_events"),
        }
        out[f"{name}_map50"] = _ratio(
            "stride", f"{name} events, mAP@0.5 against stride 1", score.get("mAP@0.5"), "", None, raw
        )
    return out


def _live(res: Result) -> dict[str, dict[str, Any]]:
    r = _get(res, "live") or {}
    out = {
        "live_max_rate_no_skip": _ratio(
            "live",
            "vce-run --follow: highest source rate kept up with, no frame skipped (frames/s)",
            r.get("max_rate_no_skip"),
            "",
            (">=", 6),  # a capsule recorder sends 2-6 frames/s
            {
                "model": r.get("model"),
                "first_rate_skipping": r.get("first_rate_skipping"),
                "offline_fps": r.get("offline_fps"),
            },
        )
    }
    for rate in ("2", "6"):
        row = _get(r, "delay", rate) or {}
        bound = row.get("delay_bound_frames")
        out[f"live_delay_{rate}fps_max_frames"] = _ratio(
            "live",
            f"--follow at {rate} frames/s: longest event delay (frames after its last frame)",
            _get(row, "delay_frames", "max"),
            "",
            ("<=", float(bound)) if isinstance(bound, (int, float)) else None,
            {
                "median_frames": _get(row, "delay_frames", "median"),
                "median_s": _get(row, "delay_s", "median"),
                "max_s": _get(row, "delay_s", "max"),
                "bound_frames": bound,
                "skipped": row.get("skipped"),
                "identical_to_offline": row.get("identical_to_offline"),
            },
        )
    for key, suffix, size in (("throughput", "", "224"), ("throughput_448px", "_448px", "448")):
        main, reader = (_get(r, key, p, "loop_fps") for p in ("main", "reader"))
        out[f"live_reader_vs_main_prep{suffix}"] = _ratio(
            "live",
            f"--follow loop frames/s on {size}-px frames, preprocessing in the reader thread / in the main thread",
            _div(reader, main),
            "x",
            None,
            {"main_fps": main, "reader_fps": reader},
        )
    off, on = (_get(r, "spin", s, "cpu_ms_per_frame") for s in ("False", "True"))
    out["live_cpu_spin_off_vs_on"] = _ratio(
        "live",
        "--follow CPU ms per frame, ONNX Runtime threads not spinning / spinning",
        _div(off, on),
        "x",
        None,
        {"spin_off_ms": off, "spin_on_ms": on, "rate": _get(r, "spin", "False", "rate")},
    )
    return out


def _pipeline(res: Result) -> dict[str, dict[str, Any]]:
    """The pipeline ceiling (bench_pipeline.py): null-runner frames/s against decode, per core, 1080p e2e."""
    rows = _get(res, "inputs") or {}
    machine = _get(res, "machine") or {}
    cpu = {
        "cpu_flags": ", ".join(machine.get("cpu_flags") or []) or None,
        "cores": machine.get("cores_usable"),
    }
    out: dict[str, dict[str, Any]] = {}
    mp4 = rows.get("336_mp4") or {}
    decode = _get(mp4, "decode_1_thread", "fps")
    for dtype in ("float32", "uint8"):
        fps = _get(mp4, f"{dtype}_2w", "fps")
        out[f"pipeline_336_mp4_{dtype}_vs_decode"] = _ratio(
            "pipeline",
            f"336² MP4, null runner, 2 workers, {dtype} in / single-threaded OpenCV decode frames/s",
            _div(fps, decode),
            "x",
            (">=", 0.7),
            {
                "pipeline_fps": fps,
                "decode_fps": decode,
                "frames_per_cpu_s": _get(mp4, f"{dtype}_2w", "frames_per_cpu_s"),
                "cores_available": mp4.get("cores_available"),
                "codec": mp4.get("codec"),
                **cpu,
            },
        )
    png = rows.get("336_png") or {}
    out["pipeline_336_png_fps_per_core"] = _ratio(
        "pipeline",
        "336² PNG folder, null runner, 2 workers, frames/s per core",
        _get(png, "float32_2w", "fps_per_core"),
        "frames/s",
        (">=", 250),
        {
            "fps": _get(png, "float32_2w", "fps"),
            "frames_per_cpu_s": _get(png, "float32_2w", "frames_per_cpu_s"),
            "uint8_fps_per_core": _get(png, "uint8_2w", "fps_per_core"),
            "cores_available": png.get("cores_available"),
            **cpu,
        },
    )
    for key, row in rows.items():
        size, kind = key.rsplit("_", 1)
        size = f"{size}²" if size.isdigit() else size
        if key in ("336_png",):
            continue
        for dtype in ("float32", "uint8"):
            r = _get(row, f"{dtype}_2w") or {}
            out[f"pipeline_{key}_{dtype}_per_core"] = _ratio(
                "pipeline",
                f"{size} {kind.upper()}, null runner, 2 workers, {dtype} in: frames/s per core",
                r.get("fps_per_core"),
                "frames/s",
                None,
                {
                    "fps": r.get("fps"),
                    "frames_per_cpu_s": r.get("frames_per_cpu_s"),
                    "codec": row.get("codec"),
                },
            )
    e2e = _get(res, "e2e_1080p") or {}
    before = e2e.get("before_fps")
    for dtype in ("float32", "uint8"):
        r = _get(e2e, "runs", dtype) or {}
        out[f"e2e_1080p_{dtype}_fps"] = _ratio(
            "pipeline",
            f"1080p H.264 end to end, ORT CPU, demo's small model, {dtype} graph: frames/s",
            r.get("e2e_pipeline_fps"),
            "frames/s",
            (">=", 4 * float(before)) if before and dtype == "float32" else None,
            {
                "before_fps": before,
                "pure_inference_fps": r.get("pure_inference_fps"),
                "model": e2e.get("model"),
            },
        )
    return out


_BUILDERS = {
    "ort-vs-torch": _ort_vs_torch,
    "int8": _int8,
    "e2e": _e2e,
    "memory": _memory,
    "calibration": _calibration,
    "demo": _demo,
    "forward": _forward,
    "export": _export,
    "stride": _stride,
    "live": _live,
    "pipeline": _pipeline,
}


def build_ratios(results: Mapping[str, Result]) -> dict[str, dict[str, Any]]:
    """The ratios of every benchmark in ``results`` ({benchmark: its JSON, or None when it failed}).

    The targeted ratios of a benchmark that failed are still listed, with value None."""
    ratios: dict[str, dict[str, Any]] = {}
    for name, build in _BUILDERS.items():
        if name in results:
            ratios.update(build(results[name]))
    return ratios


# --- demo output -----------------------------------------------------------------------------------

_TOKEN = re.compile(r"mAP@0\.95|mAP@0\.5|\d+\.\d+(?:[eE][-+]?\d+)?|\d+")


def parse_demo_output(text: str) -> dict[str, Any]:
    """The last line mentioning mAP@0.5 and the figures it gives for mAP@0.5 / mAP@0.95 (None if absent).

    Each number is given to the earliest label still waiting for one, so ``mAP@0.5 0.91 mAP@0.95 0.4``,
    ``{"mAP@0.5": 0.91, "mAP@0.95": 0.4}`` and ``mAP@0.5 / mAP@0.95: 0.91 / 0.40`` all read alike.
    """
    lines = [ln.strip() for ln in text.splitlines() if "mAP@0.5" in ln]
    out: dict[str, Any] = {"final_line": lines[-1] if lines else None, "mAP@0.5": None, "mAP@0.95": None}
    if not lines:
        return out
    waiting: list[str] = []
    for tok in _TOKEN.findall(lines[-1]):
        if tok.startswith("mAP@"):
            waiting.append(tok)
        elif waiting:
            label = waiting.pop(0)
            if out[label] is None:
                out[label] = float(tok)
    return out


# --- markdown --------------------------------------------------------------------------------------


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        text = f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    else:
        text = str(value)
    return {"x": f"{text}x", "MB": f"{text} MB", "s": f"{text} s", "frames/s": f"{text} frames/s"}.get(
        unit, text
    )


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(report: Mapping[str, Any]) -> str:
    """The report as markdown: header, machine, the ratio table, the per-benchmark status table."""
    machine = report.get("machine", {})
    benches = report.get("benchmarks", {})
    lines = ["# vce benchmarks", ""]
    lines.append(f"Run {report.get('created', '?')}, mode **{'quick' if report.get('quick') else 'full'}**.")
    if report.get("quick"):
        lines.append(
            "Quick mode: tiny models and small sizes to check the benchmarks run; the values are not "
            "the project's figures and pass/fail against the targets means nothing."
        )
    lines += ["", "## Machine", "", "| | |", "|---|---|"]
    for key, value in machine.items():
        if isinstance(value, Mapping):
            value = ", ".join(f"{k} {_fmt(v)}" for k, v in value.items())
        elif isinstance(value, list):
            value = ", ".join(map(str, value)) or "none"
        lines.append(f"| {_cell(str(key))} | {_cell(_fmt(value))} |")
    lines += ["", "## Ratios", "", "| ratio | value | target | pass | raw numbers |", "|---|---|---|---|---|"]
    for ratio in report.get("ratios", {}).values():
        status = benches.get(ratio["benchmark"], {}).get("status", "ok")
        if ratio["value"] is None:
            verdict = status if status != "ok" else "missing"
        elif ratio["pass"] is None:
            verdict = "info"
        else:
            verdict = "pass" if ratio["pass"] else "**FAIL**"
        raw = "; ".join(f"{k} {_fmt(v)}" for k, v in ratio["raw"].items() if v is not None)
        lines.append(
            f"| {_cell(ratio['label'])} | {_fmt(ratio['value'], ratio['unit'])} | {ratio['target'] or '—'} "
            f"| {verdict} | {_cell(raw)} |"
        )
    lines += ["", "## Benchmarks", "", "| benchmark | status | seconds | note |", "|---|---|---|---|"]
    for name, bench in benches.items():
        note = bench.get("error") or ""
        note_lines = note.strip().splitlines() or [""]
        note = note_lines[0] if bench.get("status") == "timeout" else note_lines[-1]
        lines.append(
            f"| {name} | {bench.get('status')} | {_fmt(bench.get('seconds'))} | {_cell(note[:200])} |"
        )
    return "\n".join(lines) + "\n"
