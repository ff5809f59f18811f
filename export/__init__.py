"""vce.export: ONNX export, typed FP16 graphs, TensorRT engines, model bundles and parity checks."""
