"""The full ViT-B/16 BiomedCLIP size (random weights, paper variant): export and ORT CPU parity, once."""

from __future__ import annotations

import pytest


@pytest.mark.slow
def test_full_size_export_and_parity(tmp_path):
    from vce.export.bundle_io import write_bundle
    from vce.export.parity import run_parity, synthetic_frames
    from vce.train.factory import resolve_model

    model, info = resolve_model("biomedclip", "paper", seed=0)
    assert sum(p.numel() for p in model.visual.trunk.parameters()) > 85_000_000
    bundle, result = write_bundle(model, tmp_path / "b", model_info=info)
    assert result.audit.ok and result.audit.batch_dim == "N"
    assert (
        result.audit.op_histogram["Softmax"] == 12 and result.audit.op_histogram["LayerNormalization"] == 25
    )
    assert result.check["probs"] <= 1e-4
    images, frames = synthetic_frames(bundle.manifest.preprocess_spec(), 4)
    report = run_parity(model, bundle, images, frames, targets=["ort-cpu"], batch=4)
    probs = report.targets[0].outputs["probs"]
    assert report.passed and probs.max_abs <= 1e-4 and probs.finite
