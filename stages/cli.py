"""The ``plc`` command line: parse options, build a stage config, run the stage, set the exit code.

Every stage command is built from its config class in ``stages.configs`` (one field, one
option: see ``stages.options``). Nothing imports this module; heavy imports (torch, zarr)
happen inside the commands so that ``plc --help`` stays fast.
"""

from __future__ import annotations

import logging
import sys
from typing import Annotated

import typer

from stages.configs import EvaluateConfig
from stages.distill.config import DistillConfig
from stages.import_teacher.config import ImportTeacherConfig
from stages.options import command
from stages.precompute.config import PrecomputeConfig
from stages.prepare.config import PrepareConfig
from stages.report.config import InspectConfig, ReportConfig
from stages.train.config import AssistantConfig, TeacherConfig

app = typer.Typer(
    help="PLC-KD: precompute progressively corrected soft labels once, distill many students.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


command(
    app,
    "prepare",
    PrepareConfig,
    "stages.prepare.stage:run",
    help="Read a raw dataset, check every file, and write the prepared dataset store.",
)
command(
    app,
    "train-teacher",
    TeacherConfig,
    "stages.train.teacher:run",
    help="Train the teacher T on the train split with L_Seg (0.5 CE + 0.5 Dice).",
)
command(
    app,
    "import-teacher",
    ImportTeacherConfig,
    "stages.import_teacher.stage:run",
    help="Import a teacher's probability maps (nnU-Net v2 --save_probabilities, arrays, PNGs) "
    "as the teacher T: a lookup by image for train-assistant and precompute.",
)
command(
    app,
    "train-assistant",
    AssistantConfig,
    "stages.train.assistant:run",
    help="Train an assistant: TA_f on false-pixel images or TA_b on boundary-transform images.",
)
command(
    app,
    "precompute",
    PrecomputeConfig,
    "stages.precompute.stage:run",
    help="Run the teacher team once over the train split and write every label variant.",
)
command(
    app,
    "distill",
    DistillConfig,
    "stages.distill.stage:run",
    help="Train a student with L_Seg + λ·KD from stored labels, then evaluate it on the test split.",
)
command(
    app,
    "evaluate",
    EvaluateConfig,
    "stages.evaluate:run",
    help="Evaluate a checkpoint on a split: per-image Dice and IoU.",
)
command(
    app,
    "report",
    ReportConfig,
    "stages.report.stage:run",
    help="Write a Table-2-style report: every variant, Dice/IoU mean ± std over seeds.",
)
command(
    app,
    "inspect",
    InspectConfig,
    "stages.report.inspect:run",
    help="Draw a Fig-4-style panel: image, GT, each variant's foreground probability, false pixels.",
)


@app.command()
def verify(
    path: Annotated[str, typer.Argument(help="A dataset or label store: a path or a URL.")],
) -> None:
    """Validate a dataset store or a label store and print a summary."""
    from storage_schema import StoreError, format_summary, verify_store

    try:
        typer.echo(format_summary(verify_store(path)))
    except StoreError as err:
        typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None


@app.command()
def models(size: Annotated[int, typer.Option(help="Input size for the counts.")] = 224) -> None:
    """List the network registry: name, role, parameters, input sizes."""
    from pipeline.models.registry import describe_models

    try:
        rows = describe_models(size)
    except ValueError as err:
        typer.secho(f"error: --size {size}: {err}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None
    typer.echo(f"{'name':<16}{'role':<10}{'parameters':>14}  input sizes")
    for r in rows:
        typer.echo(f"{r['name']:<16}{r['role']:<10}{r['parameters']:>14,}  {r['input_sizes']}")
