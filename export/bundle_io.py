"""Write bundles from models: ``model.onnx`` + ``manifest.json`` (through vce.runtime.bundle), fp16 graph.

The manifest is vce.runtime.bundle's; this module only fills it. The labels, thresholds, variant and
preprocessing also go into each graph's ``metadata_props`` (keys ``vce.*``), so a lone ONNX file still
says what it outputs.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from torch import nn

from vce.export.fp16 import FP16_ATOL_PROBS, Fp16Report, convert_fp16
from vce.export.onnx_export import (
    DEFAULT_EXPORTER,
    DEFAULT_FORMULATION,
    DEFAULT_OPSET,
    ExportResult,
    export_onnx,
    set_metadata,
)
from vce.export.uint8_input import input_description
from vce.runtime.bundle import GRAPH_FILES, MANIFEST, Bundle, Manifest
from vce.runtime.errors import VCEError
from vce.runtime.labels import LABELS
from vce.runtime.lazy import require

PAPER_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")


def graph_metadata(manifest: Manifest) -> dict[str, str]:
    """The ``metadata_props`` every bundle graph carries (all values are strings)."""
    return {
        "vce.format": "vce-bundle-graph",
        "vce.schema_version": str(manifest.schema_version),
        "vce.vce_version": manifest.vce_version,
        "vce.labels": json.dumps(list(manifest.labels)),
        "vce.thresholds": json.dumps({name: float(manifest.thresholds[name]) for name in manifest.labels}),
        "vce.variant": str(manifest.model.get("variant", "")),
        "vce.preprocess": json.dumps(manifest.preprocess),
    }


def resolve_model(
    spec: str, variant: str | None = None, *, seed: int = 0
) -> tuple[nn.Module, dict[str, Any]]:
    """A model for export and its manifest description.

    ``spec``: a model config name (``tiny``, ``biomedclip``: random weights, ``variant`` applies), a
    vce checkpoint (run folder or ``model.safetensors``) or a paper checkpoint (.pt/.pth).
    """
    import torch

    from vce.train.config import available_configs

    path = Path(spec)
    info: dict[str, Any] = {"source": spec}
    if spec in available_configs() and not path.exists():
        from vce.train.factory import create_model

        torch.manual_seed(seed)
        overrides = {"variant": variant} if variant else {}
        model = create_model(spec, **overrides)
        info.update(random_weights=True, seed=seed)
    elif path.exists():
        if path.is_file() and path.suffix in PAPER_SUFFIXES:
            from vce.train.paper_checkpoint import load_paper_checkpoint

            model = load_paper_checkpoint(path)
        else:
            from vce.train.checkpoint import load_model

            model = load_model(path)
        if variant and variant != model.config.variant:
            raise VCEError(
                f"{spec}: the checkpoint is a {model.config.variant!r} model; --variant {variant} applies only "
                "to random-weight model specs (tiny, biomedclip)"
            )
        info.update(random_weights=False, source_sha256=_source_digest(path))
    else:
        raise VCEError(
            f"{spec}: neither a checkpoint (run folder, model.safetensors, paper .pth) nor a model spec "
            f"({', '.join(available_configs())})"
        )
    model = model.eval()
    cfg = model.config
    info.update(name=cfg.name, variant=cfg.variant, config=cfg.to_dict())
    return model, info


def _source_digest(path: Path) -> str:
    """sha256 of a checkpoint file, or of a run folder's files (name + content)."""
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.is_file())
    for f in files:
        h.update(f.name.encode())
        with open(f, "rb") as fh:
            while block := fh.read(1 << 20):
                h.update(block)
    return h.hexdigest()


def _old_bundle_files(root: Path) -> set[str]:
    """Files the folder's previous manifest lists (graphs, engines, sidecars)."""
    mpath = root / MANIFEST
    if not mpath.is_file():
        return set()
    try:
        old = json.loads(mpath.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return set()
    names = set(old.get("files", {})) | {e.get("file", "") for e in old.get("engines", [])}
    names |= {e.get("sidecar", "") for e in old.get("engines", [])}
    return {n for n in names if n}


def _remove_stale(root: Path, names: set[str]) -> None:
    """A fresh export invalidates the previous graphs and engines of this folder: remove them."""
    for name in names:
        p = root / name
        if p.is_file() and p.resolve().parent == root.resolve():
            with contextlib.suppress(OSError):
                p.unlink()


def write_bundle(
    model: nn.Module,
    root: str | os.PathLike[str],
    *,
    model_info: dict[str, Any] | None = None,
    exporter: str = DEFAULT_EXPORTER,
    opset: int = DEFAULT_OPSET,
    formulation_name: str | None = DEFAULT_FORMULATION,
    check: bool = True,
    input_kind: str = "float32",
) -> tuple[Bundle, ExportResult]:
    """Export ``model`` into a new bundle at ``root`` (``model.onnx`` + manifest); returns both results.

    ``input_kind`` "uint8": the graphs take uint8 RGB crops [N,S,S,3] (vce.export.uint8_input).
    """
    cfg = getattr(model, "config", None)
    info = dict(model_info or {})
    if cfg is not None:
        info.setdefault("name", cfg.name)
        info.setdefault("variant", cfg.variant)
        info.setdefault("config", cfg.to_dict())
        if list(cfg.labels) != list(LABELS):
            raise VCEError("the model's labels are not the 17 RARE-VISION labels in order; cannot bundle it")
    info.update(exporter=exporter, opset=opset, formulation=formulation_name)
    manifest = Manifest(model=info)
    if cfg is not None:
        manifest.preprocess = dict(cfg.preprocess)
        size = int(cfg.preprocess.get("image_size", 224))
        manifest.input = input_description(input_kind, size)
    elif input_kind != "float32":
        manifest.input = input_description(input_kind, int(manifest.input["shape"][-1]))
    bundle = Bundle.create(root)
    stale = _old_bundle_files(bundle.root)
    name = GRAPH_FILES["fp32"]
    result = export_onnx(
        model,
        bundle.root / name,
        exporter=exporter,
        opset=opset,
        formulation_name=formulation_name,
        image_size=int(manifest.preprocess_spec().image_size),
        metadata=graph_metadata(manifest),
        check=check,
        input_kind=input_kind,
        spec=manifest.preprocess_spec(),
    )
    # only now (the export succeeded) is the previous content of the folder stale
    _remove_stale(bundle.root, stale - {name})
    bundle.manifest = manifest
    bundle.add_file(
        name,
        "fp32",
        exporter=exporter,
        opset=opset,
        formulation=formulation_name,
        node_count=result.audit.node_count,
        ort_check_max_abs=result.check,
    )
    bundle.save()
    return bundle, result


def add_fp16(
    root: str | os.PathLike[str], *, atol_probs: float = FP16_ATOL_PROBS, check: bool = True
) -> tuple[Bundle, Fp16Report]:
    """Convert the bundle's fp32 graph to the typed fp16 graph, record it in the manifest."""
    onnx = require("onnx", "the fp16 conversion")
    bundle = Bundle.load(root)
    src = bundle.graph("fp32")
    name = GRAPH_FILES["fp16"]
    report = convert_fp16(src, bundle.root / name, atol_probs=atol_probs, check=check)
    # the converter keeps metadata_props; make sure they are the manifest's current ones
    model = onnx.load(str(bundle.root / name))
    for key, value in graph_metadata(bundle.manifest).items():
        set_metadata(model, key, value)
    from vce.runtime.atomic import atomic_path

    with atomic_path(bundle.root / name) as tmp:
        onnx.save(model, str(tmp))
    # a rebuilt fp16 graph invalidates engines built from the previous one
    stale = [e.get("file") for e in bundle.manifest.engines if e.get("source") == name]
    for eng in stale:
        if eng:
            bundle.remove_file(eng)
    bundle.add_file(
        name,
        "fp16",
        source=src.name,
        kept_fp32=report.kept_fp32,
        fp16_fraction=round(report.fp16_fraction, 4),
        check=report.check,
    )
    bundle.save()
    return bundle, report
