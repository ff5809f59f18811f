"""Fuzzing the loaders of untrusted files (issue 11): random manifests, event JSON and CSV rows raise
only the project's own error (one line), never another exception."""

from __future__ import annotations

import copy
import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vce.calibration.probs import read_probabilities
from vce.runtime.bundle import MANIFEST, Bundle, Manifest
from vce.runtime.errors import VCEError
from vce.runtime.formats.eventjson import MAX_FRAME, read_events_json
from vce.runtime.formats.framescsv import COLUMNS, read_frames_csv
from vce.runtime.formats.labelcsv import read_label_csv
from vce.runtime.labels import LABELS

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(
        ["model.onnx", "../x", "/etc/passwd", "RGB", "BGR", "7", "fp32", "vce-bundle", "", "NCHW"]
    ),
)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=5), st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=25,
)


def _only_vce_errors(call: Callable[[], object]) -> None:
    try:
        call()
    except VCEError as exc:
        assert "\n" not in str(exc), str(exc)


def _valid_manifest() -> dict[str, Any]:
    m = Manifest()
    m.files = {"model.onnx": {"role": "fp32", "sha256": "0" * 64, "bytes": 3}}
    m.graphs = {"fp32": "model.onnx"}
    m.engines = [{"file": "model.onnx", "sidecar": "model.onnx"}]
    return m.to_dict()


def _paths(d: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(d, dict):
        for k, v in d.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(d, list):
        for i, v in enumerate(d):
            out += _paths(v, (*prefix, i))
    return out


def _load_manifest_text(text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / MANIFEST).write_text(text)
        _only_vce_errors(lambda: Bundle.load(tmp, verify=False))
        _only_vce_errors(lambda: Bundle.load(tmp, verify=True))


@FUZZ
@given(value=json_values)
def test_random_json_as_a_manifest(value: Any) -> None:
    _load_manifest_text(json.dumps(value))


@FUZZ
@given(data=st.data())
def test_a_valid_manifest_with_one_field_replaced(data: st.DataObject) -> None:
    manifest = _valid_manifest()
    path = data.draw(st.sampled_from(_paths(manifest)[1:]))
    value = data.draw(json_values)
    mutated = copy.deepcopy(manifest)
    node = mutated
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    _only_vce_errors(lambda: Manifest.from_dict(mutated))
    _load_manifest_text(json.dumps(mutated))


@FUZZ
@given(text=st.text(max_size=200))
def test_random_text_as_a_manifest(text: str) -> None:
    _load_manifest_text(text)


events = st.fixed_dictionaries(
    {},
    optional={
        "start": json_values,
        "end": json_values,
        "label": st.one_of(json_values, st.lists(st.sampled_from([*LABELS, "x", ""]), max_size=3)),
    },
)
videos = st.lists(
    st.one_of(
        json_values,
        st.fixed_dictionaries(
            {
                "video_id": json_values,
                "events": st.one_of(json_values, st.lists(st.one_of(events, json_values), max_size=4)),
            }
        ),
    ),
    max_size=4,
)


@FUZZ
@given(doc=st.one_of(json_values, st.fixed_dictionaries({"videos": st.one_of(videos, json_values)})))
def test_random_event_json(doc: Any) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "events.json"
        path.write_text(json.dumps(doc))
        _only_vce_errors(lambda: _check_events(read_events_json(path)))
        _only_vce_errors(lambda: _check_events(read_events_json(path, check_labels=False)))


def _check_events(videos: dict[str, list[dict[str, Any]]]) -> None:
    """What a loaded events file promises the metric: int frames in [0, MAX_FRAME], labels strings."""
    for vid, evs in videos.items():
        assert isinstance(vid, str)
        for ev in evs:
            assert type(ev["start"]) is int and type(ev["end"]) is int
            assert 0 <= ev["start"] <= ev["end"] <= MAX_FRAME
            assert all(isinstance(name, str) for name in ev["label"])


cells = st.one_of(
    st.text(max_size=8),
    st.sampled_from(
        ["0", "1", "", "0.5", "-0.1", "1e300", "nan", "inf", "1e-320", "²", "0x10", '"', "a,b", "\n"]
    ),
    st.integers(min_value=-(2**66), max_value=2**66).map(str),
    st.floats().map(repr),
)


def _csv_text(header: list[str], rows: list[list[str]]) -> str:
    import csv
    import io

    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


@FUZZ
@given(rows=st.lists(st.lists(cells, max_size=len(COLUMNS) + 2), max_size=6), raw=st.text(max_size=60))
def test_random_rows_in_a_frames_csv(rows: list[list[str]], raw: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "frames.csv"
        for text in (_csv_text(list(COLUMNS), rows), ",".join(COLUMNS) + "\n" + raw):
            path.write_text(text, encoding="utf-8")
            _only_vce_errors(lambda: read_frames_csv(path))
            _only_vce_errors(lambda: read_probabilities(path))


@FUZZ
@given(
    rows=st.lists(st.lists(cells, max_size=len(LABELS) + 3), max_size=6),
    header=st.lists(st.sampled_from(["frame", "index", *LABELS, "section", "x", ""]), max_size=6),
    raw=st.text(max_size=60),
)
def test_random_rows_in_a_label_csv(rows: list[list[str]], header: list[str], raw: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "v.csv"
        texts = [
            _csv_text(["frame", *LABELS], rows),
            _csv_text(header, rows),
            "frame," + ",".join(LABELS) + "\n" + raw,
        ]
        for text in texts:
            path.write_text(text, encoding="utf-8")
            _only_vce_errors(lambda: read_label_csv(path))
