"""ONNX Runtime GPU providers: the session must really run on the provider asked for; TensorRT/CUDA options.

ONNX Runtime's CPU build is what runs here. Asking it for a provider list that starts with
CUDAExecutionProvider is allowed: it warns and creates the session on CPUExecutionProvider, which
is exactly the silent fallback a GPU machine shows when CUDA or TensorRT libraries fail to load.
So :func:`require_provider` is tested on real sessions. The only stand-in is
``get_available_providers`` reporting a GPU provider as compiled in (its documented meaning), so
that OrtRunner gets past its first check and meets the real fallback.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnxruntime as ort
import pytest
from runtime_testdata import make_onnx

from vce.runtime.backends import ort as ort_backend
from vce.runtime.backends.ort import OrtRunner, require_provider, trt_provider_options
from vce.runtime.errors import VCEError


@pytest.fixture
def model(tmp_path: Path) -> Path:
    (tmp_path / "bundle").mkdir()
    return make_onnx(tmp_path / "bundle" / "model.onnx", size=32)


@pytest.fixture
def gpu_listed(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """GPU providers 'compiled in' (the stand-in); records what InferenceSession was asked for."""
    listed = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setattr(ort, "get_available_providers", lambda: listed)
    calls: list[dict] = []
    real = ort.InferenceSession

    def session(path, opts=None, providers=None, provider_options=None):
        calls.append({"providers": providers, "options": provider_options})
        return real(path, opts, providers=providers, provider_options=provider_options)

    monkeypatch.setattr(ort, "InferenceSession", session)
    return calls


@pytest.mark.filterwarnings("ignore:Specified provider")
def test_a_session_that_fell_back_is_refused(model):
    session = ort.InferenceSession(str(model), providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert session.get_providers() == ["CPUExecutionProvider"]  # ONNX Runtime's silent fallback
    with pytest.raises(VCEError) as err:
        require_provider(session, "ort-cuda", ort, model)
    msg = str(err.value)
    assert "\n" not in msg
    assert "asked for CUDAExecutionProvider but the session runs on CPUExecutionProvider" in msg
    assert "cuDNN 9" in msg
    require_provider(ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]), "ort-cpu", ort)


@pytest.mark.filterwarnings("ignore:Specified provider")
def test_ort_cuda_runner_refuses_the_fallback_and_turns_tf32_off(model, gpu_listed):
    with pytest.raises(
        VCEError, match="asked for CUDAExecutionProvider but the session runs on CPUExecutionProvider"
    ):
        OrtRunner(model, "ort-cuda")
    [call] = gpu_listed
    assert call["providers"] == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert call["options"][0] == {"use_tf32": False}
    with pytest.raises(VCEError):
        OrtRunner(model, "ort-cuda", tf32=True)
    assert gpu_listed[-1]["options"][0] == {"use_tf32": True}


@pytest.mark.filterwarnings("ignore:Specified provider")
def test_ort_trt_options_caches_and_profile(model, gpu_listed, monkeypatch):
    monkeypatch.delenv(ort_backend.CACHE_ENV, raising=False)
    with pytest.raises(VCEError, match=r"asked for TensorrtExecutionProvider.*libnvinfer"):
        OrtRunner(model, "ort-trt", max_batch=16)
    trt_opts = gpu_listed[-1]["options"][0]
    cache = model.parent / "ort-trt-cache" / f"onnxruntime-{ort.__version__}"
    assert cache.is_dir()
    assert trt_opts == {
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": str(cache),
        "trt_timing_cache_enable": True,
        "trt_timing_cache_path": str(cache),
        "trt_profile_min_shapes": "images:1x3x32x32",
        "trt_profile_opt_shapes": "images:16x3x32x32",
        "trt_profile_max_shapes": "images:16x3x32x32",
    }
    assert "trt_fp16_enable" not in trt_opts  # the fp16 graph is typed already
    elsewhere = model.parent.parent / "my-cache"
    with pytest.raises(VCEError):
        OrtRunner(model, "ort-trt", cache_dir=elsewhere)
    assert gpu_listed[-1]["options"][0]["trt_engine_cache_path"] == str(elsewhere)
    monkeypatch.setenv(ort_backend.CACHE_ENV, str(model.parent.parent / "env-cache"))
    with pytest.raises(VCEError):
        OrtRunner(model, "ort-trt")
    assert gpu_listed[-1]["options"][0]["trt_timing_cache_path"].startswith(
        str(model.parent.parent / "env-cache")
    )
    blocker = model.parent.parent / "a-file"
    blocker.write_text("x")
    with pytest.raises(
        VCEError, match=f"cannot create the TensorRT provider's cache folder.*{ort_backend.CACHE_ENV}"
    ):
        OrtRunner(model, "ort-trt", cache_dir=blocker / "cache")


def test_trt_profile_needs_a_plain_input_name(tmp_path):
    with pytest.raises(VCEError, match="profile syntax"):
        trt_provider_options("in:put", [3, 224, 224], tmp_path)
    assert (
        trt_provider_options("images", [224, 224, 3], tmp_path, 8)["trt_profile_max_shapes"]
        == "images:8x224x224x3"
    )


def test_ort_trt_never_feeds_a_batch_outside_its_profile(model, monkeypatch):
    """Tail batches included: every run is 1..max_batch frames (provider check stood in: CPU here)."""
    monkeypatch.setattr(ort_backend, "ort_backends", lambda: ["ort-trt", "ort-cpu"])
    monkeypatch.setattr(ort_backend, "require_provider", lambda *a, **k: None)
    monkeypatch.setattr(
        ort_backend, "PROVIDERS", {**ort_backend.PROVIDERS, "ort-trt": ["CPUExecutionProvider"]}
    )
    runner = OrtRunner(model, "ort-trt", max_batch=4)
    fed: list[int] = []
    real_run = runner.session.run
    runner.session = SimpleNamespace(
        run=lambda out, feed: fed.append(len(feed["images"])) or real_run(out, feed)
    )
    x = np.random.default_rng(0).random((11, 3, 32, 32), dtype=np.float32)
    got = runner.infer(x)
    assert fed == [4, 4, 3]
    np.testing.assert_allclose(got["probs"], OrtRunner(model).infer(x)["probs"], rtol=1e-6)


def _dist(name: str) -> SimpleNamespace:
    return SimpleNamespace(metadata={"Name": name})


def test_onnxruntime_and_onnxruntime_gpu_together_are_reported_with_the_fix(model, monkeypatch):
    monkeypatch.setattr(
        importlib.metadata,
        "distributions",
        lambda: [_dist("onnxruntime"), _dist("onnxruntime_gpu"), _dist("numpy")],
    )
    msg = ort_backend.conflict_message()
    assert msg is not None and "onnxruntime and onnxruntime-gpu are both installed" in msg
    assert ort_backend.FIX_CONFLICT in msg
    with pytest.raises(VCEError, match="both installed"):
        OrtRunner(model, "ort-cuda")
    assert OrtRunner(model, "ort-cpu").infer(np.zeros((1, 3, 32, 32), np.float32))["probs"].shape == (1, 17)
    monkeypatch.setattr(importlib.metadata, "distributions", lambda: [_dist("onnxruntime-gpu")])
    assert ort_backend.conflict_message() is None


def test_this_machine_has_one_onnxruntime():
    """The real environment: the check reads real distribution metadata without error."""
    names = {(d.metadata.get("Name") or "").lower() for d in importlib.metadata.distributions()}
    assert (ort_backend.conflict_message() is None) == (not {"onnxruntime", "onnxruntime-gpu"} <= names)
