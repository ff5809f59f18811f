"""Inference backends ("runners"), one per engine, all with the same small interface.

A runner takes a float32 batch [N,3,H,W] (or, for a uint8 graph, uint8 RGB crops [N,H,W,3]: see
``Runner.input_dtype``) and returns ``{"logits": [N,17], "probs": [N,17]}`` as numpy arrays. ``vce-run`` uses them, and so do the parity checks of ``vce-export`` (the same code
that runs in production is the code that is checked).
"""

from vce.runtime.backends.base import BACKENDS, Runner, available_backends, create_runner

__all__ = ["BACKENDS", "Runner", "available_backends", "create_runner"]
