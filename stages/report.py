"""report stage: a paper-Table-2-style Markdown table over all runs, plus label quality."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

from pipeline.metrics import mean_std
from pipeline.variants import NO_KD, NO_KD_LABEL, VARIANTS
from stages.configs import ReportConfig

logger = logging.getLogger(__name__)

# (variant, row label in the paper's notation), from the variant table
ROWS = ((NO_KD, NO_KD_LABEL), *((v.name, v.label) for v in VARIANTS))
# two-sided 95 % Student-t quantiles by degrees of freedom (1..30); normal beyond
_T95 = (
    12.706,
    4.303,
    3.182,
    2.776,
    2.571,
    2.447,
    2.365,
    2.306,
    2.262,
    2.228,
    2.201,
    2.179,
    2.160,
    2.145,
    2.131,
    2.120,
    2.110,
    2.101,
    2.093,
    2.086,
    2.080,
    2.074,
    2.069,
    2.064,
    2.060,
    2.056,
    2.052,
    2.048,
    2.045,
    2.042,
)


def load_runs(runs: Path) -> list[dict]:
    """Every ``metrics.json`` under ``runs`` (one per student run)."""
    found = sorted(Path(runs).glob("**/metrics.json"))
    if not found:
        raise FileNotFoundError(
            f"no metrics.json under {runs}: run `plc distill ... --out {runs}/<exp>` first."
        )
    return [json.loads(p.read_text()) | {"_path": str(p.parent)} for p in found]


def paired_delta(runs: list[dict], base: list[dict], key: str) -> str:
    """Mean paired difference (same seed) vs ``base`` with a 95 % t interval."""
    by_seed = {r["config"]["seed"]: r[key] for r in base}
    diffs = [r[key] - by_seed[r["config"]["seed"]] for r in runs if r["config"]["seed"] in by_seed]
    if not diffs:
        return "–"
    mean, std = mean_std(diffs)
    if len(diffs) < 2:
        return f"{100 * mean:+.2f}"
    half = (
        (_T95[len(diffs) - 2] if len(diffs) - 1 <= len(_T95) else 1.96)
        * std
        / math.sqrt(len(diffs))
    )
    return f"{100 * mean:+.2f} [{100 * (mean - half):+.2f}, {100 * (mean + half):+.2f}]"


def _fmt(values: list[float]) -> str:
    mean, std = mean_std(values)
    return f"{100 * mean:.2f} ± {100 * std:.2f}"


def results_table(runs: list[dict], teacher: dict | None) -> list[str]:
    groups: dict[str, list[dict]] = {}
    for r in runs:
        groups.setdefault(r["config"]["variant"], []).append(r)
    lines = [
        "| Method | Dice (%) | IoU (%) | seeds | ΔDice vs student alone, paired [95 % CI] |",
        "|---|---|---|---|---|",
    ]
    if teacher is not None:
        lines.append(
            f"| Teacher T ({teacher.get('model', 'teacher')}) | {100 * teacher['dice']:.2f} "
            f"| {100 * teacher['iou']:.2f} | 1 | – |"
        )
    for variant, label in ROWS:
        if variant not in groups:
            continue
        rs = groups[variant]
        delta = "–" if variant == NO_KD else paired_delta(rs, groups.get(NO_KD, []), "dice")
        lines.append(
            f"| {label} | {_fmt([r['dice'] for r in rs])} | {_fmt([r['iou'] for r in rs])} "
            f"| {len(rs)} | {delta} |"
        )
    return lines


def label_quality(labels: Path) -> list[str]:
    """Per-variant label quality from the store's per-image stats."""
    from storage_schema import open_label_store

    store = open_label_store(labels)
    pixels = store.size[0] * store.size[1]
    lines = [
        "| Variant | false pixels (% of pixels) | images with false pixels | label Dice vs GT (%) |",
        "|---|---|---|---|",
    ]
    for variant, label in ROWS[1:]:
        if variant not in store.variants:  # a store made before the row was added
            continue
        fp = store.stat(f"false_pixels_{variant}")
        dice = store.stat(f"dice_{variant}")
        lines.append(
            f"| {label} | {100 * fp.mean() / pixels:.3f} | {int((fp > 0).sum())}/{len(fp)} "
            f"| {100 * dice.mean():.2f} |"
        )
    return lines


def weak_team(runs: list[dict], teacher: dict | None, labels: Path | None) -> list[str]:
    """One line per team member that does not beat the student alone on the same split.

    The teacher is compared on the test split (its metrics file vs the student alone's
    mean); with a label store, each member's train-split Dice from its training check
    (the checkpoints named in the store's provenance) is compared with the student alone's
    train-split Dice when its runs recorded one, and a member kept with
    ``--allow-weak-teacher`` after failing the check is named.
    """
    alone = [r for r in runs if r["config"]["variant"] == NO_KD]
    lines = []
    alone_test = mean_std([r["dice"] for r in alone])[0] if alone else math.nan
    if teacher is not None and teacher["dice"] <= alone_test:
        lines.append(
            f"- Teacher T does not beat the student alone on the test split "
            f"({100 * teacher['dice']:.2f} vs {100 * alone_test:.2f} Dice): its soft labels "
            "are not expected to help; train it for more steps or at a larger image size."
        )
    alone_train = [r["train_check"]["train_dice"] for r in alone if "train_check" in r]
    train_ref = mean_std(alone_train)[0] if alone_train else math.nan
    for role, check in _member_checks(labels).items():
        dice = check.get("train_dice", math.nan)
        if not check.get("passed", True):
            lines.append(
                f"- {role} failed the training check (train-split Dice {100 * dice:.2f}) "
                "and was kept with --allow-weak-teacher."
            )
        elif dice <= train_ref:
            lines.append(
                f"- {role} does not beat the student alone on the train split "
                f"({100 * dice:.2f} vs {100 * train_ref:.2f} Dice)."
            )
    return lines


def _member_checks(labels: Path | None) -> dict[str, dict]:
    """role -> the training check each team checkpoint recorded (none for older ones)."""
    if labels is None:
        return {}
    from pipeline.checkpoint import load_checkpoint
    from storage_schema import open_label_store

    names = {"teacher": "Teacher T", "assistant_fp": "TA_f", "assistant_bd": "TA_b"}
    out = {}
    for role, net in open_label_store(labels).provenance.get("networks", {}).items():
        try:
            check = load_checkpoint(net["path"]).get("extra", {}).get("train_check")
        except (FileNotFoundError, ValueError):
            continue  # the checkpoint moved or was replaced: nothing to say about it
        if check:
            out[names.get(role, role)] = check
    return out


def run(cfg: ReportConfig) -> Path:
    runs = load_runs(cfg.runs)
    teacher = json.loads(Path(cfg.teacher_metrics).read_text()) if cfg.teacher_metrics else None
    first = runs[0]["config"]
    lines = [
        f"# PLC-KD report: {runs[0].get('dataset', '?')}",
        "",
        f"Student `{first['student']}`, loss `{first['loss']}`, λ = {first['lam']}, τ = {first['tau']}, "
        f"{first['epochs']} epochs; test split; mean ± std over seeds. Paired differences compare runs "
        "with the same seed (same initialisation and batch order).",
        "",
        *results_table(runs, teacher),
    ]
    weak = weak_team(runs, teacher, cfg.labels)
    if weak:
        lines += ["", "**Team members that do not beat the student alone**", "", *weak]
    if cfg.labels is not None:
        lines += [
            "",
            "## Label quality on the train split (from the label store)",
            "",
            *label_quality(cfg.labels),
        ]
    cfg.out.parent.mkdir(parents=True, exist_ok=True)
    cfg.out.write_text("\n".join(lines) + "\n")
    logger.info("report → %s (%d runs)", cfg.out, len(runs))
    return cfg.out
