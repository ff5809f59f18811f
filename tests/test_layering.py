"""The layers, enforced: runtime <- calibration <- train <- export, and torch only in train/export.

Every module of the four package folders is parsed (not imported) and each import it can make is
checked: ``import``/``from`` statements at any depth (function-level lazy imports included, relative
ones resolved) and string imports (``require("...")``, ``importlib.import_module("...")``). A module
may import ``vce`` only from its own layer and those below it; torch, timm, open_clip and
torchvision appear only in train/ and export/; optional heavy dependencies are never imported at
module level in runtime/ and calibration/ (``vce-run`` must start on a Jetson without them).

Then a subprocess really imports every module of runtime/ and calibration/ (listed from the tree)
with torch & co. made unimportable.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: package folder -> its rank (a module imports vce only from folders of its rank or lower)
LAYERS = {"runtime": 0, "calibration": 1, "train": 2, "export": 3}
#: allowed only in train/ and export/
TORCH = frozenset({"torch", "timm", "open_clip", "torchvision"})
#: optional in runtime/ and calibration/: imported inside a function (through vce.runtime.lazy.require)
LAZY_ONLY = frozenset(
    {"onnx", "onnxconverter_common", "onnxscript", "tensorrt", "matplotlib", "cuda", "scipy"}
)
#: functions whose first string argument is a module they import
STRING_IMPORTS = frozenset({"require", "import_module"})


@dataclass(frozen=True)
class Import:
    module: str  # the module imported, absolute ("vce.train.model", "torch.nn")
    line: int
    top_level: bool  # executed when the module is imported (not inside a function)


def module_name(folder: str, path: Path, root: Path) -> str:
    """``runtime/formats/eventjson.py`` -> ``vce.runtime.formats.eventjson`` (``__init__``: the package)."""
    parts = list(path.relative_to(root / folder).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(["vce", folder, *parts])


def imports_of(source: str, module: str, is_package: bool = False) -> list[Import]:
    """Every import ``source`` (the text of ``module``) can make, with its line."""
    tree = ast.parse(source)
    found: list[Import] = []
    package = module if is_package else module.rpartition(".")[0]

    def visit(node: ast.AST, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = top and not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                found.extend(Import(a.name, child.lineno, top) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:  # relative: resolved against this module's package
                    base = package.split(".")[: len(package.split(".")) - (child.level - 1)]
                    target = ".".join(base + ([child.module] if child.module else []))
                else:
                    target = child.module or ""
                found.append(Import(target, child.lineno, top))
                # "from vce import train" / "from vce.runtime import cli": the names may be modules
                found.extend(
                    Import(f"{target}.{a.name}", child.lineno, top) for a in child.names if a.name != "*"
                )
            elif isinstance(child, ast.Call):
                func = child.func
                name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                first = child.args[0] if child.args else None
                if (
                    name in STRING_IMPORTS
                    and isinstance(first, ast.Constant)
                    and isinstance(first.value, str)
                ):
                    found.append(Import(first.value, child.lineno, top))
            visit(child, inner)

    visit(tree, True)
    return found


def violations(root: Path = ROOT) -> list[str]:
    """Every import of the package folders under ``root`` that breaks the layering, one line each."""
    problems: list[str] = []
    for folder, rank in LAYERS.items():
        for path in sorted((root / folder).rglob("*.py")):
            module = module_name(folder, path, root)
            where = f"{path.relative_to(root)}"
            for imp in imports_of(path.read_text(encoding="utf-8"), module, path.name == "__init__.py"):
                parts = imp.module.split(".")
                top = parts[0]
                if top == "vce" and len(parts) > 1 and parts[1] in LAYERS and LAYERS[parts[1]] > rank:
                    problems.append(f"{where}:{imp.line}: {folder}/ imports {imp.module} (a layer above it)")
                elif top in TORCH and folder not in ("train", "export"):
                    problems.append(
                        f"{where}:{imp.line}: {folder}/ imports {imp.module} (torch & co.: train/export only)"
                    )
                elif top in LAZY_ONLY and imp.top_level and folder in ("runtime", "calibration"):
                    problems.append(
                        f"{where}:{imp.line}: {folder}/ imports {imp.module} at module level (optional: import it "
                        "lazily with vce.runtime.lazy.require)"
                    )
    return problems


def test_no_module_imports_upward_or_torch_below_train() -> None:
    assert violations() == []


def test_the_walk_sees_every_module() -> None:
    """The check covers the whole tree (sub-packages included), so a new module cannot escape it."""
    seen = {module_name(f, p, ROOT) for f in LAYERS for p in (ROOT / f).rglob("*.py")}
    assert {"vce.runtime.formats.eventjson", "vce.runtime.live.follow", "vce.runtime.backends.ort"} <= seen
    assert {"vce.calibration.int8", "vce.train.layers.diff_attention", "vce.export.onnx_export"} <= seen


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for folder in LAYERS:
        (tmp_path / folder).mkdir(exist_ok=True)
    return tmp_path


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        (
            {"runtime/a.py": "from vce.calibration.metric import evaluate\n"},
            "runtime/ imports vce.calibration.metric",
        ),
        (
            {"calibration/a.py": "def f():\n    from vce.train import model\n"},
            "calibration/ imports vce.train",
        ),
        ({"train/x/b.py": "import vce.export.cli\n"}, "train/ imports vce.export.cli"),
        ({"runtime/a.py": "from vce import export\n"}, "runtime/ imports vce.export"),
        ({"runtime/p/__init__.py": "from ...calibration import int8\n"}, "runtime/ imports vce.calibration"),
        ({"calibration/a.py": "from ..train.model import M\n"}, "calibration/ imports vce.train.model"),
        (
            {"calibration/a.py": "def f():\n    import torch.nn\n"},
            "calibration/ imports torch.nn (torch & co.",
        ),
        ({"runtime/a.py": "def f():\n    return require('open_clip', 'x')\n"}, "runtime/ imports open_clip"),
        (
            {"runtime/a.py": "import importlib\nm = importlib.import_module('timm')\n"},
            "runtime/ imports timm",
        ),
        ({"runtime/a.py": "import onnx\n"}, "runtime/ imports onnx at module level"),
        (
            {"calibration/a.py": "if True:\n    from matplotlib import pyplot\n"},
            "imports matplotlib at module level",
        ),
    ],
)
def test_a_synthetic_upward_import_is_caught(tmp_path: Path, files: dict[str, str], expected: str) -> None:
    problems = violations(_tree(tmp_path, files))
    assert len(problems) >= 1 and any(expected in p for p in problems), problems


def test_allowed_imports_pass(tmp_path: Path) -> None:
    ok = {
        "runtime/a.py": "from vce.runtime.errors import VCEError\ndef f():\n    require('onnx', 'x')\n",
        "calibration/a.py": "from vce.runtime import bundle\nfrom .metric import evaluate\n",
        "train/a.py": "import torch\nfrom vce.calibration.metric import evaluate\n",
        "export/a.py": "import onnx, torch\nfrom vce.train.model import M\nfrom vce.runtime import cli\n",
    }
    assert violations(_tree(tmp_path, ok)) == []


#: the start of a script run without torch & co.: importing one of them raises ImportError
#: (also used by tests/runtime/test_torch_free.py); ``banned()``: those imported all the same
BLOCK_TORCH = r"""
import importlib.abc, sys
BLOCKED = ("torch", "timm", "open_clip", "torchvision")
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is blocked: this part of vce must not import it")
        return None
sys.meta_path.insert(0, Block())
def banned():
    return sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
"""

BLOCKER = (
    BLOCK_TORCH
    + r"""
import importlib, pkgutil
count = 0
for package in ("vce.runtime", "vce.calibration"):
    pkg = importlib.import_module(package)
    for info in pkgutil.walk_packages(pkg.__path__, package + "."):
        importlib.import_module(info.name)
        count += 1
print("IMPORTED", count, "BANNED", banned())
"""
)


def test_runtime_and_calibration_import_without_torch() -> None:
    """Every module of runtime/ and calibration/ (walked from the tree) imports with torch blocked."""
    proc = subprocess.run([sys.executable, "-c", BLOCKER], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    want = sum(
        1 for f in ("runtime", "calibration") for p in (ROOT / f).rglob("*.py") if p.name != "__init__.py"
    ) + sum(
        1 for f in ("runtime", "calibration") for p in (ROOT / f).rglob("__init__.py") if p.parent != ROOT / f
    )
    assert proc.stdout.strip() == f"IMPORTED {want} BANNED []", proc.stdout
