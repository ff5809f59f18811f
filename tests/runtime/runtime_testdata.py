"""Runtime test data made without torch (imported by the tests as ``runtime_testdata``): a tiny colour-reading ONNX model, bundles, videos, folders.

The model: images [N,3,H,W] -> GlobalAveragePool -> Flatten -> MatMul + Add -> logits [N,17] ->
Sigmoid -> probs. A red frame switches on ``mouth``, a green one ``stomach``, a blue one
``active bleeding``; a grey frame nothing, so the expected events of a colour sequence are known.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from vce.runtime.bundle import Bundle
from vce.runtime.labels import LABEL_INDEX, NUM_LABELS
from vce.runtime.preprocess import PreprocessSpec

COLOURS: dict[str, tuple[int, int, int]] = {  # RGB
    "k": (128, 128, 128),
    "r": (230, 40, 40),
    "g": (40, 230, 40),
    "b": (40, 40, 230),
}
#: colour code -> active labels under the tiny model
COLOUR_LABELS = {"k": [], "r": ["mouth"], "g": ["stomach"], "b": ["active bleeding"]}
#: a small video: 6 grey, 12 red, 12 green frames -> events [] 0-5, [mouth] 6-17, [stomach] 18-29
SEQUENCE = "k" * 6 + "r" * 12 + "g" * 12
SEQUENCE_EVENTS = [
    {"start": 0, "end": 5, "label": []},
    {"start": 6, "end": 17, "label": ["mouth"]},
    {"start": 18, "end": 29, "label": ["stomach"]},
]
#: small, fast preprocessing for tests (the model does not care about the size)
FAST_SPEC = PreprocessSpec(image_size=32, resample="cv2-area")


def make_onnx(path: Path, *, nan: bool = False, size: int | None = None) -> Path:
    """The tiny colour model; ``size`` fixes H = W (TensorRT engines want only N dynamic)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = np.zeros((3, NUM_LABELS), np.float32)
    b = np.full(NUM_LABELS, -6.0, np.float32)
    for channel, label in enumerate(("mouth", "stomach", "active bleeding")):
        w[channel, LABEL_INDEX[label]] = 4.0
        b[LABEL_INDEX[label]] = -2.0
    inits = [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")]
    nodes = [
        helper.make_node("GlobalAveragePool", ["images"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["feat"]),
        helper.make_node("MatMul", ["feat", "W"], ["mm"]),
        helper.make_node("Add", ["mm", "B"], ["logits"]),
    ]
    if nan:
        inits.append(numpy_helper.from_array(np.array([np.nan], np.float32), "NAN"))
        nodes += [
            helper.make_node("Sigmoid", ["logits"], ["p0"]),
            helper.make_node("Mul", ["p0", "NAN"], ["probs"]),
        ]
    else:
        nodes.append(helper.make_node("Sigmoid", ["logits"], ["probs"]))
    graph = helper.make_graph(
        nodes,
        "tiny_colour",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, size or "H", size or "W"])],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", NUM_LABELS]),
            helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", NUM_LABELS]),
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def make_bundle(
    root: Path, *, nan: bool = False, spec: PreprocessSpec = FAST_SPEC, thresholds: float = 0.5
) -> Path:
    bundle = Bundle.create(root)
    make_onnx(root / "model.onnx", nan=nan)
    bundle.add_file("model.onnx", "fp32")
    bundle.manifest.preprocess = spec.to_dict()
    bundle.manifest.thresholds = {k: thresholds for k in bundle.manifest.thresholds}
    bundle.save()
    return root


def colour_frames(sequence: str, size: int = 40, seed: int = 0) -> np.ndarray:
    """RGB uint8 frames [T, size, size, 3]: each a flat colour with a little noise."""
    rng = np.random.default_rng(seed)
    out = np.empty((len(sequence), size, size, 3), np.uint8)
    for i, code in enumerate(sequence):
        noise = rng.integers(-10, 11, (size, size, 3))
        out[i] = np.clip(np.array(COLOURS[code]) + noise, 0, 255)
    return out


def write_video(path: Path, frames: np.ndarray, fourcc: str = "MJPG", fps: float = 10.0) -> Path:
    h, w = frames.shape[1:3]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (w, h))
    assert writer.isOpened(), f"cannot write {path}"
    for f in frames:
        writer.write(np.ascontiguousarray(f[..., ::-1]))
    writer.release()
    return path


def write_h264(path: Path, frames: np.ndarray, fps: int = 25) -> Path:
    """An H.264 MP4 with B-frames (libx264 through PyAV: OpenCV's wheels cannot encode H.264)."""
    import av

    h, w = frames.shape[1:3]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"crf": "23", "bf": "2", "g": "12"}
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_folder(
    folder: Path, frames: np.ndarray, numbers: Sequence[int] | None = None, pattern: str = "frame_{:06d}.png"
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(frames):
        n = numbers[i] if numbers is not None else i
        assert cv2.imwrite(str(folder / pattern.format(n)), np.ascontiguousarray(f[..., ::-1]))
    return folder


def grow_in_thirds(data: bytes, path: Path, pause: float = 0.5) -> threading.Thread:
    """Write the first third of ``data`` to ``path`` now, the other two from a started thread, each
    after ``pause`` seconds (a recorder writing a file while it is being read)."""
    path.write_bytes(data[: len(data) // 3])

    def append() -> None:
        for part in (data[len(data) // 3 : 2 * len(data) // 3], data[2 * len(data) // 3 :]):
            time.sleep(pause)
            with open(path, "ab") as fh:
                fh.write(part)

    writer = threading.Thread(target=append, daemon=True)
    writer.start()
    return writer
