"""The tables of ``plc report`` (Markdown lines) over :class:`stages.report.stage.Run` records.

The statistics are :mod:`stages.report.stats`; which runs are paired, and the order of the
sections, is :func:`stages.report.stage.run`.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import TYPE_CHECKING

from pipeline.kd_table import BY_NAME as LOSSES
from pipeline.kd_table import FAMILIES
from pipeline.metrics import mean_std
from pipeline.variants import NO_KD
from stages.report import stats as rs
from stages.report.runs import BOUNDARY, LOSS_ROWS, METRICS, ROWS, VANILLA, families

if TYPE_CHECKING:
    from stages.report.runs import Run


def _fmt(values: list[float], scale: float) -> str:
    mean, std = mean_std(values)
    return "–" if math.isnan(mean) else f"{scale * mean:.2f} ± {scale * std:.2f}"


def _by(runs: list[Run], metric: str) -> dict[tuple, float]:
    return {r.key: r.scores[metric] for r in runs if metric in r.scores}


def _images(runs: list[Run], metric: str) -> dict[tuple, dict[str, float]]:
    return {r.key: {i: s[metric] for i, s in r.per_image.items() if metric in s} for r in runs}


def gap_lines(teachers: list[Run], alone: list[Run], n_boot: int) -> list[str]:
    """The teacher-minus-student-alone gap (paired per fold), with a plain verdict."""
    if not teachers or not alone:
        return ["No teacher metrics or no student-alone runs: the teacher–student gap is unknown."]
    t_by_fold = {t.fold: t for t in teachers}
    alone_by_fold: dict = {}
    for r in alone:
        alone_by_fold.setdefault(r.fold, []).append(r.scores["dice"])
    folds = sorted((f for f in t_by_fold if f in alone_by_fold), key=str)
    gaps = [
        t_by_fold[f].scores["dice"] - sum(alone_by_fold[f]) / len(alone_by_fold[f]) for f in folds
    ]
    t_iv = rs.t_interval(gaps)
    boot = rs.image_bootstrap(
        {r.key: {i: s["dice"] for i, s in t_by_fold[r.fold].per_image.items()}
         for r in alone if r.fold in t_by_fold},
        _images(alone, "dice"), n_boot,
    )  # fmt: skip
    lines = [
        f"Teacher − student alone, Dice points, paired per fold over {len(folds)} fold(s): "
        f"**{t_iv.fmt()}** (t over folds); image-level bootstrap {boot.fmt()}.",
        "",
    ]
    if math.isnan(t_iv.mean) or t_iv.mean <= 0:
        lines.append("**The teacher does not beat the student alone: KD has nothing to transfer.**")
    elif not (t_iv.excludes_zero() or boot.excludes_zero()):
        lines.append("The teacher's edge over the student alone is not distinguishable from zero.")
    else:
        lines.append(f"The teacher beats the student alone by {100 * t_iv.mean:.2f} Dice points.")
    return lines


def results_lines(groups: dict[str, list[Run]], teachers: list[Run]) -> list[str]:
    cols = [*METRICS, *BOUNDARY]
    lines = [
        "| Method | " + " | ".join(c[1] for c in cols) + " | runs |",
        "|---|" + "---|" * (len(cols) + 1),
    ]
    if teachers:
        model = teachers[0].config["model"]
        cells = " | ".join(
            _fmt([t.scores.get(k, math.nan) for t in teachers], s) for k, _, s in cols
        )
        lines.append(f"| Teacher T ({model}) | {cells} | {len(teachers)} |")
    for variant, label in ROWS:
        if variant in groups:
            g = groups[variant]
            cells = " | ".join(_fmt([r.scores.get(k, math.nan) for r in g], s) for k, _, s in cols)
            lines.append(f"| {label} | {cells} | {len(g)} |")
    return lines


def per_class_lines(
    groups: dict[str, list[Run]], teachers: list[Run], names: list[str] | None
) -> list[str]:
    """Dice (%) of each foreground class per method, mean ± std (C > 2 only).

    With two classes the results table already is that class's Dice. ``names`` are the
    class names (index = class id, e.g. the label store's), else ``class <c>``.
    """
    keys = {k for g in groups.values() for r in g for k in r.scores}
    ids = sorted(int(k[10:]) for k in keys if k.startswith("dice_class") and k[10:].isdigit())
    if len(ids) < 2:
        return []
    heads = [names[c] if names and c < len(names) else f"class {c}" for c in ids]
    lines = [
        "| Method | " + " | ".join(f"{h} Dice (%)" for h in heads) + " | runs |",
        "|---|" + "---|" * (len(ids) + 1),
    ]
    members = [(f"Teacher T ({teachers[0].config['model']})", teachers)] if teachers else []
    members += [(label, groups[v]) for v, label in ROWS if v in groups]
    for label, g in members:
        cells = " | ".join(_fmt([r.scores.get(f"dice_class{c}", math.nan) for r in g], 100.0)
                           for c in ids)  # fmt: skip
        lines.append(f"| {label} | {cells} | {len(g)} |")
    return lines


def paired(groups: dict[str, list[Run]], ref: str, n_boot: int) -> dict[str, tuple]:
    """Per variant: (t interval, bootstrap interval) of ΔDice vs ``ref`` over paired runs."""
    if ref not in groups:
        return {}
    base = groups[ref]
    return {
        v: (rs.paired_t(_by(g, "dice"), _by(base, "dice")),
            rs.image_bootstrap(_images(g, "dice"), _images(base, "dice"), n_boot))
        for v, g in groups.items() if v != ref
    }  # fmt: skip


def delta_lines(groups: dict[str, list[Run]], n_boot: int) -> tuple[list[str], dict]:
    vs_alone, vs_kd = paired(groups, NO_KD, n_boot), paired(groups, VANILLA, n_boot)
    lines = [
        "| Method | vs student alone: t [95 % CI] | bootstrap [95 % CI] | vs vanilla KD: t "
        "[95 % CI] | bootstrap [95 % CI] | pairs |",
        "|---|---|---|---|---|---|",
    ]
    for variant, label in ROWS[1:]:
        if variant not in groups:
            continue
        a, k = vs_alone.get(variant), vs_kd.get(variant)
        cells = [x.fmt() if x else "–" for pair in (a, k) for x in (pair or (None, None))]
        n = (a or k or (rs.Interval(0, 0, 0, 0),))[0].n
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {n} |")
    return lines, {"student alone": vs_alone, "vanilla KD": vs_kd}


def table1_lines(groups: dict[str, list[Run]], comparisons: dict) -> list[str]:
    """The paper's Table 1: vanilla KD, every other loss's rows that ran, and PLC-KD, with
    the families as tick columns, the four metrics and the paired ΔDice vs vanilla KD and vs
    the student alone (t intervals over the paired runs). Empty unless a loss other than KD
    ran."""
    losses = [(k, label) for k, label in LOSS_ROWS if k in groups]
    if not losses:
        return []
    named = dict(ROWS)
    keys = [(VANILLA, LOSSES["kd"].label)] if VANILLA in groups else []
    keys += losses
    keys += [("plc", named["plc"])] if "plc" in groups else []
    cols = [*METRICS, *BOUNDARY]
    lines = [
        "| Method | Response | Feature | Relation | " + " | ".join(c[1] for c in cols)
        + " | Δ vs KD [95 % CI] | Δ vs student alone [95 % CI] | runs |",
        "|---|:-:|:-:|:-:|" + "---|" * (len(cols) + 3),
    ]  # fmt: skip
    for key, label in keys:
        g = groups[key]
        fam = families(key)
        ticks = " | ".join("✓" if f in fam else "" for f in FAMILIES)
        cells = " | ".join(_fmt([r.scores.get(k, math.nan) for r in g], s) for k, _, s in cols)
        vs_kd = comparisons["vanilla KD"].get(key)
        vs_alone = comparisons["student alone"].get(key)
        lines.append(
            f"| {label} | {ticks} | {cells} | {vs_kd[0].fmt() if vs_kd else '–'} | "
            f"{vs_alone[0].fmt() if vs_alone else '–'} | {len(g)} |"
        )
    return lines


def verdict(groups: dict[str, list[Run]], comparisons: dict) -> list[str]:
    """One plain sentence on PLC-KD vs vanilla KD (whatever its sign)."""
    pair = comparisons["vanilla KD"].get("plc")
    if pair is None:
        return []
    t_iv, boot = pair
    if t_iv.excludes_zero() and t_iv.mean > 0:
        how = "beats vanilla KD"
    elif t_iv.excludes_zero():
        how = "is worse than vanilla KD"
    else:
        how = "is not distinguishable from vanilla KD"
    return [
        f"**PLC-KD {how}**: paired ΔDice {t_iv.fmt()} (t over {t_iv.n} runs), "
        f"image-level bootstrap {boot.fmt()}."
    ]


def slope_lines(groups: dict[str, list[Run]]) -> list[str]:
    """Per variant the median and max slope, then every run's slope (a collapsed table)."""
    lines = [
        "| Method | runs with a val curve | median slope | max slope | epochs |",
        "|---|---|---|---|---|",
    ]
    per_run = ["| run | fold | seed | slope | last val Dice (%) |", "|---|---|---|---|---|"]
    for variant, label in ROWS:
        g = [r for r in groups.get(variant, []) if len(r.val_dice) >= 2]
        if not g:
            continue
        slopes = sorted(100 * rs.tail_slope(r.val_dice) for r in g)
        lines.append(
            f"| {label} | {len(g)}/{len(groups[variant])} | {slopes[len(slopes) // 2]:+.3f} "
            f"| {max(slopes):+.3f} | {len(g[0].val_dice)} |"
        )
        per_run += [
            f"| {variant} | {r.fold} | {r.seed} | {100 * rs.tail_slope(r.val_dice):+.3f} "
            f"| {100 * r.val_dice[-1]:.2f} |"
            for r in sorted(g, key=lambda r: str(r.key))
        ]
    if len(per_run) == 2:
        return [*lines, "", "No run has val Dice per epoch in its curve.csv (--val-fraction)."]
    return [*lines, "", "<details><summary>every run</summary>", "", *per_run, "", "</details>"]


def sensitivity_lines(runs: list[Run]) -> list[str]:
    """λ × τ table of vanilla KD and PLC-KD Dice, if several settings exist.

    Every cell is a mean over the same (fold, seed) pairs: those that every setting has run
    (the grid usually runs on one fold and seed, the main setting on all), so the main
    setting's row is not an average over other folds. The student alone on those pairs is
    given beside the table.
    """
    kd = [r for r in runs if r.variant in (VANILLA, "plc")]
    settings = sorted({r.setting for r in kd})
    if len(settings) < 2:
        return []
    common = set.intersection(*({r.key for r in kd if r.setting == s} for s in settings))
    if not common:
        return [
            "The λ × τ settings share no (fold, seed) pair, so their Dice cannot be compared; "
            "run every setting on one common fold and seed."
        ]
    kd = [r for r in kd if r.key in common]
    alone = [r.scores["dice"] for r in runs if r.variant == NO_KD and r.key in common]
    folds = ", ".join(sorted({str(f) for f, _ in common}))
    seeds = ", ".join(sorted({str(s) for _, s in common}))
    taus = sorted({t for _, t in settings})
    lines = [
        f"Mean over the (fold, seed) pairs that every setting ran: fold(s) {folds}, seed(s) "
        f"{seeds} ({len(common)} pair(s)); the student alone on them: "
        f"{_fmt(alone, 100).split(' ±')[0] if alone else '–'} Dice. One fold: a sensitivity "
        "check, not a selection (nothing here is tuned on a test fold).",
        "",
        "| λ \\ τ | " + " | ".join(f"τ = {t:g}" for t in taus) + " |",
        "|---|" + "---|" * len(taus),
    ]
    for lam in sorted({lam for lam, _ in settings}):
        cells = []
        for tau in taus:
            vals = {
                v: [r.scores["dice"] for r in kd if r.setting == (lam, tau) and r.variant == v]
                for v in (VANILLA, "plc")
            }
            cells.append(
                " / ".join(
                    _fmt(vals[v], 100).split(" ±")[0] if vals[v] else "–" for v in (VANILLA, "plc")
                )
            )
        lines.append(f"| λ = {lam:g} | " + " | ".join(cells) + " |")
    return lines


def main_setting(runs: list[Run]) -> tuple[float, float]:
    """The (λ, τ) of most KD runs: the main table's setting (others go to the λ × τ table)."""
    kd = Counter(r.setting for r in runs if r.variant != NO_KD)
    return kd.most_common(1)[0][0] if kd else (math.nan, math.nan)
