"""Write bundles from models: ``model.onnx`` + ``manifest.json`` (through vce.runtime.bundle), fp16 graph.

The manifest is vce.runtime.bundle's; this module only fills it. The labels, thresholds, variant and
preprocessing also go into each graph's ``metadata_props`` (keys ``vce.*``), so a lone ONNX file still
says what it outputs.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from vce.export.exporters import DEFAULT_EXPORTER, DEFAULT_OPSET
from vce.export.fp16 import FP16_ATOL_PROBS, Fp16Report, convert_fp16
from vce.export.onnx_export import (
    DEFAULT_FORMULATION,
    ExportResult,
    export_onnx,
    set_metadata,
)
from vce.export.uint8_input import input_description
from vce.runtime.bundle import FORMAT, GRAPH_FILES, MANIFEST, Bundle, Manifest, sha256_file
from vce.runtime.errors import VCEError
from vce.runtime.formats.jsonfile import read_json
from vce.runtime.labels import LABELS
from vce.runtime.lazy import require


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


#: how vce names the files of each role it writes (a file is removed only if it fits its role)
_VCE_NAMES: dict[str, Callable[[str], bool]] = {
    **{role: (lambda n, f=fname: n == f) for role, fname in GRAPH_FILES.items()},
    "engine": lambda n: n.endswith(".engine"),
    "engine-sidecar": lambda n: n.endswith(".engine.json"),
    "calibration-plot": lambda n: n.endswith(".png"),
}


def _earlier_bundle(root: Path) -> Manifest | None:
    """The manifest of a vce bundle in ``root`` (``format: vce-bundle``), else None."""
    mpath = root / MANIFEST
    if not mpath.is_file():
        return None
    try:
        data = read_json(mpath)
    except VCEError:
        return None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        return None
    try:
        return Manifest.from_dict(data, str(mpath))
    except VCEError:  # a vce bundle of another version: replace it, remove nothing
        return Manifest()


def _vce_files(root: Path, old: Manifest) -> set[str]:
    """Files of the earlier bundle that vce wrote: listed, named as vce names their role, unchanged."""
    names = set()
    for name, entry in old.files.items():
        fits = _VCE_NAMES.get(str(entry.get("role")))
        path = root / name
        if fits is None or not fits(name) or path.is_symlink() or not path.is_file():
            continue
        with contextlib.suppress(OSError):
            if sha256_file(path) == entry.get("sha256"):
                names.add(name)
    return names


def check_output_folder(root: str | os.PathLike[str], *, force: bool = False) -> set[str]:
    """May ``vce-export onnx -o root`` write there? Returns the earlier bundle's files it may remove.

    A missing or empty folder, or a vce bundle (its manifest says ``format: vce-bundle``), may be
    (re)written; any other non-empty folder is refused unless ``force``, and then vce writes beside
    its files. Only files the earlier bundle wrote are ever removed (listed in its manifest, named
    as vce names that role, and with the hash the manifest records); a file vce did not write is
    never deleted nor replaced.
    """
    path = Path(root)
    if not path.exists() and not path.is_symlink():
        return set()
    if not path.is_dir():
        raise VCEError(f"{path}: exists and is not a folder; choose another -o folder")
    try:
        entries = {p.name for p in path.iterdir()}
    except OSError as exc:
        raise VCEError(f"{path}: cannot list the folder ({exc.strerror or exc}); choose another -o") from exc
    if not entries:
        return set()
    old = _earlier_bundle(path)
    if old is None and not force:
        raise VCEError(
            f"{path}: the folder is not empty and is not a vce bundle (no manifest.json with format "
            f"{FORMAT!r}); export into a new or empty folder, or pass --force to write the bundle beside "
            "its files (vce never deletes them)"
        )
    removable = _vce_files(path, old) if old is not None else set()
    ours = removable | ({MANIFEST} if old is not None else set())
    clash = sorted(n for n in (MANIFEST, GRAPH_FILES["fp32"]) if n in entries and n not in ours)
    if clash:
        raise VCEError(
            f"{path / clash[0]}: not written by vce, and a bundle would replace it; vce never replaces "
            "files it did not write: move it or choose another -o folder"
        )
    return removable


def _remove_stale(root: Path, names: set[str]) -> None:
    """A fresh export invalidates the previous graphs and engines of this folder: remove them."""
    for name in names:
        p = root / name
        if p.is_file() and not p.is_symlink() and p.resolve().parent == root.resolve():
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
    force: bool = False,
    input_kind: str = "float32",
) -> tuple[Bundle, ExportResult]:
    """Export ``model`` into a new bundle at ``root`` (``model.onnx`` + manifest); returns both results.

    ``root`` must be new, empty or an earlier vce bundle (see :func:`check_output_folder`; ``force``
    writes into any folder, beside its files). ``input_kind`` "uint8": the graphs take uint8 RGB
    crops [N,S,S,3] (vce.export.uint8_input).
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
    stale = check_output_folder(root, force=force)
    bundle = Bundle.create(root)
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
    report = convert_fp16(
        src,
        bundle.root / name,
        atol_probs=atol_probs,
        check=check,
        image_size=bundle.manifest.preprocess_spec().image_size,
        input_kind=str(bundle.graph_input(src.name).get("dtype", "float32")),
    )
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
