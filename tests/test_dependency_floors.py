"""Dependency floors that close known holes (issue 11): a release below them is refused by pip.

- torch >= 2.10: ``torch.load(weights_only=True)`` can be bypassed below 2.6 (CVE-2025-32434) and
  below 2.10 (CVE-2026-24747); vce reads paper checkpoints with it.
- onnxruntime >= 1.27: the first release that refuses external-data paths leaving the model folder
  for dense initializers (microsoft/onnxruntime#26776, from 1.24) *and* sparse initializers
  (microsoft/onnxruntime#28408). Checked here with the wheels and a crafted graph: 1.23.2 reads an
  absolute path; 1.24.1, 1.25.1 and 1.26.0 refuse it for an initializer but still read it through a
  sparse initializer; 1.27.0 refuses both. vce's own scan (vce.runtime.onnxscan) refuses every
  graph with external data on any version.
"""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")
PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
FLOORS = {"torch": (2, 10), "torchvision": (0, 25), "onnxruntime": (1, 27)}


def _floors() -> dict[str, tuple[int, ...]]:
    data = tomllib.loads(PYPROJECT.read_text())
    project = data["project"]
    specs = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        specs += extra
    found: dict[str, tuple[int, ...]] = {}
    for spec in specs:
        m = re.match(r"([A-Za-z0-9_.-]+)\s*>=\s*([0-9.]+)", spec)
        if m and m.group(1) in FLOORS:
            found[m.group(1)] = tuple(int(x) for x in m.group(2).split("."))
    return found


def test_floors_are_past_the_known_holes() -> None:
    floors = _floors()
    assert set(floors) == set(FLOORS)
    for name, minimum in FLOORS.items():
        assert floors[name] >= minimum, f"{name}>={'.'.join(map(str, floors[name]))} is below {minimum}"


@pytest.mark.parametrize("name", sorted(FLOORS))
def test_the_installed_version_meets_the_floor(name: str) -> None:
    try:
        version = metadata.version(name)
    except metadata.PackageNotFoundError:
        pytest.skip(f"{name} is not installed")
    numbers = tuple(int(x) for x in re.findall(r"\d+", version)[:2])
    assert numbers >= FLOORS[name], version
