"""vce.runtime: light inference from a video or frame folder to RARE-VISION events.

This layer never imports torch: it must run on a Jetson with numpy, OpenCV, Pillow and ONNX Runtime or
TensorRT. It holds the toolkit's single definitions of the labels, the preprocessing, the
post-processing, the per-frame CSV, the event JSON and the bundle manifest.
"""

from vce.runtime.labels import LABELS, NUM_LABELS

__all__ = ["LABELS", "NUM_LABELS"]
