"""The TensorRT runner's data path, against stand-ins for cuda-python and a TensorRT engine.

No GPU, TensorRT or CUDA driver exists here: ``gpu_standins`` says which documented behaviour
each stand-in stands in for. These tests cover the runner's bookkeeping only (double buffering and
its ordering, pinned staging, dtypes, padding, freeing, the sidecar-driven runtime settings); the
``tensorrt``-marked test in test_backends.py runs the real thing where a GPU is.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from gpu_standins import FakeCudart, FakeTensorRT, reference

from vce.runtime.backends import create_runner, cuda_rt
from vce.runtime.backends.trt import TensorRTRunner, load_engine
from vce.runtime.engine_info import EngineInfo, this_os
from vce.runtime.errors import VCEError


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch) -> tuple[FakeCudart, FakeTensorRT]:
    cudart = FakeCudart()
    trt = FakeTensorRT(cudart)
    monkeypatch.setattr(cuda_rt, "cudart", lambda: cudart)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    return cudart, trt


def _engine(tmp_path: Path, trt: FakeTensorRT, plan: bytes = b"plan", **sidecar: object) -> Path:
    path = tmp_path / "model.engine"
    path.write_bytes(plan)
    EngineInfo(
        gpu_name="NVIDIA Stand-in GPU",
        compute_capability="8.9",
        tensorrt_version=trt.__version__,
        precision="fp16",
        profile={},
        source_onnx="model_fp16.onnx",
        source_onnx_sha256="0" * 64,
        os=this_os(),
        **sidecar,  # type: ignore[arg-type]
    ).save(tmp_path / "model.engine.json")
    return path


def test_chunks_double_buffers_and_pinned_staging_give_the_right_numbers(tmp_path, fakes):
    cudart, trt = fakes
    trt.add_engine(b"plan", item=(3, 8, 8), profile=(1, 4, 8))
    x = np.random.default_rng(0).normal(size=(29, 3, 8, 8)).astype(np.float32)  # 8 + 8 + 8 + 5
    with TensorRTRunner(_engine(tmp_path, trt)) as runner:
        got = runner.infer(x)
        again = runner.infer(x[:3])  # a later call reuses the same buffers
        assert runner.context.runs == [8, 8, 8, 5, 3]
    want = reference(x)
    np.testing.assert_allclose(got["logits"], want["logits"], rtol=1e-6)
    np.testing.assert_allclose(got["probs"], want["probs"], rtol=1e-6)
    np.testing.assert_allclose(again["probs"], want["probs"][:3], rtol=1e-6)
    assert cudart.copies["h2d_pinned"] == 5 and cudart.copies["h2d_pageable"] == 0
    assert got["probs"].dtype == np.float32 and got["probs"].flags.owndata  # the caller's, not a staging view


def test_the_standin_catches_a_missing_stream_wait(tmp_path, fakes, monkeypatch):
    """Without the compute stream waiting for the upload, the lazy streams compute on stale input."""
    _, trt = fakes
    trt.add_engine(b"plan", item=(3, 8, 8), profile=(1, 4, 8))
    x = np.random.default_rng(1).normal(size=(24, 3, 8, 8)).astype(np.float32)
    monkeypatch.setattr(cuda_rt.Stream, "wait", lambda self, event: None)
    with TensorRTRunner(_engine(tmp_path, trt)) as runner:
        got = runner.infer(x)
    assert not np.allclose(got["logits"], reference(x)["logits"])


@pytest.mark.parametrize(
    ("dtype", "item", "images"),
    [
        (np.float16, (3, 8, 8), np.float32),  # fp16 input binding: float images are cast
        (np.uint8, (8, 8, 3), np.uint8),  # the uint8 [N,H,W,3] graph
        (np.float32, (3, 8, 8), np.float32),
    ],
)
def test_input_dtype_and_shape_come_from_the_engine(tmp_path, fakes, dtype, item, images):
    _, trt = fakes
    trt.add_engine(b"plan", dtype=dtype, item=item, profile=(1, 4, 8))
    rng = np.random.default_rng(2)
    x = (
        rng.integers(0, 256, size=(11, *item)) if images == np.uint8 else rng.normal(size=(11, *item))
    ).astype(images)
    with TensorRTRunner(_engine(tmp_path, trt)) as runner:
        assert runner.item_shape == item and runner.dtypes["images"] == np.dtype(dtype)
        got = runner.infer(x)
    np.testing.assert_allclose(got["logits"], reference(x.astype(dtype))["logits"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("images", "got"),
    [
        (np.zeros((2, 8, 8, 3), np.float32), r"got float32 \[2, 8, 8, 3\]"),  # float for a uint8 engine
        (np.zeros((2, 3, 8, 8), np.uint8), r"got uint8 \[2, 3, 8, 8\]"),  # the float layout
        (np.zeros((8, 8, 3), np.uint8), r"got uint8 \[8, 8, 3\]"),  # one frame, no batch axis
    ],
)
def test_wrong_dtype_or_shape_is_one_line_before_any_gpu_work(tmp_path, fakes, images, got):
    """The base class's check (the runner's own shape check is gone): nothing is staged or run."""
    cudart, trt = fakes
    trt.add_engine(b"plan", dtype=np.uint8, item=(8, 8, 3), profile=(1, 4, 8))
    engine = _engine(tmp_path, trt)
    with TensorRTRunner(engine) as runner:
        with pytest.raises(
            VCEError, match=f"this engine takes uint8 RGB crops \\[N, 8, 8, 3\\], {got}"
        ) as err:
            runner.infer(images)
        assert "\n" not in str(err.value) and str(err.value).startswith(str(engine))
        assert runner.context.runs == [] and cudart.copies["h2d_pinned"] == 0


def test_static_dla_profile_pads_the_tail_batch(tmp_path, fakes):
    _, trt = fakes
    trt.add_engine(b"plan", item=(3, 8, 8), profile=(4, 4, 4))  # min = opt = max, as DLA builds are
    x = np.random.default_rng(3).normal(size=(6, 3, 8, 8)).astype(np.float32)
    with TensorRTRunner(_engine(tmp_path, trt)) as runner:
        got = runner.infer(x)
        assert runner.context.runs == [4, 4]  # 4, then 2 padded to 4
    np.testing.assert_allclose(got["probs"], reference(x)["probs"], rtol=1e-6)
    assert got["probs"].shape == (6, 17)


def test_close_frees_every_buffer_event_and_stream(tmp_path, fakes):
    cudart, trt = fakes
    trt.add_engine(b"plan")
    runner = TensorRTRunner(_engine(tmp_path, trt))
    runner.infer(np.zeros((9, 3, 8, 8), np.float32))
    # 2 sets x (1 input + 2 outputs) on each side, 2 events per set, 2 streams
    assert cudart.alive() == {"device": 6, "pinned": 6, "streams": 2, "events": 4}
    runner.close()
    runner.close()  # idempotent
    assert cudart.alive() == {"device": 0, "pinned": 0, "streams": 0, "events": 0}


def test_version_compatible_engines_get_host_code_allowed_before_deserialising(tmp_path, fakes):
    _, trt = fakes
    trt.add_engine(b"vc-plan", version_compatible=True)
    with TensorRTRunner(_engine(tmp_path, trt, b"vc-plan", version_compatible=True)):
        assert trt.runtimes[-1].engine_host_code_allowed is True
    with pytest.raises(VCEError, match="cannot deserialize this engine"):  # the sidecar does not say so
        TensorRTRunner(_engine(tmp_path, trt, b"vc-plan"))
    assert trt.runtimes[-1].engine_host_code_allowed is False


def test_dla_engines_set_the_runtime_dla_core(tmp_path, fakes, monkeypatch):
    _, trt = fakes
    trt.add_engine(b"plan", profile=(4, 4, 4))
    monkeypatch.setattr(trt.Runtime, "num_DLA_cores", 2)
    with TensorRTRunner(_engine(tmp_path, trt, dla_core=1)):
        assert trt.runtimes[-1].DLA_core == 1
    monkeypatch.setattr(trt.Runtime, "num_DLA_cores", 0)
    with pytest.raises(VCEError, match="built for DLA core 1, this device has 0 DLA cores"):
        TensorRTRunner(_engine(tmp_path, trt, dla_core=1))


def test_a_cuda_error_is_one_line(fakes):
    cudart, _ = fakes
    with pytest.raises(VCEError, match=r"CUDA error in cudaSetDevice\(3\): cudaErrorInvalidDevice") as err:
        cuda_rt.set_device(3)
    assert "\n" not in str(err.value)
    cudart.devices = 0
    with pytest.raises(VCEError, match="no CUDA GPU 0 on this machine"):
        cuda_rt.gpu_info(0)


def test_real_cuda_bindings_without_a_driver_give_one_line():
    """The real cuda-python (where installed): on a machine without a GPU driver, one clear line."""
    rt = pytest.importorskip("cuda.bindings.runtime")
    err = rt.cudaGetDeviceCount()[0]
    if err == rt.cudaError_t.cudaSuccess and rt.cudaGetDeviceCount()[1] > 0:
        pytest.skip("this machine has a CUDA GPU")
    with pytest.raises(VCEError) as exc:
        cuda_rt.gpu_info(0)
    message = str(exc.value)
    assert "\n" not in message
    assert (
        "cudaErrorInsufficientDriver" in message or "cudaErrorNoDevice" in message or "no CUDA GPU" in message
    )


# --- loading, separate from running ------------------------------------------------------------------


def test_load_engine_gives_the_runner_a_checked_engine(tmp_path, fakes):
    _, trt = fakes
    trt.add_engine(b"plan", item=(3, 8, 8), profile=(1, 4, 8))
    loaded = load_engine(_engine(tmp_path, trt))
    assert trt.deserialised == [b"plan"] and loaded.info is not None and loaded.info.precision == "fp16"
    assert loaded.context in loaded.engine.contexts
    with TensorRTRunner(loaded) as runner:  # no second deserialisation
        assert runner.engine is loaded.engine and runner.context is loaded.context
        assert runner.info is loaded.info and runner.path == loaded.path
        got = runner.infer(np.ones((3, 3, 8, 8), np.float32))
    assert trt.deserialised == [b"plan"]
    np.testing.assert_allclose(got["probs"], reference(np.ones((3, 3, 8, 8), np.float32))["probs"], rtol=1e-6)


def test_create_runner_still_takes_an_engine_path_and_its_options(tmp_path, fakes):
    _, trt = fakes
    trt.add_engine(b"plan")
    engine = _engine(tmp_path, trt)
    moved = tmp_path / "elsewhere.json"
    (tmp_path / "model.engine.json").rename(moved)
    with create_runner("trt", engine, sidecar=moved, device=0, check=True) as runner:
        assert isinstance(runner, TensorRTRunner) and runner.info is not None
    with create_runner("trt", engine, check=False) as runner:  # no sidecar beside it: none read
        assert runner.info is None


@pytest.mark.parametrize(
    ("spoil", "message"),
    [
        (lambda engine, side: engine.unlink(), "engine file not found"),
        (lambda engine, side: side.unlink(), "engine sidecar missing"),
        (lambda engine, side: side.write_text("{not json"), "rebuild the engine with `vce-export trt`"),
        (lambda engine, side: side.write_text('{"gpu_name": "x"}'), "unreadable engine sidecar"),
        (
            lambda engine, side: side.write_text(
                side.read_text().replace("NVIDIA Stand-in GPU", "Orin").replace('"8.9"', '"8.7"')
            ),
            r"built for Orin \(sm 8\.7\), this GPU is NVIDIA Stand-in GPU",
        ),
        (
            lambda engine, side: side.write_text(side.read_text().replace('"10.3.0"', '"10.1.0"')),
            r"built with TensorRT 10\.1\.0, this machine has 10\.3\.0",
        ),
    ],
    ids=["no-engine", "no-sidecar", "bad-json", "bad-fields", "other-gpu", "other-tensorrt"],
)
def test_load_engine_refuses_before_deserialising(tmp_path, fakes, spoil, message):
    """A missing file or a bad sidecar is one line, and TensorRT never sees the plan (no Runtime even)."""
    _, trt = fakes
    trt.add_engine(b"plan")
    engine = _engine(tmp_path, trt)
    spoil(engine, tmp_path / "model.engine.json")
    with pytest.raises(VCEError, match=message) as err:
        load_engine(engine)
    assert "\n" not in str(err.value)
    assert trt.deserialised == [] and trt.runtimes == []
