"""Which model made a per-frame CSV: a sidecar JSON beside it, and the check against a bundle.

``frames.csv`` (``vce-run``), ``val_probs.csv`` (``vce-train fit``) and ``vce-train predict``'s CSV
each get ``<stem>.provenance.json`` beside them, so the CSV stays a plain table for pandas and
spreadsheets::

    {"format": "vce-provenance", "version": 1, "csv": "frames.csv", "csv_sha256": "...",
     "made_by": "vce-run", "vce_version": "...",
     "model": {"weights_sha256": "..." | null, "name": "...", "variant": "..."},
     "graph": {"role": "fp32", "sha256": "..."} | null, "fps": {"<video>": 25.0}}

The model's identity is ``weights_sha256``, the sha256 of the weights file it was trained into
(``model.safetensors``; a paper checkpoint's ``.pth``). It is the same whether one starts from the
training run (``model_config.json`` records it, ``val_probs.csv`` carries it) or from the bundle
(``vce-export onnx`` writes it into the manifest's ``model`` section, ``vce-run`` copies it into
``frames.csv``'s sidecar along with the hash of the graph that ran). A bundle of random weights has
no weights file: then the graph hash identifies the model.

:func:`check_model` compares a CSV's sidecar with a bundle: calibration and evaluation refuse a
mismatch (unless the user passes ``--allow-other-model``) and warn when there is nothing to compare
(no sidecar, a sidecar that describes another version of the CSV, a bundle without an identity).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vce.runtime.atomic import write_json
from vce.runtime.bundle import Bundle, sha256_file, vce_version
from vce.runtime.errors import VCEError
from vce.runtime.formats.jsonfile import read_json

FORMAT = "vce-provenance"
VERSION = 1
ALLOW_FLAG = "--allow-other-model"
_SHA256 = re.compile(r"[0-9a-f]{64}")


def sidecar_path(csv_path: str | os.PathLike[str]) -> Path:
    """``DIR/frames.csv`` -> ``DIR/frames.provenance.json``."""
    p = Path(csv_path)
    return p.with_name(f"{p.stem}.provenance.json")


def _sha(value: object) -> str | None:
    return value if isinstance(value, str) and _SHA256.fullmatch(value) else None


@dataclass(frozen=True)
class Provenance:
    """What a sidecar says about its CSV (hashes validated; anything malformed reads as None)."""

    made_by: str
    weights_sha256: str | None
    graph_sha256: str | None
    graph_role: str | None
    fps: dict[str, float]


def make_record(
    csv_file: str | os.PathLike[str],
    *,
    made_by: str,
    model: dict[str, Any] | None = None,
    graph: dict[str, Any] | None = None,
    fps: dict[str, float] | None = None,
    name: str | None = None,
) -> dict[str, Any]:
    """The sidecar of ``csv_file`` as it is now (its sha256 binds the sidecar to this content).

    ``name``: the CSV's final name when ``csv_file`` is a temporary file about to be renamed.
    """
    model = model or {}
    return {
        "format": FORMAT,
        "version": VERSION,
        "csv": name or Path(csv_file).name,
        "csv_sha256": sha256_file(csv_file),
        "made_by": made_by,
        "vce_version": vce_version(),
        "model": {
            "weights_sha256": _sha(model.get("weights_sha256")),
            **{k: model[k] for k in ("name", "variant") if isinstance(model.get(k), str)},
        },
        "graph": graph,
        "fps": {k: float(v) for k, v in (fps or {}).items() if v},
    }


def write_sidecar(csv_path: str | os.PathLike[str], record: dict[str, Any]) -> Path:
    return write_json(sidecar_path(csv_path), record)


def model_of_bundle(bundle: Bundle) -> dict[str, Any]:
    """The ``model`` part of a sidecar, from a bundle manifest."""
    model = bundle.manifest.model if isinstance(bundle.manifest.model, dict) else {}
    return {k: model.get(k) for k in ("weights_sha256", "name", "variant")}


def read_provenance(csv_path: str | os.PathLike[str]) -> tuple[Provenance | None, str]:
    """The sidecar of ``csv_path`` if it exists, is well-formed and describes this very content;
    else ``(None, why not)``."""
    side = sidecar_path(csv_path)
    if not side.is_file():
        return None, f"{csv_path} has no provenance sidecar ({side.name})"
    try:
        data = read_json(side)
    except VCEError as exc:
        return None, str(exc)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        return None, f"{side} is not a vce provenance sidecar"
    if data.get("csv_sha256") != sha256_file(csv_path):
        return None, f"{side} describes another version of {Path(csv_path).name} (the CSV changed since)"
    model = data.get("model") if isinstance(data.get("model"), dict) else {}
    graph = data.get("graph") if isinstance(data.get("graph"), dict) else {}
    fps = data.get("fps") if isinstance(data.get("fps"), dict) else {}
    return (
        Provenance(
            made_by=str(data.get("made_by", "")),
            weights_sha256=_sha(model.get("weights_sha256")),
            graph_sha256=_sha(graph.get("sha256")),
            graph_role=graph.get("role") if isinstance(graph.get("role"), str) else None,
            fps={
                str(k): float(v)
                for k, v in fps.items()
                if isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < 1e6
            },
        ),
        "",
    )


def check_model(
    csv_path: str | os.PathLike[str], bundle: Bundle, *, allow_other_model: bool = False
) -> list[str]:
    """Refuse ``csv_path`` if its sidecar names another model than ``bundle``'s; returns warnings.

    Rule: when both record a weights sha256, they must be equal; otherwise the graph hash in the
    sidecar (CSVs made by ``vce-run``) must be one of the bundle's files. With nothing to compare, or
    with ``allow_other_model``, the result is a warning instead of an error.
    """
    prov, why = read_provenance(csv_path)
    if prov is None:
        return [f"{why}; cannot check that {bundle.root}'s model made it"]
    theirs = _sha(model_of_bundle(bundle).get("weights_sha256"))
    mismatch = ""
    if prov.weights_sha256 and theirs:
        if prov.weights_sha256 != theirs:
            mismatch = f"weights sha256 {prov.weights_sha256[:12]}... vs the bundle's {theirs[:12]}..."
    elif prov.graph_sha256:
        hashes = {e.get("sha256") for e in bundle.manifest.files.values() if isinstance(e, dict)}
        if prov.graph_sha256 not in hashes:
            mismatch = f"graph sha256 {prov.graph_sha256[:12]}... is none of the bundle's graphs"
    else:
        return [
            f"neither {csv_path}'s sidecar nor {bundle.root}'s manifest identifies the model's weights; "
            "cannot check that they belong together"
        ]
    if not mismatch:
        return []
    message = f"{csv_path} was made by another model than {bundle.root} ({mismatch})"
    if allow_other_model:
        return [f"{message}; used anyway ({ALLOW_FLAG})"]
    raise VCEError(
        f"{message}; use the probabilities of this bundle's model, or pass {ALLOW_FLAG} to use them anyway"
    )
