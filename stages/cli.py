"""The ``plc`` command line: parse options, build a stage config, run the stage, set the exit code.

Nothing imports this module; heavy imports (torch, zarr) happen inside the commands so that
``plc --help`` stays fast.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    help="PLC-KD: precompute progressively corrected soft labels once, distill many students.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

NoProgress = Annotated[bool, typer.Option("--no-progress", help="Hide progress bars.")]
Force = Annotated[bool, typer.Option("--force", help="Rebuild even if the output is up to date.")]
Device = Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")]
Seed = Annotated[int, typer.Option(help="Random seed.")]


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _run(make_config, stage_run) -> Path:
    """Build the config and run the stage; user errors become one message and exit code 1."""
    from stages.errors import USER_ERRORS

    try:
        result = stage_run(make_config())
    except USER_ERRORS as err:
        typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None
    typer.echo(str(result))
    return result


@app.command()
def prepare(
    dataset: Annotated[
        str, typer.Option(help="Layout: synthetic, folder, kvasir, cvc, isic, idrid.")
    ],
    out: Annotated[
        Path | None, typer.Option(help="Store path (default data/<dataset>.zarr).")
    ] = None,
    root: Annotated[Path | None, typer.Option(help="Root folder of the raw dataset.")] = None,
    size: Annotated[int, typer.Option(help="Side of the square images, a multiple of 16.")] = 224,
    split: Annotated[
        float, typer.Option(help="Train fraction where the layout has no split.")
    ] = 0.8,
    seed: Seed = 0,
    count: Annotated[int, typer.Option(help="Number of images (synthetic only).")] = 200,
    include_negatives: Annotated[bool, typer.Option(help="Add images without lesions.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing store.")] = False,
    no_progress: NoProgress = False,
) -> None:
    """Read a raw dataset, check every file, and write the prepared dataset store."""
    from stages.prepare import PrepareConfig, run

    _run(
        lambda: PrepareConfig(
            dataset=dataset,
            out=out or Path("data") / f"{dataset}.zarr",
            root=root,
            size=size,
            split=split,
            seed=seed,
            count=count,
            include_negatives=include_negatives,
            overwrite=overwrite,
            progress=not no_progress,
        ),
        run,
    )


@app.command()
def verify(path: Annotated[Path, typer.Argument(help="A dataset or label store.")]) -> None:
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

    rows = describe_models(size)
    typer.echo(f"{'name':<16}{'role':<10}{'parameters':>14}  input sizes")
    for r in rows:
        typer.echo(f"{r['name']:<16}{r['role']:<10}{r['parameters']:>14,}  {r['input_sizes']}")


@app.command("train-teacher")
def train_teacher(
    dataset: Annotated[str, typer.Option(help="Dataset name (data/<name>.zarr).")],
    data: Annotated[Path | None, typer.Option(help="Dataset store path.")] = None,
    out: Annotated[
        Path | None, typer.Option(help="Checkpoint (default models/<ds>/teacher.pt).")
    ] = None,
    model: Annotated[str, typer.Option(help="Registry name (see `plc models`).")] = "transunet",
    epochs: int = 50,
    batch_size: int = 8,
    lr: float = 1e-3,
    seed: Seed = 0,
    augment: Annotated[bool, typer.Option(help="Geometric + photometric augmentation.")] = True,
    device: Device = "auto",
    force: Force = False,
    no_progress: NoProgress = False,
) -> None:
    """Train the teacher T on the train split with L_Seg (0.5 CE + 0.5 Dice)."""
    from stages.train_teacher import TeacherConfig, run

    _run(
        lambda: TeacherConfig(
            dataset=dataset,
            data=data,
            out=out,
            model=model,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            seed=seed,
            augment=augment,
            force=force,
            progress=not no_progress,
            device=device,
        ),
        run,
    )


@app.command("train-assistant")
def train_assistant(
    dataset: Annotated[str, typer.Option(help="Dataset name (data/<name>.zarr).")],
    kind: Annotated[str, typer.Option(help="false-pixel (FIG images) or boundary (BT images).")],
    data: Annotated[Path | None, typer.Option(help="Dataset store path.")] = None,
    teacher: Annotated[Path | None, typer.Option(help="Teacher checkpoint.")] = None,
    out: Annotated[
        Path | None, typer.Option(help="Checkpoint (default models/<ds>/assistant_*.pt).")
    ] = None,
    model: Annotated[
        str | None, typer.Option(help="Registry name; default: the teacher's.")
    ] = None,
    epochs: int = 50,
    batch_size: int = 8,
    lr: float = 1e-3,
    seed: Seed = 0,
    augment: Annotated[bool, typer.Option(help="Geometric + photometric augmentation.")] = True,
    fig_queue_len: Annotated[int, typer.Option(help="FIG queue length M = N.")] = 65536,
    fig_pixels_per_image: Annotated[
        int, typer.Option(help="FIG pixels pushed per image (k).")
    ] = 256,
    fig_real_fraction: Annotated[
        float, typer.Option(help="Share of real images in FIG batches.")
    ] = 0.0,
    fig_fill_passes: Annotated[int, typer.Option(help="Max passes to fill the FIG queues.")] = 5,
    bt_delta: Annotated[int, typer.Option(help="BT band width δ in pixels at 224².")] = 5,
    bt_rho: Annotated[float, typer.Option(help="BT swap ratio ρ.")] = 1.0,
    device: Device = "auto",
    force: Force = False,
    no_progress: NoProgress = False,
) -> None:
    """Train an assistant: TA_f on false-pixel images or TA_b on boundary-transform images."""
    from stages.train_assistant import AssistantConfig, run

    _run(
        lambda: AssistantConfig(
            dataset=dataset,
            kind=kind,
            data=data,
            teacher=teacher,
            out=out,
            model=model,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            seed=seed,
            augment=augment,
            fig_queue_len=fig_queue_len,
            fig_pixels_per_image=fig_pixels_per_image,
            fig_real_fraction=fig_real_fraction,
            fig_fill_passes=fig_fill_passes,
            bt_delta=bt_delta,
            bt_rho=bt_rho,
            force=force,
            progress=not no_progress,
            device=device,
        ),
        run,
    )


@app.command()
def precompute(
    dataset: Annotated[str, typer.Option(help="Dataset name (data/<name>.zarr).")],
    data: Annotated[Path | None, typer.Option(help="Dataset store path.")] = None,
    teacher: Annotated[Path | None, typer.Option(help="Teacher checkpoint.")] = None,
    assistant_fp: Annotated[
        Path | None, typer.Option(help="False-pixel assistant checkpoint.")
    ] = None,
    assistant_bd: Annotated[
        Path | None, typer.Option(help="Boundary assistant checkpoint.")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Label store (default labels/<ds>.zarr).")
    ] = None,
    batch_size: int = 16,
    shard_size: Annotated[int, typer.Option(help="Images per shard (the unit of writing).")] = 64,
    search_backend: Annotated[
        str, typer.Option(help="auto, faiss-gpu, faiss-cpu, torch, kdtree, numpy.")
    ] = "auto",
    sc_smoothing: Annotated[
        float, typer.Option(help="ε of the last-resort smoothed one-hot.")
    ] = 0.1,
    bank_per_class: Annotated[
        int, typer.Option(help="Correct pixels per image and class in the bank.")
    ] = 64,
    seed: Seed = 0,
    workers: Annotated[int, typer.Option(help="Dask LocalCluster workers (0: in-process).")] = 0,
    scheduler: Annotated[
        str | None, typer.Option(help="Dask scheduler address tcp://host:port.")
    ] = None,
    device: Device = "auto",
    force: Force = False,
    no_progress: NoProgress = False,
) -> None:
    """Run the teacher team once over the train split and write all six label variants."""
    from stages.precompute import PrecomputeConfig, run

    _run(
        lambda: PrecomputeConfig(
            dataset=dataset,
            data=data,
            teacher=teacher,
            assistant_fp=assistant_fp,
            assistant_bd=assistant_bd,
            out=out,
            batch_size=batch_size,
            shard_size=shard_size,
            search_backend=search_backend,
            sc_smoothing=sc_smoothing,
            bank_per_class=bank_per_class,
            seed=seed,
            workers=workers,
            scheduler=scheduler,
            force=force,
            progress=not no_progress,
            device=device,
        ),
        run,
    )


@app.command()
def distill(
    labels: Annotated[Path, typer.Option(help="Label store (labels/<ds>.zarr).")],
    out: Annotated[Path, typer.Option(help="Run folder (runs/<exp>).")],
    data: Annotated[
        Path | None, typer.Option(help="Dataset store; default from the label store.")
    ] = None,
    variant: Annotated[
        str,
        typer.Option(help="plc, teacher, teacher_sc, teacher_fa, teacher_ba, teacher_fa_ba, none."),
    ] = "plc",
    loss: Annotated[str, typer.Option(help="Response loss: kd or cwd.")] = "kd",
    student: Annotated[str, typer.Option(help="Registry name (see `plc models`).")] = "unet",
    lam: Annotated[float, typer.Option("--lambda", help="Weight λ of the KD term.")] = 1.0,
    tau: Annotated[float, typer.Option(help="Temperature τ.")] = 1.0,
    seed: Seed = 0,
    epochs: int = 50,
    batch_size: int = 8,
    lr: float = 1e-3,
    augment: Annotated[
        bool, typer.Option(help="Joint augmentation of image, mask, soft label.")
    ] = True,
    live: Annotated[bool, typer.Option(help="Compute labels with the team every step.")] = False,
    device: Device = "auto",
    force: Force = False,
    no_progress: NoProgress = False,
) -> None:
    """Train a student with L_Seg + λ·KD from stored labels, then evaluate on the test split."""
    from stages.distill import DistillConfig, run

    _run(
        lambda: DistillConfig(
            labels=labels,
            out=out,
            data=data,
            variant=variant,
            loss=loss,
            student=student,
            lam=lam,
            tau=tau,
            seed=seed,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            augment=augment,
            live=live,
            force=force,
            progress=not no_progress,
            device=device,
        ),
        run,
    )


@app.command()
def evaluate(
    checkpoint: Annotated[Path, typer.Option(help="Any plc-kd checkpoint.")],
    data: Annotated[Path, typer.Option(help="Dataset store.")],
    split: Annotated[str, typer.Option(help="train, val or test.")] = "test",
    out: Annotated[Path | None, typer.Option(help="Metrics JSON path.")] = None,
    batch_size: int = 16,
    device: Device = "auto",
) -> None:
    """Evaluate a checkpoint on a split: per-image Dice and IoU."""
    from stages.evaluate import EvaluateConfig, run

    _run(
        lambda: EvaluateConfig(
            checkpoint=checkpoint,
            data=data,
            split=split,
            out=out,
            batch_size=batch_size,
            device=device,
        ),
        run,
    )


@app.command()
def report(
    runs: Annotated[Path, typer.Option(help="Folder of runs (each with metrics.json).")],
    out: Annotated[Path, typer.Option(help="Markdown report path.")],
    labels: Annotated[Path | None, typer.Option(help="Label store for label-quality rows.")] = None,
    teacher_metrics: Annotated[Path | None, typer.Option(help="Teacher metrics JSON.")] = None,
) -> None:
    """Write a Table-2-style report: every variant, Dice/IoU mean ± std over seeds."""
    from stages.report import ReportConfig, run

    _run(
        lambda: ReportConfig(runs=runs, out=out, labels=labels, teacher_metrics=teacher_metrics),
        run,
    )


@app.command()
def inspect(
    labels: Annotated[Path, typer.Argument(help="Label store.")],
    image: Annotated[str, typer.Option(help="Image id (or its index in the store).")],
    out: Annotated[Path, typer.Option(help="PNG path.")],
    data: Annotated[
        Path | None, typer.Option(help="Dataset store; default from the label store.")
    ] = None,
) -> None:
    """Draw a Fig-4-style panel: image, GT, each variant's foreground probability, false pixels."""
    from stages.inspect import InspectConfig, run

    _run(lambda: InspectConfig(labels=labels, image=image, out=out, data=data), run)
