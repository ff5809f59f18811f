"""Atomic file writes: write a temporary file beside the target, then rename over it."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vce.runtime.errors import VCEError

_UMASK = os.umask(0o022)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; on success rename it onto ``path``.

    On any exception (Ctrl-C included) the temporary file is removed and the target is untouched.
    ``suffix`` defaults to the target's suffix, so tools that look at extensions still work.
    """
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(
            prefix=f".{target.name}.",
            suffix=(target.suffix if suffix is None else suffix) + ".tmp",
            dir=folder,
        )
    except OSError as exc:
        raise VCEError(f"cannot write to {folder}: {exc.strerror or exc}; choose a writable folder") from exc
    os.close(fd)
    with contextlib.suppress(OSError):  # mkstemp makes 0600; give outputs the usual umask mode
        os.chmod(tmp_name, 0o666 & ~_UMASK)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | os.PathLike[str], obj: Any, indent: int | None = 2) -> Path:
    return write_text(path, json.dumps(obj, indent=indent) + "\n")
