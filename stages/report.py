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
