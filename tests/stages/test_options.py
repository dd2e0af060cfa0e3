"""stages.options: one declaration per option — checks, flags, and the Typer command built from it."""

from __future__ import annotations

import ast
import dataclasses
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from stages.distill.config import DistillConfig
from stages.options import StageConfig, command, field_problems, flag_of, opt_of, option
from stages.precompute.config import PrecomputeConfig
from stages.prepare.config import PrepareConfig
from stages.train.config import AssistantConfig, TeacherConfig

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Toy(StageConfig):
    """A config with one field of each kind."""

    name: str = option(help="A required name.")
    count: int = option(3, help="How many.", ge=1, le=10)
    rate: float = option(0.5, help="A rate.", gt=0, lt=1)
    kind: str = option("a", help="A kind.", choices=("a", "b"))
    lam: float = option(1.0, help="A weight.", flag="--lambda", ge=0)
    out: Path | None = option(None, help="Where.")
    quiet: bool = option(False, help="Runtime only.", runtime=True)

    def problems(self) -> list[str]:
        return ["--name must not be 'x'."] if self.name == "x" else []


def test_valid_config_converts_paths() -> None:
    cfg = Toy(name="n", out="some/where")  # type: ignore[arg-type]
    assert cfg.out == Path("some/where")
    assert field_problems(cfg) == []


def test_every_problem_is_reported_once_naming_its_flag() -> None:
    with pytest.raises(ValueError) as err:
        Toy(name="n", count=0, rate=1.0, kind="c", lam=-1)
    text = str(err.value)
    assert text.startswith("4 problems with the options:")
    assert "--count must be >= 1 and <= 10, got 0." in text
    assert "--rate must be > 0 and < 1, got 1.0." in text
    assert "--kind must be one of a, b; got 'c'." in text
    assert "--lambda must be >= 0, got -1." in text  # the flag, not the field name


def test_one_problem_is_one_sentence_and_cross_checks_run_after_field_checks() -> None:
    with pytest.raises(ValueError, match=r"^--name must not be 'x'\.$"):
        Toy(name="x")
    with pytest.raises(ValueError, match=r"^--count must be >= 1 and <= 10, got 11\.$"):
        Toy(name="x", count=11)  # the cross-field check waits until every field is valid


def test_wrong_types_are_named() -> None:
    with pytest.raises(ValueError, match="--count must be a number, got 'three'"):
        Toy(name="n", count="three")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"--count must be an integer, got 2\.5"):
        Toy(name="n", count=2.5)  # type: ignore[arg-type]


def test_flags_and_runtime_marks() -> None:
    fields = {f.name: f for f in dataclasses.fields(Toy)}
    assert flag_of(fields["lam"]) == "--lambda"
    assert flag_of(fields["count"]) == "--count"
    assert opt_of(fields["quiet"]).runtime and not opt_of(fields["count"]).runtime  # type: ignore[union-attr]


def _toy_app(seen: list[Toy]) -> typer.Typer:
    app = typer.Typer()
    command(app, "toy", Toy, f"{__name__}:_record", help="A toy.", report=seen.append)
    app.command("other")(lambda: None)  # a second command keeps "toy" a subcommand
    return app


_RECORDED: list[Toy] = []


def _record(cfg: Toy) -> Toy:
    _RECORDED.append(cfg)
    return cfg


def test_command_is_built_from_the_fields() -> None:
    seen: list[Toy] = []
    app = _toy_app(seen)
    result = CliRunner().invoke(app, ["toy", "--name", "n", "--count", "4", "--lambda", "0.5"])
    assert result.exit_code == 0, result.output
    assert seen == [Toy(name="n", count=4, lam=0.5)]
    helptext = CliRunner().invoke(app, ["toy", "--help"]).output
    for flag in ("--name", "--count", "--rate", "--kind", "--lambda", "--out", "--quiet"):
        assert flag in helptext
    assert "One of: a, b." in helptext


def test_command_reports_bad_values_in_one_line_without_traceback() -> None:
    app = _toy_app([])
    result = CliRunner().invoke(app, ["toy", "--name", "n", "--count", "0"])
    assert result.exit_code == 1
    assert "error: --count must be >= 1 and <= 10, got 0." in result.output
    assert "Traceback" not in result.output


def test_every_stage_config_field_is_an_option() -> None:
    """A field without option() metadata would silently have no flag."""
    import importlib

    modules = ["stages.configs", *(f"stages.{s}.config" for s in
               ("prepare", "train", "precompute", "distill", "report"))]  # fmt: skip
    stage_configs = {
        c
        for m in modules
        for c in vars(importlib.import_module(m)).values()
        if isinstance(c, type) and issubclass(c, StageConfig) and c is not StageConfig
    }
    assert len(stage_configs) >= 9  # 8 commands and TrainOptions
    for cls in stage_configs:
        for f in dataclasses.fields(cls):
            meta = opt_of(f)
            assert meta is not None and meta.help, f"{cls.__name__}.{f.name} has no option()"


def test_cli_module_declares_no_option_defaults() -> None:
    """stages/cli.py builds stage commands from the configs; it writes no option of its own
    except the global --verbose and the two commands that are not stages."""
    tree = ast.parse((ROOT / "stages" / "cli.py").read_text())
    funcs = {n.name: n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
    assert set(funcs) <= {"main", "verify", "models"}, sorted(funcs)


def test_help_imports_no_torch() -> None:
    """`plc --help` builds every command from the configs without importing torch or zarr."""
    code = (
        "import sys\n"
        "from stages.cli import app\n"
        "try:\n    app(['--help'])\nexcept SystemExit:\n    pass\n"
        "print('heavy:', sorted(m for m in ('torch', 'zarr') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "precompute" in out.stdout and "distill" in out.stdout
    assert out.stdout.strip().endswith("heavy: []")


def test_params_file_supplies_values_and_the_command_line_wins(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("toy:\n  count: 7\n  lambda: 0.25\n  kind: b\nother:\n  rate: 0.1\n")
    seen: list[Toy] = []
    app = _toy_app(seen)
    args = ["toy", "--name", "n", "--params", f"{params}:toy", "--params", f"{params}:other"]
    result = CliRunner().invoke(app, [*args, "--kind", "a"])
    assert result.exit_code == 0, result.output
    assert seen == [Toy(name="n", count=7, lam=0.25, kind="a", rate=0.1)]


def test_params_file_problems_are_listed_once(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("toy:\n  count: 0\n  variants: [a, b]\n")
    app = _toy_app([])
    bad = CliRunner().invoke(app, ["toy", "--name", "n", "--params", f"{params}:toy"])
    assert bad.exit_code == 1 and "Traceback" not in bad.output
    toy = "toy"  # (spelled apart: check_cli_refs reads the literal as a command)
    assert f"{params}:toy.variants is not an option of plc {toy}" in bad.output
    values = CliRunner().invoke(app, ["toy", "--name", "n", "--params", f"{params}:nope"])
    assert f"{params} has no section 'nope'" in values.output and values.exit_code == 1
    invalid = tmp_path / "ok.yaml"
    invalid.write_text("toy:\n  count: 0\n")
    checked = CliRunner().invoke(app, ["toy", "--name", "n", "--params", f"{invalid}:toy"])
    assert "--count must be >= 1 and <= 10, got 0." in checked.output  # values are validated


def test_dvc_params_sections_are_options_of_their_commands() -> None:
    """Every key that dvc.yaml passes with --params names an option (else dvc repro fails)."""
    import re

    import yaml

    from stages.options import _field_by_key

    by_command = {
        "prepare": PrepareConfig,
        "train-teacher": TeacherConfig,
        "train-assistant": AssistantConfig,
        "precompute": PrecomputeConfig,
        "distill": DistillConfig,
    }
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"].values()
    cmds = [stage.get("cmd") or stage["do"]["cmd"] for stage in stages]
    pairs = {
        (re.match(r"plc ([a-z-]+)", cmd).group(1), section)  # type: ignore[union-attr]
        for cmd in cmds
        for section in re.findall(r"--params params\.yaml:(\w+)", cmd)
    }
    assert {cmd for cmd, _ in pairs} == set(by_command)
    for name in ("params.yaml", "params-polyp.yaml"):
        params = yaml.safe_load((ROOT / name).read_text())
        for cmd, section in pairs:
            unknown = set(params[section]) - set(_field_by_key(by_command[cmd]))
            assert not unknown, f"{name}:{section} keys {unknown} are no options of plc {cmd}"


def test_dvc_val_dice_plots_have_a_val_fraction() -> None:
    """A stage that plots val_dice gets a val_fraction > 0 from its params (else no column)."""
    import yaml

    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    plotted = []
    for name, stage in stages.items():
        body = stage.get("do", stage)
        for plot in body.get("plots", []):
            (props,) = plot.values()
            if props.get("y") == "val_dice":
                plotted.append((name, body["params"]))
    assert {name for name, _ in plotted} == {"train_teacher", "train_assistant", "distill"}
    for file in ("params.yaml", "params-polyp.yaml"):
        params = yaml.safe_load((ROOT / file).read_text())
        for name, sections in plotted:
            fractions = [params[s].get("val_fraction", 0) for s in sections]
            assert max(fractions) > 0, f"{file}: stage {name} plots val_dice with val_fraction 0"
