"""A bad value for every option of every ``plc`` command: one message naming the flag, exit != 0.

The cases are derived from the config fields (``stages.configs``: type, bounds, choices), so
a new option is covered the day it is declared. Each case runs the real CLI in-process
(``typer.testing.CliRunner``) from an empty working folder, with a baseline of valid
required options whose inputs do not exist: a bad value the config accepted would run the
stage into a missing-input error that does not name the flag, and fail the test.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from stages.cli import app
from stages.configs import EvaluateConfig
from stages.distill.config import DistillConfig
from stages.import_teacher.config import ImportTeacherConfig
from stages.options import Opt, flag_of, opt_of
from stages.precompute.config import PrecomputeConfig
from stages.prepare.config import PrepareConfig
from stages.report.config import InspectConfig, ReportConfig
from stages.train.config import AssistantConfig, TeacherConfig

COMMANDS: dict[str, type] = {
    "prepare": PrepareConfig,
    "import-teacher": ImportTeacherConfig,
    "train-teacher": TeacherConfig,
    "train-assistant": AssistantConfig,
    "precompute": PrecomputeConfig,
    "distill": DistillConfig,
    "evaluate": EvaluateConfig,
    "report": ReportConfig,
    "inspect": InspectConfig,
}
NOT_FROM_CONFIGS = {"verify", "models"}  # hand-written commands, covered below

# valid required options (relative to the tmp cwd, where PLACEHOLDERS are made): the stage
# gets past option checking and then fails on its inputs, naming neither flag nor value
BASELINE: dict[str, list[str]] = {
    "prepare": ["--dataset", "synthetic", "--count", "2", "--size", "32"],
    "import-teacher": ["--dataset", "ds", "--probs", "probs"],
    "train-teacher": ["--dataset", "ds"],
    "train-assistant": ["--dataset", "ds", "--kind", "boundary"],
    "precompute": ["--dataset", "ds"],
    "distill": ["--labels", "labels.zarr", "--out", "run"],
    "evaluate": ["--checkpoint", "model.pt", "--data", "ds.zarr"],
    "report": ["--runs", "runs", "--out", "report.md"],
    "inspect": ["labels.zarr", "--image", "0", "--out", "panel.png"],
}
PLACEHOLDERS = {
    "labels.zarr": "dir",
    "model.pt": "file",
    "ds.zarr": "dir",
    "runs": "dir",
    "probs": "dir",
    "data/ds.zarr": "dir",  # the default inputs of dataset "ds", so that a stage checking
    "models/ds/teacher.pt": "file",  # its inputs in turn reaches the one that is bad
    "models/ds/assistant_fp.pt": "file",
    "models/ds/assistant_bd.pt": "file",
}
TOP = {Path(name).parts[0] for name in PLACEHOLDERS}
OUTPUTS = {"out"}  # fields naming what a command writes: a missing path there is fine


def _base_type(hint: object) -> object:
    """``int`` for ``int | None`` and so on."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        (inner,) = [a for a in typing.get_args(hint) if a is not type(None)]
        return inner
    return hint


def _outside(meta: Opt, kind: type) -> list[tuple[str, str]]:
    """A value just outside each declared bound."""
    step = 1 if kind is int else 0.5
    cases = []
    for key, value in (("ge", -step), ("gt", 0), ("le", step), ("lt", 0)):
        bound = getattr(meta, key)
        if bound is not None:
            bad = bound + value
            cases.append((key, str(int(bad) if kind is int else bad)))
    return cases


def bad_values(f: dataclasses.Field, hint: object) -> list[tuple[str, str]]:
    """(kind of badness, command-line value) pairs for one field."""
    meta = opt_of(f)
    assert meta is not None
    kind = _base_type(hint)
    if kind is bool:
        return [("flag-with-value", "=maybe")]
    cases: list[tuple[str, str]] = []
    if kind in (int, float):
        cases.append(("not-a-number", "abc"))
        if kind is int:
            cases.append(("not-an-integer", "1.5"))
        cases += _outside(meta, kind)  # type: ignore[arg-type]
    if meta.choices is not None:
        cases.append(("bad-choice", "no-such-choice"))
    if kind is Path and f.name not in OUTPUTS:
        cases.append(("missing-path", f"missing-{f.name}"))
    return cases


def _cases() -> list[tuple[str, str, str, str]]:
    cases = []
    for command, config in COMMANDS.items():
        hints = typing.get_type_hints(config)
        for f in dataclasses.fields(config):
            meta = opt_of(f)
            if meta is None or not meta.cli:
                continue
            for kind, value in bad_values(f, hints[f.name]):
                cases.append((command, f.name, kind, value))
    return cases


def _args(command: str, field: str, value: str) -> tuple[list[str], str]:
    """The command line with ``field`` set to ``value``, and the name the message must use."""
    f = next(f for f in dataclasses.fields(COMMANDS[command]) if f.name == field)
    meta, flag, base = opt_of(f), flag_of(f), list(BASELINE[command])
    assert meta is not None
    if command == "prepare" and field == "root":  # synthetic ignores --root; folder reads it
        base[1] = "folder"
    if meta.argument:
        return [value, *base[1:]], flag
    if value.startswith("="):
        return [*base, flag + value], flag
    if flag in base:
        base[base.index(flag) + 1] = value
        return base, flag
    return [*base, flag, value], flag


def _placeholders(folder: Path) -> None:
    """Empty stand-ins for the baselines' inputs: they exist, but are no valid artifact."""
    for name, kind in PLACEHOLDERS.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.mkdir() if kind == "dir" else path.write_bytes(b"")


def invoke(args: list[str]) -> tuple[int, str, BaseException | None]:
    result = CliRunner().invoke(app, args)
    crash = None if isinstance(result.exception, SystemExit | None) else result.exception
    return result.exit_code, result.output, crash


def assert_one_message(code: int, output: str, crash: BaseException | None, name: str) -> None:
    assert crash is None, f"crashed: {crash!r}\n{output}"
    assert code != 0, output
    assert "Traceback" not in output, output
    errors = output.count("error:") + output.count("Error")
    assert errors == 1, output
    assert name in output, f"the message does not name {name}:\n{output}"


def test_every_command_is_covered() -> None:
    group = typer.main.get_command(app)
    assert set(group.commands) == set(COMMANDS) | NOT_FROM_CONFIGS  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("command", "field", "kind", "value"),
    _cases(),
    ids=[f"{c}-{f}-{k}" for c, f, k, _ in _cases()],
)
def test_bad_value_is_one_message_naming_the_flag(
    command: str, field: str, kind: str, value: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    _placeholders(tmp_path)
    args, name = _args(command, field, value)
    code, output, crash = invoke([command, *args])
    if kind == "missing-path" and value in output:
        name = value  # the stage's own message: the missing path and the command that makes it
    assert_one_message(code, output, crash, name)
    leftovers = sorted(p.name for p in tmp_path.iterdir() if p.name not in TOP)
    assert leftovers == [], f"a refused command wrote {leftovers}"


@pytest.mark.parametrize(
    ("args", "name"),
    [
        (["verify", "missing.zarr"], "missing.zarr"),
        (["models", "--size", "abc"], "--size"),
        (["models", "--size", "0"], "--size"),
        (["models", "--size", "-32"], "--size"),
    ],
)
def test_hand_written_commands(
    args: list[str], name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert_one_message(*invoke(args), name)


def test_baselines_pass_option_checking(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each baseline alone is accepted by the config (so the cases above test one bad value)."""
    monkeypatch.chdir(tmp_path)
    _placeholders(tmp_path)
    for command, base in BASELINE.items():
        code, output, crash = invoke([command, *base])
        assert crash is None, f"{command}: {crash!r}"
        assert "must be" not in output and "check the path" not in output, output
        assert code == (0 if command == "prepare" else 1), output  # the placeholders fail
        print(command, "->", output.strip().splitlines()[-1])
