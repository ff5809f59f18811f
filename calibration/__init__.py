"""vce.calibration: the official temporal mAP, threshold and post-processing calibration, INT8.

numpy only (ONNX/ONNX Runtime for INT8, imported lazily); never imports torch.
"""
