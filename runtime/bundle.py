"""The model bundle: a folder ``vce-run`` consumes, described by ``manifest.json``.

This module is the one definition of the manifest. ``vce-export`` writes bundles, ``vce-calibrate``
updates their thresholds and post-processing, ``vce-run`` loads and verifies them.

Layout::

    BUNDLE/manifest.json        schema version, labels, input spec, preprocessing, thresholds,
                                post-processing, model description, every file with its sha256
    BUNDLE/model.onnx           fp32 graph (always)
    BUNDLE/model_fp16.onnx      typed fp16 graph (vce-export fp16)
    BUNDLE/model_int8*.onnx     INT8 graphs (vce-calibrate int8)
    BUNDLE/model.engine(+.json) TensorRT engine and its sidecar (vce-export trt)
    BUNDLE/calibration.png      the calibration plot (vce-calibrate fit; for people, never read)

Trust: a bundle is untrusted input. Loading one validates the manifest against its schema
(:mod:`vce.runtime.manifest_schema`); every file it names is a plain file name inside the folder
(a symlink that leaves it is refused), listed in ``files`` and hash-checked before it is used, and
every ONNX graph is scanned before ONNX Runtime sees it (:func:`vce.runtime.onnxscan.check_graph`:
no external data, standard ops, one image input matching ``image_size``). Files vce never reads
(:data:`OPTIONAL_ROLES`, the calibration plot) are listed with their hash for the record but do not
have to match for the bundle to load.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from vce.runtime.atomic import write_json
from vce.runtime.errors import VCEError
from vce.runtime.formats.jsonfile import read_json
from vce.runtime.labels import LABELS
from vce.runtime.manifest_schema import FORMAT, MANIFEST, SCHEMA_VERSION, check_file_name, validate_manifest
from vce.runtime.onnxscan import check_graph
from vce.runtime.postprocess import PAPER, PostprocessConfig, thresholds_array
from vce.runtime.preprocess import BIOMEDCLIP, PreprocessSpec

__all__ = ["FORMAT", "GRAPH_FILES", "MANIFEST", "OPTIONAL_ROLES", "SCHEMA_VERSION", "Bundle", "Manifest"]
#: the largest manifest.json read (a real one is a few kB)
MAX_MANIFEST_BYTES = 16 << 20
#: graph roles and their conventional file names
GRAPH_FILES = {
    "fp32": "model.onnx",
    "fp16": "model_fp16.onnx",
    "int8": "model_int8.onnx",
    "int8-dynamic": "model_int8_dynamic.onnx",
}
#: roles of files that vce never reads: not required to match their hash for the bundle to load
OPTIONAL_ROLES = frozenset({"calibration-plot"})


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def vce_version() -> str:
    try:
        return metadata.version("vce")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "0+unknown"


@dataclass
class Manifest:
    """What travels with every bundle (and, partly, inside each ONNX graph's metadata_props)."""

    labels: list[str] = field(default_factory=lambda: list(LABELS))
    #: what the graphs take: float32 NCHW (normalised), or uint8 NHWC RGB (``--input uint8``); each
    #: graph/engine entry of ``files`` repeats it (``input``), see :meth:`Bundle.graph_input`
    input: dict[str, Any] = field(
        default_factory=lambda: {
            "name": "images",
            "dtype": "float32",
            "layout": "NCHW",
            "shape": ["N", 3, 224, 224],
        }
    )
    outputs: list[dict[str, Any]] = field(
        default_factory=lambda: [
            {"name": "logits", "dtype": "float32", "shape": ["N", len(LABELS)]},
            {"name": "probs", "dtype": "float32", "shape": ["N", len(LABELS)]},
        ]
    )
    preprocess: dict[str, Any] = field(default_factory=BIOMEDCLIP.to_dict)
    thresholds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(LABELS, 0.5))
    postprocess: dict[str, Any] = field(default_factory=PAPER.to_dict)
    model: dict[str, Any] = field(default_factory=dict)
    graphs: dict[str, str] = field(default_factory=dict)
    engines: list[dict[str, Any]] = field(default_factory=list)
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    calibration: dict[str, Any] = field(default_factory=dict)
    created: str = field(
        default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    )
    vce_version: str = field(default_factory=vce_version)
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "format": FORMAT,
            "vce_version": self.vce_version,
            "created": self.created,
            "labels": self.labels,
            "input": self.input,
            "outputs": self.outputs,
            "preprocess": self.preprocess,
            "thresholds": self.thresholds,
            "postprocess": self.postprocess,
            "model": self.model,
            "graphs": self.graphs,
            "engines": self.engines,
            "calibration": self.calibration,
            "files": self.files,
        }

    @classmethod
    def from_dict(cls, d: Any, source: str = MANIFEST) -> Manifest:
        """A manifest from parsed JSON, validated (:func:`~vce.runtime.manifest_schema.validate_manifest`)."""
        valid = validate_manifest(d, source)
        return cls(**{k: v for k, v in valid.items() if k in cls.__dataclass_fields__})

    # typed views --------------------------------------------------------------------------------
    def preprocess_spec(self) -> PreprocessSpec:
        return PreprocessSpec.from_dict(self.preprocess)

    def postprocess_config(self) -> PostprocessConfig:
        return PostprocessConfig.from_dict(self.postprocess)

    def thresholds_array(self) -> np.ndarray:
        return thresholds_array(self.thresholds)


class Bundle:
    """A bundle folder and its manifest."""

    def __init__(self, root: str | os.PathLike[str], manifest: Manifest) -> None:
        self.root = Path(root)
        self.manifest = manifest
        self._verified: set[str] = set()  # files hash-checked (and graphs scanned) since loading

    # creation / loading -------------------------------------------------------------------------
    @classmethod
    def create(cls, root: str | os.PathLike[str], manifest: Manifest | None = None) -> Bundle:
        path = Path(root)
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise VCEError(f"cannot create bundle folder {path}: {exc.strerror or exc}") from exc
        return cls(path, manifest or Manifest())

    @classmethod
    def load(cls, root: str | os.PathLike[str], *, verify: bool = True) -> Bundle:
        """Load and validate ``root/manifest.json``; with ``verify`` check every file vce reads now
        (present, inside the bundle, sha256 as listed, graphs scanned). Without it, files are
        checked when first used (:meth:`file`, :meth:`graph`)."""
        path = Path(root)
        mpath = path / MANIFEST
        if not path.is_dir():
            raise VCEError(f"{path}: no such bundle folder; create one with `vce-export onnx`")
        if not mpath.is_file():
            raise VCEError(
                f"{mpath}: missing; {path} is not a vce bundle (create one with `vce-export onnx`)"
            )
        data = read_json(mpath, "re-export the bundle", max_bytes=MAX_MANIFEST_BYTES)
        bundle = cls(path, Manifest.from_dict(data, source=str(mpath)))
        if verify:
            bundle.verify()
        return bundle

    def verify(self, names: list[str] | None = None) -> None:
        """Check files (``names``, or every listed file whose role vce reads): see :meth:`file`."""
        if names is None:
            names = [n for n, e in self.manifest.files.items() if e.get("role") not in OPTIONAL_ROLES]
        for name in names:
            self._check(name)

    def path_of(self, name: str) -> Path:
        """``root/name`` for a plain file name that stays inside the bundle (not checked against the manifest)."""
        check_file_name(name, f"{self.root}: file name")
        path = self.root / name
        if path.is_symlink() or path.exists():
            try:
                inside = path.resolve(strict=True).parent == self.root.resolve()
            except (OSError, RuntimeError):  # dangling or looping link
                inside = False
            if not inside:
                raise VCEError(
                    f"{path}: a link to a file outside the bundle; a bundle holds its own files: "
                    "re-export the bundle"
                )
        return path

    def _check(self, name: str) -> Path:
        entry = self.manifest.files.get(name)
        if entry is None:
            raise VCEError(f"{self.root}: {name} is not listed in the manifest")
        fpath = self.path_of(name)
        if not fpath.is_file():
            raise VCEError(f"{fpath}: listed in the bundle manifest but missing; re-export the bundle")
        digest = sha256_file(fpath)
        if digest != entry.get("sha256"):
            raise VCEError(
                f"{fpath}: sha256 {digest[:12]}... does not match the manifest ({str(entry.get('sha256'))[:12]}...); "
                "the file was changed or corrupted: re-export the bundle"
            )
        if entry.get("role") in GRAPH_FILES or name in self.manifest.graphs.values():
            check_graph(fpath, self.manifest.preprocess_spec().image_size)
        self._verified.add(name)
        return fpath

    def file(self, name: str) -> Path:
        """The path of a listed file, checked before use: a plain name inside the bundle, present,
        its sha256 as the manifest lists it, and (a graph) scanned by ``check_graph``."""
        if name in self._verified and name in self.manifest.files:
            return self.root / name
        return self._check(name)

    # editing ------------------------------------------------------------------------------------
    def add_file(self, name: str, role: str, **extra: Any) -> str:
        """Record ``root/name`` (which must exist) with its sha256 and size; returns the digest."""
        fpath = self.path_of(name)
        if not fpath.is_file():
            raise VCEError(f"{fpath}: cannot add a missing file to the bundle")
        digest = sha256_file(fpath)
        if role in GRAPH_FILES or role == "engine":  # every graph/engine of a bundle takes the bundle's input
            extra.setdefault("input", dict(self.manifest.input))
        self.manifest.files[name] = {"role": role, "sha256": digest, "bytes": fpath.stat().st_size, **extra}
        if role in GRAPH_FILES:
            self.manifest.graphs[role] = name
        self._verified.discard(name)
        return digest

    def remove_file(self, name: str) -> None:
        self.manifest.files.pop(name, None)
        self.manifest.graphs = {k: v for k, v in self.manifest.graphs.items() if v != name}
        self.manifest.engines = [e for e in self.manifest.engines if e.get("file") != name]
        self._verified.discard(name)

    def save(self) -> Path:
        """Validate the manifest and write it atomically (the one step that commits a bundle change)."""
        path = self.root / MANIFEST
        data = self.manifest.to_dict()
        validate_manifest(data, str(path))
        return write_json(path, data)

    # lookups ------------------------------------------------------------------------------------
    def graph(self, role: str = "fp32") -> Path:
        """The graph of ``role``, checked before use (see :meth:`file`)."""
        name = self.manifest.graphs.get(role)
        if name is None:
            have = ", ".join(sorted(self.manifest.graphs)) or "none"
            raise VCEError(f"{self.root}: the bundle has no {role} graph (it has: {have})")
        return self.file(name)

    def has_graph(self, role: str) -> bool:
        return role in self.manifest.graphs

    def graph_input(self, name: str) -> dict[str, Any]:
        """What graph or engine file ``name`` takes: {"name", "dtype", "layout", "shape"}.

        Its own record, else the bundle's ``input`` (bundles from before uint8 graphs: float32 NCHW).
        """
        entry = self.manifest.files.get(name, {})
        spec = dict(entry.get("input") or self.manifest.input)
        spec.setdefault("layout", "NHWC" if spec.get("dtype") == "uint8" else "NCHW")
        return spec
