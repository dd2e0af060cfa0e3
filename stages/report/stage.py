"""report stage: a paper-Table-2-style Markdown report over all runs, folds × seeds, paired.

Order of the report (the experiment design of DESIGN.md): the teacher–student-alone gap
first (no gap: nothing to transfer), then each variant and the controls (Dice, IoU, HD95,
ASSD; mean ± std over folds × seeds), the paired Δs vs the student alone and vs vanilla KD
(t interval over the paired runs, and an image-level paired bootstrap) with a forest plot,
each run's val-Dice slope over its last 20 % of epochs, label quality, and a λ × τ table when
such runs exist. Runs of one (fold, seed) must share their initial weights and batch order
(``stages.distill.pairing``); the report refuses to pair runs that do not.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

from pipeline.metrics import mean_std
from pipeline.variants import NO_KD, VARIANTS
from stages.report.config import ReportConfig
from stages.report.runs import ROWS, Run, digests, load_runs, load_teachers
from stages.report.tables import (
    delta_lines,
    gap_lines,
    main_setting,
    per_class_lines,
    results_lines,
    sensitivity_lines,
    slope_lines,
    table1_lines,
    verdict,
)

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------- team members


def weak_team(runs: list[dict], teacher: dict | None, labels: Path | None) -> list[str]:
    """One line per team member that does not beat the student alone on the same split.

    The teacher is compared on the test split (its metrics file vs the student alone's
    mean); with a label store, each member's train-split Dice from its training check
    (the checkpoints named in the store's provenance) is compared with the student alone's
    train-split Dice when its runs recorded one (not an assistant trained on FIG/BT images
    only: it never saw a real image, and its effect is the label-quality table), and a member
    kept with ``--allow-weak-teacher`` after failing the check is named.
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
        elif not check.get("real_images", True):
            continue  # trained on FIG/BT images only: its real-image Dice is not its job
        elif dice <= train_ref:
            lines.append(
                f"- {role} does not beat the student alone on the train split "
                f"({100 * dice:.2f} vs {100 * train_ref:.2f} Dice)."
            )
    return lines


def _member_checks(labels: Path | None) -> dict[str, dict]:
    """role -> the training check each team checkpoint recorded (none for older ones), with
    ``real_images``: False for an assistant trained on FIG/BT images only."""
    if labels is None:
        return {}
    from stages.report.labels import label_stores, team_checkpoints
    from stages.train.checks import saw_real_images

    names = {"teacher": "Teacher T", "assistant_fp": "TA_f", "assistant_bd": "TA_b"}
    out = {}
    for _, fold, role, meta in team_checkpoints(label_stores(labels)):
        check = (meta or {}).get("extra", {}).get("train_check")
        if check:  # none for older checkpoints, or one that moved or was replaced
            stage = meta.get("config", {}).get("stage", {})
            real = saw_real_images(stage.get("kind"), float(stage.get("fig_real_fraction", 0)))
            where = "" if fold is None else f" (fold {fold})"
            out[names.get(role, role) + where] = check | {"real_images": real}
    return out


def _weak_members(alone: list[Run], labels: Path | None) -> list[str]:
    """weak_team's lines for the assistants and failed checks (gap_lines covers T's test gap)."""
    rows = []
    for r in alone:
        row = {"config": {"variant": r.variant}, "dice": r.scores.get("dice", math.nan)}
        if r.train_check:
            row["train_check"] = r.train_check
        rows.append(row)
    lines = weak_team(rows, None, labels)
    return ["", "Team members that do not beat the student alone:", "", *lines] if lines else []


def _weak_students(runs: list[Run]) -> list[str]:
    """The student runs that failed their training check (kept with --allow-weak-teacher)."""
    lines = []
    for r in runs:
        check = r.train_check
        if check and not check.get("passed", True):
            fold = "" if r.fold is None else f"fold {r.fold}, "
            lines.append(
                f"- {r.variant} ({fold}seed {r.seed}): train-split Dice "
                f"{100 * check['train_dice']:.2f}, predicted {', '.join(check['predicted_classes'])}."
            )
    if not lines:
        return []
    head = "Student runs that failed the training check (kept with --allow-weak-teacher):"
    return ["", head, "", *lines]


# --------------------------------------------------------------------------- the report


def _header(runs: list[Run], setting: tuple[float, float]) -> list[str]:
    folds = sorted({r.fold for r in runs}, key=str)
    seeds = sorted({r.seed for r in runs})
    students = sorted({str(r.config.get("student")) for r in runs})
    epochs = sorted({str(r.config.get("epochs")) for r in runs})
    losses = ", ".join(dict.fromkeys(str(r.config.get("loss", "kd")) for r in runs))
    return [
        f"# PLC-KD report: {runs[0].config.get('dataset', '?')}",
        "",
        f"Student `{', '.join(students)}`, loss(es) `{losses}`, λ = {setting[0]:g}, "
        f"τ = {setting[1]:g}, {', '.join(epochs)} epochs (last-epoch checkpoints); test split "
        f"of each fold; folds {', '.join(map(str, folds))} × seeds {', '.join(map(str, seeds))}; "
        "mean ± std over folds × seeds. Paired differences compare runs of the same fold and "
        "seed (same initialisation and batch order, checked).",
    ]


def _teachers_from_labels(labels: Path, dataset: str | None) -> tuple[list[Run], list[str]]:
    """Without ``--teacher-metrics``: the teacher metrics beside the teacher checkpoint each
    label store's provenance names (``teacher.pt`` → ``teacher.metrics.json``), and one line
    saying where they came from, or that none was found."""
    from stages.report.labels import label_stores
    from storage_schema import open_label_store

    found: list[Run] = []
    missing: list[str] = []
    for store_path in label_stores(labels, dataset):
        prov = open_label_store(store_path).provenance
        recorded = prov.get("networks", {}).get("teacher", {}).get("path")
        if recorded is None:
            continue
        checkpoint = Path(recorded)
        metrics = checkpoint.with_name(checkpoint.stem + ".metrics.json")
        if not metrics.is_file():
            missing.append(str(metrics))
            continue
        for t in load_teachers(metrics):
            t.fold = prov.get("fold") if t.fold is None else t.fold
            found.append(t)
    if found:
        where = ", ".join(sorted({t.path for t in found}))
        note = (f"Teacher metrics: found beside the teacher checkpoint that the label store's "
                f"provenance names ({len(found)} file(s); {where}).")  # fmt: skip
    else:
        names = "; ".join(missing) if missing else "the label store names no teacher"
        note = (f"No teacher metrics found ({names}): no teacher row and no teacher − student "
                "gap; pass --teacher-metrics (a teacher.metrics.json or a folder of them).")  # fmt: skip
    return found, [note, ""]


def _calibration_section(stores: list[Path]) -> list[str]:
    from stages.report import labels as rl

    lines = rl.calibration_lines(stores)
    if not lines:
        return []
    return [
        "### Temperatures of the assistants for `plc_cal` (NLL per pixel)",
        "",
        *lines,
        "",
    ]


def run(cfg: ReportConfig) -> Path:
    from stages.distill.pairing import pairing_problems
    from stages.report.plot import forest_plot

    runs = load_runs(cfg.runs)
    problems = pairing_problems([{"config": r.config, **digests(r.config)} for r in runs])
    if problems:
        raise ValueError("runs cannot be paired: " + " ".join(problems))
    teachers = load_teachers(cfg.teacher_metrics)
    teacher_note: list[str] = []
    if cfg.teacher_metrics is None and cfg.labels is not None:
        teachers, teacher_note = _teachers_from_labels(cfg.labels, runs[0].config.get("dataset"))
    folds = {r.fold for r in runs}
    if any(t.fold is not None for t in teachers):  # only the folds that have student runs
        teachers = [t for t in teachers if t.fold is None or t.fold in folds]
    setting = main_setting(runs)
    main = [r for r in runs if r.variant == NO_KD or r.setting == setting]
    groups: dict[str, list[Run]] = {}
    for r in main:
        groups.setdefault(r.variant, []).append(r)
    deltas, comparisons = delta_lines(groups, cfg.bootstrap)
    forest = cfg.out.with_name(cfg.out.stem + "_forest.png")
    rows = [(v, label) for v, label in ROWS[1:] if v in groups]
    forest_plot(
        [label for _, label in rows],
        {name: [comp.get(v, (None,))[0] for v, _ in rows] for name, comp in comparisons.items()},
        forest,
    )
    lines = [
        *_header(runs, setting),
        "",
        "## Teacher vs student alone",
        "",
        *teacher_note,
        *gap_lines(teachers, groups.get(NO_KD, []), cfg.bootstrap),
        *_weak_members(groups.get(NO_KD, []), cfg.labels),
        *_weak_students(runs),
        "",
        "## Results",
        "",
        *results_lines(groups, teachers),
        "",
        "HD95 and ASSD in pixels (MONAI), over the images where both masks are non-empty or "
        "both empty (0).",
        "",
        *_per_class_section(groups, teachers, cfg.labels),
        *_table1_section(groups, comparisons),
        "## Paired ΔDice (points)",
        "",
        *verdict(groups, comparisons),
        "",
        *deltas,
        "",
        f"![paired differences]({forest.name})",
        "",
        "## Convergence: val-Dice slope over the last 20 % of epochs (points per epoch)",
        "",
        *slope_lines(groups),
    ]
    if sens := sensitivity_lines(runs):
        lines += ["", "## Sensitivity: Dice (%) vanilla KD / PLC-KD by λ and τ", "", *sens]
    if cfg.labels is not None:
        lines += ["", *_label_section(cfg, runs[0].config.get("dataset"))]
    cfg.out.parent.mkdir(parents=True, exist_ok=True)
    cfg.out.write_text("\n".join(lines) + "\n")
    logger.info("report → %s (%d runs)", cfg.out, len(runs))
    return cfg.out


def _table1_section(groups: dict[str, list[Run]], comparisons: dict) -> list[str]:
    lines = table1_lines(groups, comparisons)
    if not lines:
        return []
    return [
        "## Table 1: KD methods on the same students",
        "",
        "The families as the paper's tick columns: a feature or relation loss run with "
        '`--plus-kd` ("+ KD") also carries vanilla KD from the store, as every baseline of '
        "the paper's Table 1 and the reference scripts do; one without trains X + L_Seg "
        "alone. Δ: paired test-Dice points, t interval over the (fold, seed) pairs.",
        "",
        *lines,
        "",
    ]


def _per_class_section(
    groups: dict[str, list[Run]], teachers: list[Run], labels: Path | None
) -> list[str]:
    """ "Dice per class" (C > 2), headed by the label store's class names where given."""
    names = None
    if labels is not None:
        from stages.report.labels import label_stores
        from storage_schema import open_label_store

        names = list(open_label_store(label_stores(labels)[0]).classes)
    lines = per_class_lines(groups, teachers, names)
    return ["## Dice per class (test split)", "", *lines, ""] if lines else []


def _label_section(cfg: ReportConfig, dataset: str | None) -> list[str]:
    from stages.report import labels as rl
    from stages.report.plot import histogram_plot

    stores = rl.label_stores(cfg.labels, dataset)
    corrections = rl.sc_corrections(stores)
    hist = cfg.out.with_name(cfg.out.stem + "_sc_hist.png")
    labels = {v.name: v.label for v in VARIANTS}
    histogram_plot(
        {f"{labels[n]} -> {w}": getattr(c, f"to_{w}") for n, c in corrections.items()
         for w in ("lesion", "background")},
        hist,
    )  # fmt: skip
    return [
        f"## Label quality on the train split ({len(stores)} label store(s))",
        "",
        *rl.quality_lines(rl.quality(stores)),
        "",
        "### What the assistants trained on",
        "",
        *rl.team_lines(stores),
        "",
        "### Where SC took the vectors it copied",
        "",
        *rl.source_lines(rl.sc_sources(stores)),
        "",
        "### Foreground probability of the pixels SC corrected (% of them per bin)",
        "",
        *rl.correction_lines(corrections),
        "",
        f"![SC histogram]({hist.name})",
        "",
        *_calibration_section(stores),
        "### Margins and spatial coherence of each row's corrections",
        "",
        "Pixels whose argmax differs from the teacher's (the row corrected them: every row "
        "here is right there), the GT-class probability the row gives them (quantiles; "
        "resolution 0.001), the share of them with no corrected 4-neighbour, and the mean "
        "absolute difference of p_fg between neighbouring pixels over the whole map (T and "
        "the GT rows are the references).",
        "",
        *rl.coherence_lines(rl.coherence(stores)),
    ]
