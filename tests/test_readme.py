"""The README's commands are run, as Polygraphy runs its examples.

Every ```bash block of README.md is preceded by a marker comment saying how it is checked:

- ``<!-- readme: setup -->``: the set-up + demo command; CI runs its install part (``.ci/run``) and
  the demo test runs ``vce-demo``;
- ``<!-- readme: test-command -->``: the test command, which ``.ci/run`` must run verbatim;
- ``<!-- readme: run -->``: run here, in order, in one temporary folder (a walk-through on
  synthetic data);
- ``<!-- readme: gpu -->`` / ``<!-- readme: real-data -->``: need a GPU (TensorRT) or real data and
  weights; only checked for referring to commands that exist;
- ``<!-- readme: other-index -->``: installs from a package index other than the one CI uses (the
  CPU build of PyTorch); checked like the GPU blocks.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BLOCK = re.compile(r"<!-- readme: ([a-z-]+) -->\s*\n```bash\n(.*?)```", re.S)
KINDS = {"setup", "test-command", "run", "gpu", "real-data", "other-index"}
CLIS = {"vce-train", "vce-export", "vce-run", "vce-eval", "vce-calibrate", "vce-demo"}


def blocks(kind: str | None = None) -> list[str]:
    found = [(k, body) for k, body in BLOCK.findall(README.read_text(encoding="utf-8"))]
    return [body for k, body in found if kind is None or k == kind]


def commands(body: str) -> list[str]:
    """Logical command lines of a block (comments dropped, backslash continuations joined)."""
    joined = body.replace("\\\n", " ")
    return [line.strip() for line in joined.splitlines() if line.strip() and not line.strip().startswith("#")]


def test_every_bash_block_is_marked() -> None:
    text = README.read_text(encoding="utf-8")
    assert text.count("```bash") == len(BLOCK.findall(text)), "a ```bash block in README.md has no marker"
    assert {k for k, _ in BLOCK.findall(text)} <= KINDS


def test_ci_runs_exactly_the_readme_test_command() -> None:
    [block] = blocks("test-command")
    [command] = commands(block)
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert command in [line.strip() for line in ci], (
        f".ci/run does not run the README's test command {command!r}"
    )


def test_setup_block_installs_what_ci_installs_and_runs_the_demo() -> None:
    [block] = blocks("setup")
    [command] = commands(block)
    parts = [p.strip() for p in command.split("&&")]
    assert parts[-1].startswith("vce-demo")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    install = next(p for p in parts if p.startswith("pip install"))
    assert install.split("pip install", 1)[1].strip() in ci


def test_gpu_and_real_data_blocks_use_existing_commands() -> None:
    for kind in ("gpu", "real-data", "other-index"):
        for body in blocks(kind):
            for line in commands(body):
                words = shlex.split(line)
                tools = [w for w in words if w.startswith("vce-")]
                assert all(t in CLIS for t in tools), line


@pytest.mark.slow
def test_how_it_is_built_matches_the_tree() -> None:
    """Every path the README's "How it is built" names exists, and it names every package folder."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## How it is built") :]
    section = section[: section.index("\n## ", 3)]
    named = set(re.findall(r"`((?:runtime|calibration|train|export)/[\w./*]*)`", section))
    for path in named:
        found = list(ROOT.glob(path)) if "*" in path else [ROOT / path] if (ROOT / path).exists() else []
        assert found, f"README names {path}, which is not in the tree"
    folders = {
        f"{p.parent.relative_to(ROOT).as_posix()}/"
        for layer in ("runtime", "calibration", "train", "export")
        for p in (ROOT / layer).rglob("__init__.py")
    }
    assert folders - named == set(), "package folders the README's 'How it is built' does not name"
    layer_files = {p.relative_to(ROOT).as_posix() for p in (ROOT / "runtime").glob("*.py")} - {
        "runtime/__init__.py"
    }
    assert layer_files - named == set(), "runtime modules the README's 'How it is built' does not name"


def test_readme_walkthrough_runs(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
    bash = shutil.which("bash")
    assert bash is not None
    ran = 0
    for body in blocks("run"):
        for line in commands(body):
            proc = subprocess.run(
                [bash, "-ec", line], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
            )
            assert proc.returncode == 0, (
                f"README command failed: {line}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
            )
            ran += 1
    assert ran >= 10
    # the walk-through ends with outputs a user can look at
    assert (tmp_path / "out" / "events.json").is_file()
    assert (tmp_path / "bundle" / "manifest.json").is_file()
