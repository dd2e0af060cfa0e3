"""Seed variance of the training recipe: old vs new, and each new part left out in turn.

Each run trains one network alone (L_Seg, the teacher stage's code path:
``stages.train.common.train_segmenter``) on the train split of a prepared store for the same
number of optimiser steps, then scores it on the test split (mean per-image Dice). Results
go to a JSON-lines file as they come; a rerun skips the (model, recipe, seed) runs already
there, so an interrupted measurement resumes. The table is printed from that file.

    python benchmarks/recipe.py --data /tmp/polyp96 --results reports/recipe_runs.jsonl \
        --models unet-tiny unet-small --recipes old new --seeds 0 1 2 3 --steps 300

Recipes: ``old`` is the landed code (one pass over the split per epoch, no warmup, no EMA,
no clipping, uniform sampling); ``new`` is the recipe first planned; ``new-no-<part>`` is
``new`` with one part switched back to its old value (leave-one-out); the adopted default is
``new-no-fg``, and ``new-no-fg-no-<part>`` leaves one more part out of it.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from _common import markdown_table, print_header, set_threads

logger = logging.getLogger(__name__)

# the parts of the new recipe, each (name, value in the new recipe, value in the old one)
PARTS = {
    "steps": ("steps_per_epoch", 50, 0),
    "warmup": ("warmup_steps", 30, 0),
    "ema": ("ema_decay", 0.99, 0.0),
    "clip": ("grad_clip", 1.0, None),
    "fg": ("foreground_fraction", 0.5, 0.0),
}


def recipe(name: str) -> dict:
    """The recipe options of ``old``, ``new``, ``new-no-<part>`` or ``new-no-fg-no-<part>``
    (the adopted default, ``new-no-fg``, with one more part switched back)."""
    if name == "old":
        return {key: old for key, _, old in PARTS.values()}
    options = {key: new for key, new, _ in PARTS.values()}
    if name == "new":
        return options
    parts = name.removeprefix("new-no-").split("-no-")
    if not name.startswith("new-no-") or not set(parts) <= set(PARTS) or len(parts) > 2:
        choices = ", ".join(["old", "new", *(f"new-no-{p}" for p in PARTS)])
        raise SystemExit(
            f"--recipes: unknown recipe {name!r}; choose from {choices}, or "
            "new-no-fg-no-<part> (the adopted recipe with <part> left out)."
        )
    for part in parts:
        key, _, old = PARTS[part]
        options[key] = old
    return options


def train_one(data: Path, model_name: str, name: str, seed: int, steps: int, lr: float) -> dict:
    """Train and score one (model, recipe, seed) run; returns its result record."""
    from pipeline.models.registry import build_model
    from pipeline.train import TrainConfig, resolve_device, seed_everything
    from stages.data import load_split, open_store
    from stages.evaluate import evaluate_model
    from stages.train.checks import check_training
    from stages.train.common import augmentation, train_segmenter

    options = recipe(name)
    store = open_store(data)
    train, test = load_split(store, "train"), load_split(store, "test")
    batch = 8
    per_epoch = options["steps_per_epoch"] or len(train) // batch
    if steps % per_epoch:
        raise SystemExit(f"--steps {steps} must be a multiple of the steps per epoch {per_epoch}.")
    cfg = TrainConfig(
        epochs=steps // per_epoch,
        lr=lr,
        seed=seed,
        progress=False,
        device="cpu",
        grad_clip=options["grad_clip"],
        warmup_steps=options["warmup_steps"],
        ema_decay=options["ema_decay"],
    )
    seed_everything(seed)
    n_classes, size = len(store.classes), store.size[0]
    model = build_model(model_name, num_classes=n_classes, img_size=size)
    start, cpu = time.perf_counter(), time.process_time()
    train_segmenter(
        model,
        train,
        train_cfg=cfg,
        batch_size=batch,
        transform=augmentation(True),
        desc=f"{model_name} {name} s{seed}",
        steps_per_epoch=options["steps_per_epoch"],
        foreground_fraction=options["foreground_fraction"],
    )
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    device = resolve_device("cpu")
    test_dice = evaluate_model(model, test, n_classes, batch, device)["dice"]
    check = check_training(
        model, train, store.classes, model_name, batch_size=batch, device=device, allow_weak=True
    )
    return {
        "model": model_name,
        "recipe": name,
        "seed": seed,
        "steps": steps,
        "lr": lr,
        "test_dice": test_dice,
        "train_dice": check["train_dice"],
        "train_seconds": round(seconds, 1),
        "train_cpu_seconds": round(cpu, 1),
        "options": options,
    }


def load_results(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def table(results: list[dict]) -> str:
    """Mean ± std (ddof 1) of test Dice per (model, recipe), in points, with times."""
    import statistics

    groups: dict[tuple[str, str, int], list[dict]] = {}
    for r in results:
        groups.setdefault((r["model"], r["recipe"], r["steps"]), []).append(r)
    rows = []
    for (model, name, steps), runs in groups.items():
        runs = sorted(runs, key=lambda r: r["seed"])
        dice = [100 * r["test_dice"] for r in runs]
        std = statistics.stdev(dice) if len(dice) > 1 else float("nan")
        rows.append(
            [
                model,
                name,
                steps,
                len(dice),
                f"{statistics.mean(dice):.2f}",
                f"{std:.2f}",
                f"{min(dice):.1f}–{max(dice):.1f}",
                ", ".join(f"s{r['seed']} {d:.1f}" for r, d in zip(runs, dice, strict=True)),
                f"{statistics.mean(100 * r['train_dice'] for r in runs):.1f}",
                f"{statistics.mean(r['train_seconds'] for r in runs):.0f}",
                f"{statistics.mean(r['train_cpu_seconds'] for r in runs):.0f}",
            ]
        )
    headers = [
        "model",
        "recipe",
        "steps",
        "seeds",
        "test Dice mean",
        "seed std",
        "range",
        "per seed",
        "train Dice",
        "wall s / run",
        "CPU s / run",
    ]
    return markdown_table(headers, rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="prepared dataset store")
    parser.add_argument("--results", type=Path, required=True, help="JSON-lines results file")
    parser.add_argument("--models", nargs="+", default=["unet-tiny", "unet-small"])
    parser.add_argument("--recipes", nargs="+", default=["old", "new"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3])
    parser.add_argument("--steps", type=int, default=300, help="optimiser steps per run")
    parser.add_argument("--lr", type=float, default=0.002)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--table-only", action="store_true", help="print the table, train none")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    set_threads(args.threads)
    for name in args.recipes:
        recipe(name)  # refuse an unknown recipe before any training
    done = {(r["model"], r["recipe"], r["seed"], r["steps"]) for r in load_results(args.results)}
    if not args.table_only:
        args.results.parent.mkdir(parents=True, exist_ok=True)
        for seed in args.seeds:  # seeds outermost: a partial run has every recipe
            for model in args.models:
                for name in args.recipes:
                    if (model, name, seed, args.steps) in done:
                        continue
                    result = train_one(args.data, model, name, seed, args.steps, args.lr)
                    print(json.dumps(result), flush=True)
                    with open(args.results, "a") as f:
                        f.write(json.dumps(result) + "\n")
    print_header("Training recipe: test Dice over seeds")
    print(table(load_results(args.results)))


if __name__ == "__main__":
    main()
