"""Progress output of the training commands: live bars on a terminal, plain lines in a log.

Live bars go to stderr and only when stderr is a terminal (as ``vce-run`` does): piped into a file,
a bar is either invisible until it ends or, transient, leaves an empty line behind. What a log must
show anyway (one line per training epoch) is printed with ``say``.
"""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

_err = Console(stderr=True, highlight=False, soft_wrap=True)


class LiveBar:
    """A started bar with elapsed time and ETA (a no-op when stderr is not a terminal)."""

    def __init__(self, description: str, total: int, *, transient: bool = True) -> None:
        columns: tuple[ProgressColumn, ...] = (
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
        )
        self._bar = Progress(*columns, console=_err, transient=transient, disable=not _err.is_terminal)
        self._task = self._bar.add_task(description, total=total)
        self._bar.start()

    def advance(self, steps: int = 1, description: str | None = None) -> None:
        if description is None:
            self._bar.advance(self._task, steps)
        else:
            self._bar.update(self._task, advance=steps, description=description)

    def stop(self) -> None:
        self._bar.stop()


def say(message: str) -> None:
    """One progress line on stderr (terminal or not), above any live bar."""
    _err.print(message, markup=False)
