"""``Runner.infer`` checks the batch once, in the base class, before any backend's ``_infer`` runs.

The kind (uint8 RGB crops for a uint8 graph, float otherwise), the rank, the item shape the model
declares (symbolic dims unchecked) and the batch limit a backend declares: each refusal is one line
that names the model file, what it takes and what came.
"""

from __future__ import annotations

import ast
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from runtime_testdata import make_onnx

from vce.runtime.backends import Runner
from vce.runtime.backends.ort import LoadedSession, OrtRunner, load_session
from vce.runtime.errors import VCEError

REPO = Path(__file__).resolve().parents[2]


class Recorder(Runner):
    """The smallest runner: records what reached ``_infer``."""

    def __init__(self, dtype: object = np.float32, item: tuple[int | None, ...] | None = (3, 4, 4)) -> None:
        self.path = Path("tiny.onnx")
        self.input_dtype = np.dtype(dtype)
        self.item_shape = item
        self.reached: list[np.ndarray] = []

    def _infer(self, x: np.ndarray) -> dict[str, np.ndarray]:
        self.reached.append(x)
        zeros = np.zeros((len(x), 17), np.float32)
        return {"logits": zeros, "probs": zeros}


@pytest.mark.parametrize(
    ("runner", "images", "message"),
    [
        (
            Recorder(),
            np.zeros((2, 3, 4, 4), np.uint8),
            r"takes float \[N, 3, 4, 4\], got uint8 \[2, 3, 4, 4\]",
        ),
        (Recorder(), np.zeros((2, 3, 4, 4), np.int32), r"got int32 \[2, 3, 4, 4\]"),  # not a float
        (Recorder(), np.zeros((3, 4, 4), np.float32), r"got float32 \[3, 4, 4\]"),  # no batch axis
        (Recorder(), np.zeros((2, 3, 5, 4), np.float32), r"got float32 \[2, 3, 5, 4\]"),  # item shape
        (Recorder(), np.zeros((2, 4, 4, 3), np.float32), r"got float32 \[2, 4, 4, 3\]"),  # the uint8 layout
        (
            Recorder(np.uint8, (4, 4, 3)),
            np.zeros((2, 4, 4, 3), np.float32),
            r"takes uint8 RGB crops \[N, 4, 4, 3\], got float32",
        ),
        (Recorder(np.uint8, (4, 4, 3)), np.zeros((2, 3, 4, 4), np.uint8), r"got uint8 \[2, 3, 4, 4\]"),
        (Recorder(item=None), np.zeros((2, 3, 4), np.float32), r"takes float \[N, 3, H, W\], got float32"),
        (Recorder(item=(3, None, None)), np.zeros((2, 1, 4, 4), np.float32), r"takes float \[N, 3, H, W\]"),
    ],
)
def test_bad_input_is_one_line_and_never_reaches_the_backend(
    runner: Recorder, images: np.ndarray, message: str
) -> None:
    with pytest.raises(VCEError, match=message) as err:
        runner.infer(images)
    text = str(err.value)
    assert "\n" not in text and text.startswith("tiny.onnx: this graph takes ")
    assert runner.reached == []


def test_good_input_reaches_the_backend_as_given() -> None:
    runner = Recorder()
    x = np.ones((2, 3, 4, 4), np.float64)  # any float: the backend casts
    assert runner.infer(x)["probs"].shape == (2, 17)
    assert runner.reached[0] is x
    symbolic = Recorder(item=(3, None, None))  # symbolic dims are not checked
    symbolic.infer(np.zeros((1, 3, 7, 9), np.float32))
    unknown = Recorder(np.uint8, None)  # item shape unknown: kind and rank only
    unknown.infer(np.zeros((1, 5, 6, 3), np.uint8))
    assert len(symbolic.reached) == len(unknown.reached) == 1


def test_a_declared_batch_limit_is_checked() -> None:
    runner = Recorder()
    runner.batch_limit = 4
    runner.infer(np.zeros((4, 3, 4, 4), np.float32))
    with pytest.raises(VCEError, match="takes at most 4 frames per call, got 5"):
        runner.infer(np.zeros((5, 3, 4, 4), np.float32))
    assert len(runner.reached) == 1


def test_a_runner_without_infer_impl_cannot_be_made() -> None:
    class Incomplete(Runner):
        def infer(self, images: np.ndarray) -> dict[str, np.ndarray]:  # the old way: bypasses the check
            return {}

    with pytest.raises(TypeError, match="_infer"):
        Incomplete()  # type: ignore[abstract]


def _runner_classes() -> list[tuple[str, ast.ClassDef]]:
    found = []
    for folder in ("runtime", "calibration", "train", "export", "bench"):
        for path in sorted((REPO / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                bases = [getattr(b, "id", getattr(b, "attr", "")) for b in getattr(node, "bases", [])]
                if isinstance(node, ast.ClassDef) and "Runner" in bases:
                    found.append((f"{path.relative_to(REPO)}:{node.name}", node))
    return found


def test_every_runner_in_the_tree_goes_through_the_base_check() -> None:
    """Each Runner subclass implements ``_infer`` and none overrides ``infer`` (which would skip the check)."""
    classes = _runner_classes()
    names = {name.split(":")[1] for name, _ in classes}
    assert {"OrtRunner", "TensorRTRunner", "TorchReference", "NullRunner"} <= names
    for name, node in classes:
        methods = {f.name for f in node.body if isinstance(f, ast.FunctionDef)}
        assert "_infer" in methods and "infer" not in methods, name


# --- OrtRunner: the check it lacked --------------------------------------------------------------------


@pytest.fixture(scope="module")
def static_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_onnx(tmp_path_factory.mktemp("static") / "model.onnx", size=32)


def _spy(runner: OrtRunner) -> list[int]:
    fed: list[int] = []
    real = runner.session.run
    runner.session = SimpleNamespace(
        run=lambda out, feed: fed.append(len(feed["images"])) or real(out, feed),
        get_inputs=runner.session.get_inputs,
    )
    return fed


@pytest.mark.parametrize(
    ("images", "got"),
    [
        (np.zeros((2, 3, 16, 16), np.float32), r"float32 \[2, 3, 16, 16\]"),  # item shape
        (np.zeros((3, 32, 32), np.float32), r"float32 \[3, 32, 32\]"),  # rank
        (np.zeros((2, 3, 32, 32), np.uint8), r"uint8 \[2, 3, 32, 32\]"),  # kind
        (np.zeros((2, 32, 32, 3), np.float32), r"float32 \[2, 32, 32, 3\]"),  # layout
    ],
)
def test_ort_runner_refuses_a_wrong_batch_in_one_line(
    static_model: Path, images: np.ndarray, got: str
) -> None:
    runner = OrtRunner(static_model)
    assert runner.item_shape == (3, 32, 32)
    fed = _spy(runner)
    with pytest.raises(VCEError, match=rf"this graph takes float \[N, 3, 32, 32\], got {got}") as err:
        runner.infer(images)
    assert "\n" not in str(err.value) and str(err.value).startswith(str(static_model))
    assert fed == []  # ONNX Runtime never saw it
    runner.infer(np.zeros((2, 3, 32, 32), np.float64))  # a float batch is cast and runs
    assert fed == [2]


def test_ort_symbolic_dims_are_not_checked(tmp_path: Path) -> None:
    runner = OrtRunner(make_onnx(tmp_path / "model.onnx"))  # input [N, 3, "H", "W"]
    assert runner.item_shape == (3, None, None)
    assert runner.infer(np.zeros((1, 3, 20, 24), np.float32))["probs"].shape == (1, 17)
    with pytest.raises(VCEError, match=r"takes float \[N, 3, H, W\], got float32 \[1, 4, 20, 24\]"):
        runner.infer(np.zeros((1, 4, 20, 24), np.float32))


def test_load_session_is_separate_from_the_runner(static_model: Path) -> None:
    loaded = load_session(static_model, "ort-cpu", threads=1)
    assert isinstance(loaded, LoadedSession) and loaded.session.get_providers()[0] == "CPUExecutionProvider"
    assert (loaded.kind, loaded.max_batch, loaded.cache_dir) == ("ort-cpu", 0, None)
    runner = OrtRunner(loaded)
    assert runner.session is loaded.session and runner.path == static_model and runner.name == "ort-cpu"
    x = np.random.default_rng(0).random((3, 3, 32, 32), dtype=np.float32)
    np.testing.assert_array_equal(runner.infer(x)["probs"], OrtRunner(static_model).infer(x)["probs"])
    with pytest.raises(TypeError, match="go to load_session"):
        OrtRunner(loaded, threads=2)
    with pytest.raises(VCEError, match="unknown ONNX Runtime backend 'ort-gpu'"):
        load_session(static_model, "ort-gpu")
