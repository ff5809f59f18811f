"""The output folder of ``vce-run``: one coherent run per folder, a lock, a run record, no leftovers.

An output folder holds the outputs of exactly one run and ``run.json``, its run record (what ran:
inputs, bundle, settings, vce version; what came out: videos, files, problems). Rules:

- **One process at a time.** ``-o`` is locked (``flock`` on ``.vce-run.lock``) for the whole run;
  a second ``vce-run`` on the same folder stops at once and says so.
- **A used folder is refused.** A folder that holds a finished run is refused unless
  ``--overwrite``, which replaces only the files that run's record lists (and only names vce writes:
  ``events.json``, ``frames.csv``, ``frames.provenance.json``, ``*_timeline.png``, and with ``--follow``
  ``events.jsonl`` and ``status.json``). They stay until
  the new outputs are in place, so a run that fails (a full disk, Ctrl-C) leaves them intact; those
  the new run does not write again are then removed. A folder holding
  other files and no run record is refused: choose a new or empty folder.
- **Resume.** The record is written first with ``status: running``; an interrupted run is resumed
  by the same command (same inputs, bundle, settings: the record's ``signature``). Another command
  on a folder holding an interrupted run is refused unless ``--overwrite``.
- **No leftovers.** Temporary files of a killed run (``.<name>.<random><suffix>.tmp``, the names
  ``vce.runtime.atomic`` gives) are removed at the start of the next run, once the lock is held:
  only those whose target is a file vce writes there.
- **Separate from the inputs.** ``-o`` may not be an input, lie inside one, or contain one (or the
  bundle): outputs would become inputs of the next run.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import os
import re
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from vce.runtime.atomic import write_json
from vce.runtime.errors import VCEError
from vce.runtime.formats.jsonfile import read_json
from vce.runtime.pipeline import PARTIAL_NAME

try:  # POSIX (Linux, Jetson, macOS); elsewhere runs go unlocked
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

RUN_RECORD = "run.json"
RECORD_FORMAT = "vce-run-record"
RECORD_VERSION = 1
LOCK_FILE = ".vce-run.lock"
PARTIAL_DIR = ".partial"
#: what vce-run writes into an output folder (besides run.json, the lock and .partial/); the last
#: two only with --follow
OUTPUT_NAMES = frozenset(
    {"events.json", "frames.csv", "frames.provenance.json", "events.jsonl", "status.json"}
)
TIMELINE_SUFFIX = "_timeline.png"
#: atomic_path's temporary names: "." + target name + "." + mkstemp's 8 characters + suffix + ".tmp"
_TEMP = re.compile(r"\.(?P<target>.+)\.[a-z0-9_]{8}(?P<suffix>\.[^./]*)?\.tmp")
_WRITE_TEST = re.compile(r"\.vce-write-test\.[a-z0-9_]{8}")


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def is_output_name(name: str) -> bool:
    """A plain file name that vce-run writes into an output folder."""
    if not name or "/" in name or "\\" in name or "\0" in name or name.startswith("."):
        return False
    return name in OUTPUT_NAMES or name == RUN_RECORD or name.endswith(TIMELINE_SUFFIX)


def check_separate(
    out: str | os.PathLike[str],
    inputs: Sequence[str | os.PathLike[str]],
    bundle: str | os.PathLike[str] | None = None,
) -> None:
    """Refuse an output folder that is, contains, or lies inside an input (or the bundle)."""
    o = Path(out).resolve()
    named = [(Path(i), "input") for i in inputs] + ([(Path(bundle), "bundle")] if bundle else [])
    for raw, what in named:
        i = raw.resolve()
        if o == i:
            problem = f"-o {out} is the {what} {raw}"
        elif i in o.parents:
            problem = f"-o {out} lies inside the {what} {raw}"
        elif o in i.parents:
            problem = f"the {what} {raw} lies inside the output folder {out}"
        else:
            continue
        raise VCEError(
            f"{problem}; outputs must not mix with what a run reads: choose an -o folder outside it"
        )


class FolderLock:
    """An exclusive, non-blocking ``flock`` on ``folder/.vce-run.lock``, removed on release."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / LOCK_FILE
        self.fd: int | None = None

    def acquire(self) -> None:
        if fcntl is None:  # pragma: no cover
            return
        for _ in range(100):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
            except OSError as exc:
                raise VCEError(
                    f"cannot create the lock file {self.path}: {exc.strerror or exc}; "
                    "remove it if it is not a plain file, or choose another -o"
                ) from exc
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                holder = ""
                with contextlib.suppress(OSError, ValueError):
                    holder = f" (pid {int(os.read(fd, 32).split()[0])})"
                os.close(fd)
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise VCEError(
                        f"{self.path.parent} is in use by another vce-run{holder}; wait for it to "
                        "finish or choose another -o"
                    ) from None
                raise VCEError(f"cannot lock {self.path}: {exc.strerror or exc}") from exc
            # the previous holder may have removed the file between our open and our lock
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path, follow_symlinks=False))
            except OSError:
                same = False
            if not same:
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            self.fd = fd
            return
        raise VCEError(f"cannot lock {self.path}: it keeps being replaced")  # pragma: no cover

    def release(self) -> None:
        if self.fd is None:
            return
        with contextlib.suppress(OSError):
            self.path.unlink()  # still ours: nobody else can hold it while we do
        os.close(self.fd)
        self.fd = None


def check_writable(out_dir: Path) -> None:
    """Fail early (before any inference) if ``out_dir`` cannot be created or written."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=".vce-write-test.", dir=out_dir)
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        raise VCEError(
            f"cannot write to the output folder {out_dir}: {exc.strerror or exc}; choose a writable -o folder"
        ) from exc


def _remove(path: Path) -> bool:
    if path.is_symlink() or not path.is_file():
        return False
    with contextlib.suppress(OSError):
        path.unlink()
        return True
    return False


def clean_temp_files(out: Path) -> list[str]:
    """Remove the temporary files a killed run left (only names vce's atomic writes give)."""
    removed = []
    for folder, ok in ((out, is_output_name), (out / PARTIAL_DIR, PARTIAL_NAME.fullmatch)):
        if not folder.is_dir() or folder.is_symlink():
            continue
        for entry in folder.iterdir():
            m = _TEMP.fullmatch(entry.name)
            ours = m is not None and bool(ok(m["target"])) and (m["suffix"] or "") == Path(m["target"]).suffix
            if folder == out and _WRITE_TEST.fullmatch(entry.name):
                ours = True
            if ours and _remove(entry):
                removed.append(str(entry.relative_to(out)))
    return removed


def read_record(out: Path) -> dict[str, Any] | None:
    """``out/run.json`` if it is there (a VCEError if it is not a run record)."""
    path = out / RUN_RECORD
    if not path.exists():
        return None
    fix = "it is not a vce run record: remove it, or choose another -o"
    data = read_json(path, fix)
    if not isinstance(data, dict) or data.get("format") != RECORD_FORMAT:
        raise VCEError(f"{path}: {fix}")
    return data


def record_files(record: dict[str, Any]) -> list[str]:
    """The output names a record lists (anything that is not a name vce writes is ignored)."""
    files = record.get("files")
    return [f for f in files if isinstance(f, str) and is_output_name(f)] if isinstance(files, list) else []


class OutputFolder:
    """A claimed output folder: locked, cleaned, its run record written (``status: running``)."""

    def __init__(
        self, root: Path, record: dict[str, Any], resuming: bool, superseded: Sequence[str] = ()
    ) -> None:
        self.root = root
        self.record = record
        self.resuming = resuming
        self.partial_dir = root / PARTIAL_DIR
        #: outputs of the run being overwritten, still on disk until this run's outputs are in place
        self.superseded = list(superseded)

    @classmethod
    @contextlib.contextmanager
    def claim(
        cls,
        out: str | os.PathLike[str],
        record: dict[str, Any],
        *,
        overwrite: bool = False,
        keep_partials: Sequence[str] = (),
    ) -> Iterator[OutputFolder]:
        """Lock ``out``, decide new / resume / refuse / overwrite, write the running record.

        ``record`` holds at least ``signature`` (what makes two commands the same run).
        ``keep_partials``: partial file names of this run (kept when overwriting another run).
        On an error or Ctrl-C the record stays only if partial results are there to resume.
        """
        root = Path(out)
        check_writable(root)
        lock = FolderLock(root)
        lock.acquire()
        try:
            clean_temp_files(root)
            resuming, superseded = cls._decide(root, record, overwrite, keep_partials)
            record = {
                "format": RECORD_FORMAT,
                "version": RECORD_VERSION,
                "status": "running",
                **record,
                "started": now(),
                "files": superseded,  # still there: a later --overwrite must know them
            }
            write_json(root / RUN_RECORD, record)
            folder = cls(root, record, resuming, superseded)
            try:
                yield folder
            except BaseException:
                with contextlib.suppress(OSError):
                    folder.partial_dir.rmdir()  # only when empty: partial results stay, to resume
                if not folder.has_partials():
                    with contextlib.suppress(OSError):
                        (root / RUN_RECORD).unlink()
                raise
        finally:
            lock.release()

    @staticmethod
    def _decide(
        root: Path, record: dict[str, Any], overwrite: bool, keep: Sequence[str]
    ) -> tuple[bool, list[str]]:
        """(resuming, outputs of the run being overwritten)."""
        old = read_record(root)
        if old is None:
            others = sorted(e.name for e in root.iterdir() if not e.name.startswith("."))
            if others:
                shown = ", ".join(others[:3]) + (" ..." if len(others) > 3 else "")
                raise VCEError(
                    f"{root} holds files that no vce run record lists ({shown}); vce-run writes into a "
                    "new or empty folder: choose another -o"
                )
            return False, []
        what = "a finished run" if old.get("status") == "complete" else "an interrupted run"
        if old.get("status") != "complete" and old.get("signature") == record.get("signature"):
            return True, record_files(old)  # the same command again: resume
        if not overwrite:
            started = f" (started {old['started']})" if isinstance(old.get("started"), str) else ""
            hint = "" if what == "a finished run" else "; run its command again to finish it"
            raise VCEError(
                f"{root} already holds {what}{started}{hint}; choose another -o, or pass --overwrite "
                "to replace it (deletes only the files that run wrote there)"
            )
        partial = root / PARTIAL_DIR
        if partial.is_dir() and not partial.is_symlink():
            for entry in partial.iterdir():
                if PARTIAL_NAME.fullmatch(entry.name) and entry.name not in keep:
                    _remove(entry)
        return False, record_files(old)

    def drop_superseded(self, written: Sequence[str | os.PathLike[str]]) -> None:
        """Once this run's outputs are in place: remove the overwritten run's outputs it did not rewrite."""
        keep = {Path(f).name for f in written}
        for name in self.superseded:
            if name not in keep:
                _remove(self.root / name)
        self.superseded = []

    def has_partials(self) -> bool:
        return self.partial_dir.is_dir() and any(self.partial_dir.iterdir())
