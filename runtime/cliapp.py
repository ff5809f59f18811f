"""The Typer application every vce command line is built on: its settings and its help, in one place.

On/off flags take no value, yet recent Typer versions (0.2x, which vendor Click) print a value type
for them in the Rich help panel (``--mp4 <bool>``, ``--help <bool>``): the panel asks every option
for ``display_type_rich`` (``typer.rich_utils._print_options_panel``), while the plain-text help
skips flags (``TyperOption.get_help_record``). An option's ``metavar`` wins over its type in both
formats, so the commands made here give each flag an empty one. Older Typer versions print flags
without a type either way; the empty metavar changes nothing there.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import typer
from typer.core import TyperCommand, TyperGroup


def _flags_take_no_value(params: list[Any]) -> list[Any]:
    for param in params:
        if getattr(param, "is_flag", False) and getattr(param, "metavar", None) is None:
            param.metavar = ""
    return params


class VCECommand(TyperCommand):
    """A command whose help shows flags without a value type."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _flags_take_no_value(super().get_params(ctx))


class VCEGroup(TyperGroup):
    """A group of commands whose help shows flags without a value type."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _flags_take_no_value(super().get_params(ctx))


class VCETyper(typer.Typer):
    """``typer.Typer`` with vce's settings: no pretty tracebacks (``run_cli`` prints one line), no
    shell-completion options, and ``VCECommand``/``VCEGroup`` for every command."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("pretty_exceptions_enable", False)
        kwargs.setdefault("add_completion", False)
        kwargs.setdefault("cls", VCEGroup)
        super().__init__(**kwargs)

    def command(self, *args: Any, **kwargs: Any) -> Callable[[Any], Any]:
        kwargs.setdefault("cls", VCECommand)
        return super().command(*args, **kwargs)
