"""User-facing errors: one clear line, a non-zero exit, no traceback."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import NoReturn

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


class VCEError(Exception):
    """An error the user can fix: the message says what, which file, and what to do.

    ``exit_code`` is what the command-line tools exit with (2 by default).
    """

    def __init__(self, message: str, exit_code: int = EXIT_USER_ERROR) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class MissingDependencyError(VCEError):
    """An optional dependency is not installed; the message names the extra to install."""


def run_cli(app: Callable[[], object], prog: str) -> NoReturn:
    """Run a command-line entry point, turning VCEError and Ctrl-C into one line and an exit code.

    Set ``VCE_DEBUG=1`` to see the traceback instead.
    """
    try:
        app()
    except VCEError as exc:
        if os.environ.get("VCE_DEBUG"):
            raise
        print(f"{prog}: error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
    sys.exit(0)
