"""Reading the toolkit's JSON files (events, manifests, sidecars, thresholds) with one clear error."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from vce.runtime.errors import VCEError


def read_json(path: str | os.PathLike[str], fix: str = "") -> Any:
    """Parse ``path``; a missing file or invalid JSON is a VCEError naming the file (and ``fix``)."""
    p = Path(path)
    hint = f"; {fix}" if fix else ""
    if not p.is_file():
        raise VCEError(f"{p}: no such file{hint}")
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise VCEError(f"{p}: not valid JSON ({exc}){hint}") from exc
