"""Each CLI option declared once: on its config dataclass field.

A stage config is a frozen dataclass whose fields are declared with :func:`option`; the field
carries the type (its annotation), the default, the help text and the checks (``choices``,
``ge``/``gt``/``le``/``lt``). :class:`StageConfig` runs those checks in ``__post_init__`` and
reports every problem at once, naming the CLI flag; :func:`command` builds the Typer command
from the fields, so the flag ``--batch-size`` exists because the field ``batch_size`` does.

This module and ``stages.configs`` import neither torch nor zarr: ``plc --help`` stays fast.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import operator
import re
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

_KEY = "plc"

Choices = Sequence[str] | Callable[[], Sequence[str]]


@dataclass(frozen=True)
class Opt:
    """What a config field says about itself (see :func:`option`)."""

    help: str
    flag: str | None = None
    choices: Choices | None = None
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    argument: bool = False
    runtime: bool = False
    cli: bool = True
    exists: bool = False

    def choice_list(self) -> list[str]:
        if self.choices is None:
            return []
        return list(self.choices() if callable(self.choices) else self.choices)


def option(
    default: Any = dataclasses.MISSING,
    *,
    help: str,
    flag: str | None = None,
    choices: Choices | None = None,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    argument: bool = False,
    runtime: bool = False,
    cli: bool = True,
    exists: bool = False,
) -> Any:
    """A config field that is also a CLI option.

    Args:
        default: the default (omit for a required option).
        help: the ``--help`` text.
        flag: the flag when it is not ``--field-name`` (e.g. ``--lambda`` for ``lam``).
        choices: allowed values, or a function returning them (called only when checking, so
            a registry that imports torch is not imported by ``plc --help``).
        ge, gt, le, lt: numeric bounds (>=, >, <=, <); ``None`` values are not checked.
        argument: a positional argument instead of an option.
        runtime: changes how a stage runs, never what it produces (left out of the config
            recorded in artifacts, so changing it keeps a rerun a no-op).
        cli: False for a field the CLI does not expose.
        exists: an input path that must exist when given (a URL is left to the reader).
    """
    meta = Opt(help, flag, choices, ge, gt, le, lt, argument, runtime, cli, exists)
    return dataclasses.field(default=default, metadata={_KEY: meta})


def opt_of(f: dataclasses.Field) -> Opt | None:
    """The :class:`Opt` of a dataclass field, or None for a plain field."""
    return f.metadata.get(_KEY)


def flag_of(f: dataclasses.Field) -> str:
    """The CLI spelling of a field: ``--batch-size`` for ``batch_size``."""
    meta = opt_of(f)
    if meta is not None and meta.flag:
        return meta.flag
    if meta is not None and meta.argument:
        return f.name.upper()
    return "--" + f.name.replace("_", "-")


def is_runtime(f: dataclasses.Field) -> bool:
    meta = opt_of(f)
    return meta is not None and meta.runtime


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


_BOUNDS = (
    ("ge", ">=", operator.ge),
    ("gt", ">", operator.gt),
    ("le", "<=", operator.le),
    ("lt", "<", operator.lt),
)


def _bound_problem(name: str, value: float, meta: Opt) -> str | None:
    bounds = [(sym, test, getattr(meta, key)) for key, sym, test in _BOUNDS]
    bounds = [(sym, test, b) for sym, test, b in bounds if b is not None]
    if all(test(value, b) for _, test, b in bounds):
        return None
    rule = " and ".join(f"{sym} {b:g}" for sym, _, b in bounds)
    return f"{name} must be {rule}, got {value!r}."


def _missing_path(value: Any) -> bool:
    """A local path that does not exist (``scheme://`` URLs are not checked here)."""
    text = str(value)
    return not re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:/", text) and not Path(text).exists()


def field_problems(cfg: Any) -> list[str]:
    """Every violated field check of ``cfg`` as one sentence each, naming the flag."""
    problems: list[str] = []
    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        meta = opt_of(f)
        if meta is None:
            continue
        value = getattr(cfg, f.name)
        name = flag_of(f)
        if value is None:
            continue
        want = hints.get(f.name)
        if want in (int, float) and not _is_number(value):
            problems.append(f"{name} must be a number, got {value!r}.")
            continue
        if want is int and isinstance(value, float) and not value.is_integer():
            problems.append(f"{name} must be an integer, got {value!r}.")
            continue
        if meta.exists and _missing_path(value):
            problems.append(f"{name} {value} does not exist; check the path.")
        if meta.choices is not None and value not in meta.choice_list():
            allowed = ", ".join(map(str, meta.choice_list()))
            problems.append(f"{name} must be one of {allowed}; got {value!r}.")
        if _is_number(value) and (problem := _bound_problem(name, value, meta)):
            problems.append(problem)
    return problems


@dataclass(frozen=True)
class StageConfig:
    """Base of the stage configs: field checks plus the stage's own ``problems()``, reported
    together in one ``ValueError`` (one sentence per problem)."""

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            if hints.get(f.name) in (Path, Path | None):
                value = getattr(self, f.name)
                if value is not None and not isinstance(value, Path):
                    object.__setattr__(self, f.name, Path(value))
        problems = field_problems(self)
        if not problems:  # cross-field checks assume each field is valid on its own
            problems = self.problems()
        if problems:
            raise ValueError(" ".join(problems) if len(problems) == 1 else _listed(problems))

    def problems(self) -> list[str]:
        """Cross-field checks of a stage; override. Each item: one sentence naming flags."""
        return []


def _listed(problems: list[str]) -> str:
    return f"{len(problems)} problems with the options:\n" + "\n".join(f"  - {p}" for p in problems)


def _field_by_key(config: type) -> dict[str, dataclasses.Field]:
    """Field of each params-file key: the field name or its flag without dashes."""
    out = {}
    for f in dataclasses.fields(config):
        if opt_of(f) is None or not opt_of(f).cli or opt_of(f).argument:  # type: ignore[union-attr]
            continue
        out[f.name] = f
        out[flag_of(f).lstrip("-").replace("-", "_")] = f
    return out


def params_values(specs: list[str], config: type, ctx: Any, command_name: str) -> dict[str, Any]:
    """Option values from ``FILE:SECTION`` specs (``--params``), for the options not given on the
    command line. Every unknown key, missing file or section is reported in one ValueError."""
    import yaml

    by_key = _field_by_key(config)
    values: dict[str, Any] = {}
    problems: list[str] = []
    for spec in specs:
        file, _, section = spec.rpartition(":")
        if not file or not section:
            problems.append(f"--params {spec!r} must be FILE:SECTION, e.g. params.yaml:team.")
            continue
        try:
            data = yaml.safe_load(Path(file).read_text()) or {}
        except (OSError, yaml.YAMLError) as err:
            problems.append(f"--params: cannot read {file}: {err}.")
            continue
        part = data.get(section) if isinstance(data, dict) else None
        if not isinstance(part, dict):
            problems.append(f"--params: {file} has no section {section!r} of key: value pairs.")
            continue
        for key, value in part.items():
            f = by_key.get(str(key))
            if f is None:
                problems.append(
                    f"--params: {file}:{section}.{key} is not an option of plc {command_name} "
                    f"(see plc {command_name} --help)."
                )
            else:
                values[f.name] = value
    if problems:
        raise ValueError(" ".join(problems) if len(problems) == 1 else _listed(problems))
    # compared by name: typer may vendor its own click, with its own ParameterSource enum
    given = {name for name in values if ctx.get_parameter_source(name).name == "COMMANDLINE"}
    return {k: v for k, v in values.items() if k not in given}


def _typer_param(f: dataclasses.Field, hint: Any) -> inspect.Parameter:
    import typer

    meta = opt_of(f)
    assert meta is not None
    helptext = meta.help
    choices = meta.choices if not callable(meta.choices) else None
    if choices and "one of" not in helptext:
        helptext = f"{helptext} One of: {', '.join(choices)}."
    if meta.argument:
        info = typer.Argument(help=helptext, show_default=False)
    elif meta.flag:
        info = typer.Option(meta.flag, help=helptext)
    else:
        info = typer.Option(help=helptext)
    default = inspect.Parameter.empty if f.default is dataclasses.MISSING else f.default
    return inspect.Parameter(
        f.name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=Annotated[hint, info]
    )


def command(
    app: Any,
    name: str,
    config: type[StageConfig],
    run: str,
    *,
    help: str,
    report: Callable[[Any], None] | None = None,
) -> None:
    """Register ``plc NAME``: its options are ``config``'s fields; it builds the config and
    calls ``run`` ("module:function", imported only when the command runs).

    ``report`` receives the stage's result (default: print it, e.g. the output path). User
    errors (``stages.errors.USER_ERRORS``) become one red line and exit code 1.
    """
    hints = typing.get_type_hints(config)
    fields = [f for f in dataclasses.fields(config) if opt_of(f) and opt_of(f).cli]  # type: ignore[union-attr]
    params = [_typer_param(f, hints[f.name]) for f in fields]
    inherited = {
        f.name
        for base in config.__mro__[1:]
        for f in getattr(base, "__dataclass_fields__", {}).values()
    }
    # required first, then the command's own options, then the shared ones (training, runtime)
    params.sort(key=lambda p: (p.default is not inspect.Parameter.empty, p.name in inherited))

    def cmd(ctx: typer.Context, params: list[str] | None = None, **kwargs: Any) -> None:
        import typer

        from stages.errors import USER_ERRORS

        module, func = run.split(":")
        cfg = None
        try:
            kwargs |= params_values(params or [], config, ctx, name)
            stage_run = getattr(importlib.import_module(module), func)
            cfg = config(**kwargs)
            result = stage_run(cfg)
        except USER_ERRORS as err:
            typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
            raise typer.Exit(1) from None
        except OSError as err:  # a full disk or read-only mount under any writer
            from stages.outputs import write_failure

            out = getattr(cfg, "out_path", None) or getattr(cfg, "out", None)
            if (message := write_failure(err, out)) is None:
                raise
            typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
            raise typer.Exit(1) from None
        (report or (lambda r: typer.echo(str(r))))(result)

    import typer

    extra = [
        inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context),
        inspect.Parameter(
            "params",
            inspect.Parameter.KEYWORD_ONLY,
            default=None,
            annotation=Annotated[
                list[str] | None,
                typer.Option(
                    "--params",
                    metavar="FILE:SECTION",
                    help="Take option values from a YAML section (keys: option names, e.g. "
                    "batch_size or lambda); repeatable; flags given on the command line win.",
                ),
            ],
        ),
    ]
    params = extra + params
    cmd.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    cmd.__annotations__ = {p.name: p.annotation for p in params}
    cmd.__doc__ = help
    cmd.__name__ = name.replace("-", "_")
    app.command(name)(cmd)
