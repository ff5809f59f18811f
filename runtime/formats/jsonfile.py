"""Reading the toolkit's JSON files (events, manifests, sidecars, thresholds) with one clear error."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from vce.runtime.errors import VCEError

#: the largest JSON file read by default (an events file of a whole test set is a few MB)
MAX_JSON_BYTES = 512 << 20


def read_json(path: str | os.PathLike[str], fix: str = "", *, max_bytes: int = MAX_JSON_BYTES) -> Any:
    """Parse ``path``; a missing, oversized, unreadable or invalid file is a VCEError naming it (and ``fix``).

    JSON nested deeper than Python's recursion limit (``[[[[...]]]]`` 200k deep) is invalid here too.
    """
    p = Path(path)
    hint = f"; {fix}" if fix else ""
    if not p.is_file():
        raise VCEError(f"{p}: no such file{hint}")
    try:
        size = p.stat().st_size
        if size > max_bytes:
            raise VCEError(f"{p}: {size} bytes, more than the {max_bytes} a JSON file may have here{hint}")
        return json.loads(p.read_text(encoding="utf-8"))
    except RecursionError:
        raise VCEError(f"{p}: not valid JSON (nested too deeply){hint}") from None
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError, too many digits
        raise VCEError(f"{p}: not valid JSON ({exc}){hint}") from exc
    except OSError as exc:
        raise VCEError(f"{p}: cannot read ({exc.strerror or exc}){hint}") from exc
