"""The Typer application every vce command line is built on: its settings and its help, in one place.

One way to write a command line (``vce-run``, ``vce-train``, ``vce-export``, ``vce-calibrate``,
``vce-eval``, ``vce-demo``):

- the app is ``VCETyper(help=...)``: no pretty tracebacks (:func:`~vce.runtime.errors.run_cli` prints
  one line), no shell-completion options, and ``no_args_is_help`` (an app of several commands prints
  its help when given none; Typer applies it to groups only, so a single-command app that needs
  arguments says ``@app.command(no_args_is_help=True)``);
- the entry point is ``run_cli(app, "vce-...")``;
- every parameter is ``name: Annotated[type, typer.Option(...)] = default``; a default that an
  options object also has is read from it (``FitConfig.lr``, ``PostprocessConfig``...), never typed
  twice; a fixed set of values is a ``StrEnum`` defined next to the code that uses it, so Typer
  validates it and lists the values in the help;
- every command function is named ``<command>_command`` (``fit_command`` for ``vce-train fit``,
  ``run_command`` for ``vce-run``) and registered with its name spelled out (``@app.command("fit")``);
- the command only parses: options objects validate themselves (``__post_init__``, one
  ``VCEError`` line), so a check is written once, next to the object it guards.

On/off flags take no value, yet recent Typer versions (0.2x, which vendor Click) print a value type
for them in the Rich help panel (``--mp4 <bool>``, ``--help <bool>``): the panel asks every option
for ``display_type_rich`` (``typer.rich_utils._print_options_panel``), while the plain-text help
skips flags (``TyperOption.get_help_record``). An option's ``metavar`` wins over its type in both
formats, so the commands made here give each flag an empty one. Older Typer versions print flags
without a type either way; the empty metavar changes nothing there.
"""

from __future__ import annotations

import enum
import typing
from collections.abc import Callable
from typing import Any

import typer
from typer.core import TyperCommand, TyperGroup

from vce.runtime.errors import VCEError


def _flags_take_no_value(params: list[Any]) -> list[Any]:
    """Flags show no value type; a choice shows ``<choice>`` and its help names every value (Typer's
    ``<paper|diff|none>`` would widen the type column until option names are cut at 80 columns)."""
    for param in params:
        if getattr(param, "is_flag", False) and getattr(param, "metavar", None) is None:
            param.metavar = ""
        choices = _enum_of(param)
        if choices is not None and getattr(param, "metavar", None) is None and hasattr(param, "help"):
            param.metavar = "<choice>"
            values = [str(member.value) for member in choices]
            help_text = param.help or ""
            if not all(v in help_text for v in values):
                end = "." if help_text.endswith(".") else ""
                param.help = f"{help_text.rstrip('.')}: {' | '.join(values)}{end}".lstrip(": ")
    return params


def _enum_of(param: Any) -> type[enum.Enum] | None:
    """The ``Enum`` a parameter is annotated with (``E`` or ``E | None``), else None."""
    annotation = getattr(getattr(param, "type_descriptor", None), "annotation", None)
    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, enum.Enum):
            return candidate
    return None


def _one_line_choice_error(exc: typer.BadParameter) -> None:
    """A value outside an option's choices is one ``VCEError`` line (``run_cli`` prints it, exit 2),
    as the checks the choices replaced were; other usage errors keep Typer's panel."""
    if exc.param is not None and _enum_of(exc.param) is not None:
        # Typer 0.2x words it "Invalid value for '--fill': Value error, 'x' is not one of ..."
        raise VCEError(exc.format_message().replace("Value error, ", "")) from None


class VCECommand(TyperCommand):
    """A command whose help shows flags without a value type and whose bad choices are one line."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _flags_take_no_value(super().get_params(ctx))

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except typer.BadParameter as exc:
            _one_line_choice_error(exc)
            raise


class VCEGroup(TyperGroup):
    """A group of commands whose help shows flags without a value type."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _flags_take_no_value(super().get_params(ctx))


class VCETyper(typer.Typer):
    """``typer.Typer`` with vce's settings: no pretty tracebacks (``run_cli`` prints one line), no
    shell-completion options, help when a group gets no command, and ``VCECommand``/``VCEGroup``
    for every command. The one factory of vce's command lines: ``VCETyper(help=...)``."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("pretty_exceptions_enable", False)
        kwargs.setdefault("add_completion", False)
        kwargs.setdefault("no_args_is_help", True)
        kwargs.setdefault("cls", VCEGroup)
        super().__init__(**kwargs)

    def command(self, *args: Any, **kwargs: Any) -> Callable[[Any], Any]:
        kwargs.setdefault("cls", VCECommand)
        return super().command(*args, **kwargs)


def command_argv(app: typer.Typer, command: str | None, values: dict[str, Any]) -> list[str]:
    """The arguments (the command's name first) that give ``app``'s ``command`` (None: a
    single-command app) the parameter ``values`` (keyed by parameter name), as its command line
    spells them: a printed "CLI equivalent" is built from the values that ran, with options that exist.

    A flag becomes its on or off form, a list a comma-separated value (as ``--val-videos``), None is
    left out; an unknown parameter name raises ``KeyError``.
    """
    cmd = typer.main.get_command(app)
    if command is not None:
        cmd = cmd.commands[command]  # type: ignore[attr-defined]
    params = {p.name: p for p in cmd.params}
    args: list[str] = []
    options: list[str] = []
    for name, value in values.items():
        param = params[name]
        if value is None:
            continue
        if isinstance(value, enum.Enum):
            value = value.value
        if not getattr(param, "opts", None) or param.param_type_name == "argument":
            args += [str(v) for v in value] if isinstance(value, (list, tuple)) else [str(value)]
        elif getattr(param, "is_flag", False):
            flag = param.opts[0] if value else (param.secondary_opts or [None])[0]
            if flag is None:
                raise ValueError(f"--{name}: a flag without an off form cannot be given False")
            options.append(flag)
        else:
            text = ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
            options += [_long_opt(param.opts), text]
    return ([command] if command is not None else []) + args + options


def _long_opt(opts: list[str]) -> str:
    return next((o for o in opts if o.startswith("--")), opts[0])
