"""Atomic file writes: write a temporary file beside the target, then rename over it.

An OSError while writing or renaming (a full disk, ENOSPC; a quota, EDQUOT; a read-only or vanished
folder) becomes one :class:`WriteError` line naming the target; the temporary file is removed and
the previous target, if any, is left as it was.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vce.runtime.errors import VCEError

_UMASK = os.umask(0o022)
os.umask(_UMASK)
_NO_SPACE = {errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC)}


class WriteError(VCEError):
    """Writing ``path`` failed with ``cause`` (an OSError); nothing was replaced."""

    def __init__(self, path: Path, cause: OSError) -> None:
        self.path, self.cause = path, cause
        what = cause.strerror or str(cause)
        other = cause.filename if isinstance(cause.filename, str) else None
        if other and Path(other).name != path.name and not Path(other).name.startswith(f".{path.name}."):
            what += f" ({other})"
        hint = "free some disk space and run again" if cause.errno in _NO_SPACE else "check the folder"
        super().__init__(
            f"cannot write {path}: {what}; {hint} (the previous {path.name}, if any, is unchanged)"
        )


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; on success rename it onto ``path``.

    On any exception (Ctrl-C included) the temporary file is removed and the target is untouched;
    an OSError becomes a :class:`WriteError` naming the target. ``suffix`` defaults to the target's
    suffix, so tools that look at extensions still work.
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
    except WriteError as exc:
        _remove(tmp)
        if exc.path == tmp:  # a nested atomic write into our temporary file: name the real target
            raise WriteError(target, exc.cause) from exc.cause
        raise
    except OSError as exc:
        _remove(tmp)
        raise WriteError(target, exc) from exc
    except BaseException:
        _remove(tmp)
        raise


def _remove(tmp: Path) -> None:
    with contextlib.suppress(OSError):
        tmp.unlink()


def write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(data)
    return Path(path)


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    return Path(path)


def write_json(path: str | os.PathLike[str], obj: Any, indent: int | None = 2) -> Path:
    return write_text(path, json.dumps(obj, indent=indent) + "\n")
