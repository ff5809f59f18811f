"""The bundle manifest's schema: every field's type and bounds, checked in one place.

:func:`validate_manifest` is what :meth:`vce.runtime.bundle.Manifest.from_dict` (reading) and
:meth:`~vce.runtime.bundle.Bundle.save` (writing) call; a manifest that fails it is one
:class:`VCEError` line naming the file and the field (``preprocess.image_size must be an integer
in 8..2048, got '224'``), whatever the manifest holds (wrong types, lists for objects, deep nesting).

Rules:

- ``preprocess`` and ``postprocess`` are *closed*: an unknown key is refused (it would otherwise be
  accepted and ignored), and each value has to be one the toolkit implements (the allowed strings
  come from the ``Literal`` annotations of :class:`~vce.runtime.preprocess.PreprocessSpec` and
  :class:`~vce.runtime.postprocess.PostprocessConfig`, the one definition of each);
- the top level is closed too: a field this vce does not know is refused;
- entries of ``files``, ``engines``, ``input`` and ``outputs`` have *known keys typed strictly* and
  may carry extra keys (free JSON, at most :data:`MAX_DEPTH` deep): records such as an INT8 graph's
  drift. To type a new key, add one line to the entry's field table (``FILE_FIELDS``,
  ``ENGINE_FIELDS``, ``INPUT_FIELDS``): ``"input": obj({...})`` on a file entry, for instance;
- every file the manifest names (``files``, ``graphs``, ``engines[].file``/``sidecar``) is a plain
  file name inside the bundle (:func:`check_file_name`: no folder, no ``..``, no absolute path) and
  ``graphs``/``engines`` name only files listed in ``files``.
"""

from __future__ import annotations

import enum
import math
import re
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from vce.runtime.errors import VCEError
from vce.runtime.labels import LABELS
from vce.runtime.postprocess import PostprocessConfig
from vce.runtime.preprocess import PreprocessSpec

SCHEMA_VERSION = 1
FORMAT = "vce-bundle"
MANIFEST = "manifest.json"
#: model input sizes a bundle may declare (a batch of 8 at 2048 px is 400 MB of float32)
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 8, 2048
#: nesting of the free-form records (calibration, model, extra keys of an entry)
MAX_DEPTH = 32
MAX_FILES = 64
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}")
_SHA256 = re.compile(r"[0-9a-f]{64}")

Validator = Callable[[Any, str], Any]


class SchemaError(VCEError):
    """A manifest field of the wrong type or out of bounds (``where`` is the field's path)."""


def _show(value: Any) -> str:
    if isinstance(value, (dict, list)):  # never repr a container: it may be nested 1000 deep
        return f"a {'JSON object' if isinstance(value, dict) else 'list'} of {len(value)} item(s)"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _fail(where: str, what: str, value: Any) -> typing.NoReturn:
    raise SchemaError(f"{where} must be {what}, got {_show(value)}")


# --- validators: (value, where) -> value ---------------------------------------------------------


def integer(lo: int, hi: int) -> Validator:
    def check(value: Any, where: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            _fail(where, f"an integer in {lo}..{hi}", value)
        return value

    return check


def number(lo: float, hi: float) -> Validator:
    def check(value: Any, where: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            _fail(where, f"a number in [{lo:g}, {hi:g}]", value)
        if not lo <= value <= hi:
            _fail(where, f"a number in [{lo:g}, {hi:g}]", value)
        return float(value)

    return check


def boolean(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        _fail(where, "true or false", value)
    return value


def string(max_len: int = 256) -> Validator:
    def check(value: Any, where: str) -> str:
        if not isinstance(value, str) or len(value) > max_len:
            _fail(where, f"a string of at most {max_len} characters", value)
        return value

    return check


def choice(values: Sequence[Any]) -> Validator:
    def check(value: Any, where: str) -> Any:
        if not isinstance(value, (str, int)) or isinstance(value, bool) or value not in values:
            _fail(where, "one of " + ", ".join(map(repr, values)), value)
        return value

    return check


def literal_of(cls: type, name: str) -> Validator:
    """The values a dataclass field's ``Literal`` or ``StrEnum`` annotation allows (the one definition
    of them)."""
    hint = typing.get_type_hints(cls)[name]
    if isinstance(hint, type) and issubclass(hint, enum.StrEnum):
        return choice(tuple(member.value for member in hint))
    if typing.get_origin(hint) is not typing.Literal:
        raise TypeError(f"{cls.__name__}.{name} is not a Literal")
    return choice(typing.get_args(hint))


def sha256_hex(value: Any, where: str) -> str:
    if not isinstance(value, str) or not _SHA256.fullmatch(value):
        _fail(where, "a sha256 (64 lowercase hex digits)", value)
    return value


def check_file_name(name: Any, where: str = "file name") -> str:
    """A plain file name inside the bundle: letters, digits, ``._+-``, no folder, no ``..``, not the manifest."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or name == MANIFEST:
        _fail(
            where,
            "a plain file name inside the bundle (letters, digits, '._+-'; no folder, no '..', "
            "no absolute path)",
            name,
        )
    return name


def list_of(item: Validator, min_len: int = 0, max_len: int = 64) -> Validator:
    def check(value: Any, where: str) -> list[Any]:
        if not isinstance(value, list) or not min_len <= len(value) <= max_len:
            n = f"{min_len}" if min_len == max_len else f"{min_len}..{max_len}"
            _fail(where, f"a list of {n} items", value)
        return [item(v, f"{where}[{i}]") for i, v in enumerate(value)]

    return check


def json_value(value: Any, where: str) -> Any:
    """Free-form JSON (a record, NaN allowed as Python writes it), at most MAX_DEPTH deep; no recursion."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        v, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise SchemaError(f"{where} is nested more than {MAX_DEPTH} levels deep")
        if isinstance(v, dict):
            stack.extend((x, depth + 1) for x in v.values())
        elif isinstance(v, list):
            stack.extend((x, depth + 1) for x in v)
        elif v is not None and not isinstance(v, (str, int, float, bool)):
            _fail(where, "JSON", v)
    return value


def json_object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        _fail(where, "a JSON object", value)
    return json_value(value, where)


def obj(fields: Mapping[str, Validator], *, required: Sequence[str] = (), closed: bool = False) -> Validator:
    """A JSON object: known keys checked by ``fields``; others refused (``closed``) or free JSON."""

    def check(value: Any, where: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            _fail(where, "a JSON object", value)
        missing = [k for k in required if k not in value]
        if missing:
            raise SchemaError(f"{where or 'the manifest'} lacks {', '.join(missing)}")
        out: dict[str, Any] = {}
        for key, v in value.items():
            path = f"{where}.{key}" if where else key
            if key in fields:
                out[key] = fields[key](v, path)
            elif closed:
                known = ", ".join(fields)
                raise SchemaError(f"{path} is not a field this vce knows (known: {known})")
            else:
                out[key] = json_value(v, path)
        return out

    return check


def mapping(key: Validator, value: Validator, max_items: int = MAX_FILES) -> Validator:
    def check(d: Any, where: str) -> dict[str, Any]:
        if not isinstance(d, dict) or len(d) > max_items:
            _fail(where, f"a JSON object of at most {max_items} entries", d)
        return {key(k, f"{where} key"): value(v, f"{where}.{k}") for k, v in d.items()}

    return check


# --- the manifest ---------------------------------------------------------------------------------


def _dim(value: Any, where: str) -> int | str:
    if isinstance(value, str) and 0 < len(value) <= 64:
        return value
    return integer(1, 1 << 20)(value, where)


def _labels(value: Any, where: str) -> list[str]:
    if value != list(LABELS):
        raise SchemaError("the bundle's labels are not the 17 RARE-VISION labels in order")
    return list(value)


def _thresholds(value: Any, where: str) -> dict[str, float]:
    if not isinstance(value, dict):
        _fail(where, f"an object {{label: threshold}} for the {len(LABELS)} labels", value)
    unknown = sorted(set(value) - set(LABELS))
    missing = [name for name in LABELS if name not in value]
    if unknown or missing:
        raise SchemaError(
            f"{where} must give a threshold for each of the {len(LABELS)} labels "
            f"(unknown: {unknown[:3]}, missing: {missing[:3]})"
        )
    th = number(0.0, 1.0)
    return {name: th(value[name], f"{where}.{name}") for name in LABELS}


PREPROCESS_FIELDS: dict[str, Validator] = {
    "image_size": integer(MIN_IMAGE_SIZE, MAX_IMAGE_SIZE),
    "resize": literal_of(PreprocessSpec, "resize"),
    "crop": literal_of(PreprocessSpec, "crop"),
    "resample": literal_of(PreprocessSpec, "resample"),
    "mean": list_of(number(-10.0, 10.0), 3, 3),
    "std": list_of(number(1e-6, 10.0), 3, 3),
    "channel_order": literal_of(PreprocessSpec, "channel_order"),
    "layout": literal_of(PreprocessSpec, "layout"),
}
POSTPROCESS_FIELDS: dict[str, Validator] = {
    "median": integer(1, 2**31 - 1),  # PostprocessConfig bounds it further
    "min_run": integer(0, 2**31 - 1),
    "max_gap": integer(0, 2**31 - 1),
    "grouping": literal_of(PostprocessConfig, "grouping"),
}
INPUT_FIELDS: dict[str, Validator] = {
    "name": string(256),
    "dtype": choice(("float32", "uint8")),
    "shape": list_of(_dim, 4, 4),
}
OUTPUT_FIELDS: dict[str, Validator] = {
    "name": string(256),
    "dtype": string(32),
    "shape": list_of(_dim, 1, 8),
}
FILE_FIELDS: dict[str, Validator] = {
    "role": string(64),
    "sha256": sha256_hex,
    "bytes": integer(0, 1 << 50),
    "source": check_file_name,
    "engine": check_file_name,
    "within_tolerance": boolean,
}
ENGINE_FIELDS: dict[str, Validator] = {
    "file": check_file_name,
    "sidecar": check_file_name,
    "source": check_file_name,
    "precision": string(32),
}


def check_preprocess(value: Any, where: str = "preprocess") -> dict[str, Any]:
    """A preprocessing spec (manifest or model config): closed, typed, only implemented values."""
    return obj(PREPROCESS_FIELDS, closed=True)(value, where)


def check_postprocess(value: Any, where: str = "postprocess") -> dict[str, Any]:
    d = obj(POSTPROCESS_FIELDS, closed=True)(value, where)
    PostprocessConfig.from_dict(d)  # its own range checks
    return d


MANIFEST_FIELDS: dict[str, Validator] = {
    "schema_version": integer(SCHEMA_VERSION, SCHEMA_VERSION),
    "format": choice((FORMAT,)),
    "vce_version": string(64),
    "created": string(64),
    "labels": _labels,
    "input": obj(INPUT_FIELDS),
    "outputs": list_of(obj(OUTPUT_FIELDS), 1, 8),
    "preprocess": check_preprocess,
    "thresholds": _thresholds,
    "postprocess": check_postprocess,
    "model": json_object,
    "graphs": mapping(string(64), check_file_name, 16),
    "engines": list_of(obj(ENGINE_FIELDS, required=("file", "sidecar")), 0, 16),
    "calibration": json_object,
    "files": mapping(check_file_name, obj(FILE_FIELDS, required=("role", "sha256"))),
}
REQUIRED = (
    "schema_version",
    "format",
    "labels",
    "preprocess",
    "thresholds",
    "postprocess",
    "graphs",
    "files",
)


def validate_manifest(data: Any, source: str = MANIFEST) -> dict[str, Any]:
    """The manifest checked field by field (and its file references across fields); VCEError naming ``source``."""
    if not isinstance(data, dict):
        raise VCEError(f"{source}: a bundle manifest is a JSON object, not {type(data).__name__}")
    version = data.get("schema_version")
    if version != SCHEMA_VERSION or isinstance(version, bool):
        raise VCEError(
            f"{source}: bundle schema version {_show(version)} is not supported (this vce reads "
            f"{SCHEMA_VERSION}); re-export the bundle with this version of vce-export"
        )
    try:
        d = obj(MANIFEST_FIELDS, required=REQUIRED, closed=True)(data, "")
        files = d["files"]
        named = [(f"graphs.{role}", name) for role, name in d["graphs"].items()]
        for i, entry in enumerate(d.get("engines", [])):
            named += [(f"engines[{i}].{k}", entry[k]) for k in ("file", "sidecar")]
        for where, name in named:
            if name not in files:
                raise SchemaError(f"{where} names {name!r}, which is not listed (with its sha256) in files")
    except SchemaError as exc:
        raise VCEError(f"{source}: {exc}; re-export the bundle (or fix the manifest)") from None
    except VCEError as exc:  # PostprocessConfig's own checks
        raise VCEError(f"{source}: postprocess: {exc}") from None
    return d
