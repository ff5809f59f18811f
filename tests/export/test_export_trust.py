"""vce-export against hostile input (issue 11): external data in the fp16 step, and ``-o`` folders
that are not vce bundles (export never deletes a file it did not write)."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
from onnx.external_data_helper import convert_model_to_external_data

from vce.export.fp16 import convert_fp16
from vce.runtime.errors import VCEError


def _external_copy(src: Path, dst: Path, location: str = "weights.bin") -> Path:
    """``src`` saved as ``dst`` with every initializer in the file ``location`` beside it (ONNX's way)."""
    model = onnx.load(str(src))
    convert_model_to_external_data(model, all_tensors_to_one_file=True, location=location, size_threshold=0)
    onnx.save(model, str(dst))
    return dst


def test_fp16_refuses_a_graph_with_external_data(tmp_path: Path, tiny_bundle: Path) -> None:
    """onnx.load would read the external file into the graph (and the fp16 graph would embed it)."""
    src = _external_copy(tiny_bundle / "model.onnx", tmp_path / "model.onnx")
    assert (tmp_path / "weights.bin").stat().st_size > 1000
    with pytest.raises(VCEError, match="stores tensor data in external files"):
        convert_fp16(src, tmp_path / "model_fp16.onnx", check=False)
    assert not (tmp_path / "model_fp16.onnx").exists()


# --- hole 4: -o DIR that is not a vce bundle -------------------------------------------------------


def _export(monkeypatch, capsys, out: Path, *extra: str) -> tuple[int, str]:
    import sys

    from vce.export.cli import main

    monkeypatch.setattr(sys, "argv", ["vce-export", "onnx", "tiny", "-o", str(out), *extra])
    with pytest.raises(SystemExit) as exc:
        main()
    return int(exc.value.code or 0), capsys.readouterr().err


def _one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err and len(lines) == 1 and lines[0].startswith("vce-export: error:"), err
    return lines[0]


def _thesis_folder(folder: Path, manifest: dict | None) -> dict[str, bytes]:
    folder.mkdir()
    files = {"thesis.docx": b"four years of work", "notes.txt": b"notes"}
    for name, data in files.items():
        (folder / name).write_bytes(data)
    if manifest is not None:
        (folder / "manifest.json").write_text(json.dumps(manifest))
        files["manifest.json"] = (folder / "manifest.json").read_bytes()
    return files


@pytest.mark.parametrize("force", [False, True])
@pytest.mark.parametrize(
    "manifest",
    [None, {"files": {"thesis.docx": {"sha256": "0" * 64}}}, {"format": "other", "files": ["thesis.docx"]}],
    ids=["no_manifest", "foreign_manifest", "other_format"],
)
def test_export_never_deletes_user_files(manifest, force, tmp_path: Path, monkeypatch, capsys) -> None:
    """A non-empty folder that is not a vce bundle is refused; --force writes beside its files."""
    out = tmp_path / "thesis"
    files = _thesis_folder(out, manifest)
    code, err = _export(monkeypatch, capsys, out, *(["--force"] if force else []))
    assert {name: (out / name).read_bytes() for name in files} == files  # nothing deleted or changed
    if force and manifest is None:
        assert code == 0 and (out / "model.onnx").is_file()
        from vce.runtime.bundle import Bundle

        assert sorted(Bundle.load(out).manifest.files) == ["model.onnx"]
    else:
        assert code == 2 and not (out / "model.onnx").exists()
        line = _one_line(err)
        assert "not a vce bundle" in line or "manifest.json" in line


def test_a_forged_vce_manifest_cannot_make_export_delete_a_file(tmp_path: Path, monkeypatch, capsys) -> None:
    """format vce-bundle, listing thesis.docx with its real hash under a graph role: still kept."""
    import hashlib

    from vce.runtime.bundle import Manifest

    out = tmp_path / "b"
    files = _thesis_folder(out, None)
    forged = Manifest().to_dict()
    digest = hashlib.sha256(files["thesis.docx"]).hexdigest()
    forged["files"] = {"thesis.docx": {"role": "fp16", "sha256": digest}}
    forged["graphs"] = {"fp16": "thesis.docx"}
    (out / "manifest.json").write_text(json.dumps(forged))
    code, err = _export(monkeypatch, capsys, out, "--force")
    assert code == 0, err
    assert (out / "thesis.docx").read_bytes() == files["thesis.docx"]
    assert (out / "notes.txt").read_bytes() == files["notes.txt"]


def test_force_never_overwrites_a_file_the_bundle_did_not_write(tmp_path: Path, monkeypatch, capsys) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "model.onnx").write_bytes(b"my own model")
    code, err = _export(monkeypatch, capsys, out, "--force")
    assert code == 2 and "model.onnx" in _one_line(err)
    assert (out / "model.onnx").read_bytes() == b"my own model"


def test_an_earlier_bundle_is_replaced(tmp_path: Path, monkeypatch, capsys) -> None:
    out = tmp_path / "b"
    assert _export(monkeypatch, capsys, out)[0] == 0
    (out / "notes.txt").write_text("the user's notes beside the bundle")
    assert _export(monkeypatch, capsys, out, "--opset", "18")[0] == 0
    assert (out / "notes.txt").read_text() == "the user's notes beside the bundle"
