"""The premise sweep (issue 17): where does vanilla KD beat the student alone?

    python benchmarks/kd_regimes.py --params params-study.yaml            # the sweep (resumable)
    python benchmarks/kd_regimes.py --params params-study.yaml --dry-run  # tiny, same code path

On one fold of a study (its team and label store, trained by ``benchmarks/study.py --part
team``), every cell of the params' ``regimes`` section trains the student alone (``none``) and
vanilla KD (``teacher``) for each seed: a cell is a student width, a step budget, a share of
the train split (``--train-fraction``) and a temperature τ. Each run is a ``plc distill`` call
(the tested code); a rerun skips what is done. After every run the report
(``reports/kd-regimes.md``) is rewritten with every cell, none dropped: test-fold Dice of both
arms, the paired Δ per seed, and the Δ on fold 0's *val* images (the teacher's held-out train
images: cells are chosen on val, never on the test fold). A run whose student fails the
training check (one class everywhere, or train Dice below the floor) or scores below 5 test
Dice is marked collapsed and left out of the means, never averaged.
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from study import ROOT, Study, build, load_params, machine

logger = logging.getLogger("kd_regimes")
ARMS = ("none", "teacher")
COLLAPSE_DICE = 0.05


@dataclass(frozen=True)
class Cell:
    """One regime: student, steps, train fraction, τ."""

    student: str
    steps: int
    fraction: float
    tau: float

    def name(self) -> str:
        return f"{self.student}-st{self.steps}-f{self.fraction:g}-t{self.tau:g}"


def cells(section: dict) -> list[Cell]:
    """The cells of a ``regimes`` section: each group's grid, deduplicated, in order."""
    out: list[Cell] = []
    for group in section["groups"]:
        for student in group["students"]:
            for steps in group["steps"]:
                for fraction in group.get("fractions", [1.0]):
                    for tau in group.get("taus", [1.0]):
                        out.append(Cell(student, int(steps), float(fraction), float(tau)))
    return list(dict.fromkeys(out))


def run_dir(study: Study, fold: int, cell: Cell, arm: str, seed: int) -> Path:
    """The run's folder; the student alone has no KD term, so τ does not change it: a τ cell
    shares the alone runs of its τ = 1 cell."""
    if arm == "none" and cell.tau != 1.0:
        cell = Cell(cell.student, cell.steps, cell.fraction, 1.0)
    return study.root / "regimes" / f"fold{fold}" / cell.name() / f"{arm}-s{seed}"


def distill(study: Study, fold: int, cell: Cell, arm: str, seed: int) -> Path:
    """One ``plc distill`` run of the cell (a no-op when its output is current)."""
    from stages.distill import stage
    from stages.distill.config import DistillConfig

    section = dict(study.p["distill"])
    per_epoch = int(section.get("steps_per_epoch", 20))
    if cell.steps % per_epoch:
        raise ValueError(f"steps {cell.steps} is not a multiple of steps_per_epoch {per_epoch}")
    tau = 1.0 if arm == "none" else cell.tau  # (τ moves nothing without a KD term)
    section.update(epochs=cell.steps // per_epoch, student=cell.student, tau=tau)
    out = run_dir(study, fold, cell, arm, seed)
    cfg = build(DistillConfig, section, labels=study.labels(fold), out=out, data=study.data,
                fold=fold, variant=arm, seed=seed, train_fraction=cell.fraction,
                progress=False)  # fmt: skip
    study.timed("distill (regimes)", f"{cell.name()}/{arm}-s{seed}", out / "metrics.json",
                stage.run, cfg)  # fmt: skip
    return out


def read_run(out: Path) -> dict | None:
    """Test Dice, last val Dice, train check and wall time of a finished run."""
    metrics_path = out / "metrics.json"
    if not metrics_path.exists():
        return None
    metrics = json.loads(metrics_path.read_text())
    val = None
    curve = out / "curve.csv"
    if curve.exists():
        rows = list(csv.DictReader(curve.open()))
        if rows and rows[-1].get("val_dice") not in (None, ""):
            val = float(rows[-1]["val_dice"])
    check = metrics.get("train_check", {})
    collapsed = not check.get("passed", True) or metrics["dice"] < COLLAPSE_DICE
    wall = out / "wall.json"
    seconds = json.loads(wall.read_text())["seconds"] if wall.exists() else None
    return {"dice": metrics["dice"], "val": val, "collapsed": collapsed, "seconds": seconds}


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def _fmt(x: float | None, sign: bool = False) -> str:
    if x is None:
        return "–"
    return f"{100 * x:+.2f}" if sign else f"{100 * x:.2f}"


def write_report(study: Study, fold: int, plan: list[Cell], seeds: list[int], path: Path,
                 wall: dict[str, float]) -> Path:  # fmt: skip
    """Every cell: both arms per seed, paired Δ (test and val), collapsed runs marked."""
    lines = [
        "# Where does vanilla KD help? The premise sweep (issue 17)",
        "",
        f"Study `{study.name}` fold {fold} (its `{study.p['team']['model']}` team and label store), seeds "
        f"{', '.join(map(str, seeds))}; each cell trains the student alone (`none`) and vanilla "
        "KD (`teacher`, λ = 1) with the same initialisation and batches (paired). Dice in points "
        "on the fold's test images; **val Δ** is the same difference on the teacher's held-out "
        "train images (the last epoch's val Dice), the number cells are chosen on. A run marked "
        "*collapsed* (training check failed, or test Dice < 5) is left out of the means.",
        "",
        "| cell | student | steps | train share | τ | seed | alone | KD | Δ test | Δ val "
        "| wall (s) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    summary = []
    for cell in plan:
        d_test, d_val = [], []
        for seed in seeds:
            runs = {a: read_run(run_dir(study, fold, cell, a, seed)) for a in ARMS}
            alone, kd = runs["none"], runs["teacher"]
            secs = sum(r["seconds"] or 0.0 for r in runs.values() if r is not None)
            cols = []
            for r in (alone, kd):
                cols.append(
                    "–"
                    if r is None
                    else _fmt(r["dice"]) + (" (collapsed)" if r["collapsed"] else "")
                )
            dt = dv = None
            if alone and kd and not (alone["collapsed"] or kd["collapsed"]):
                dt = kd["dice"] - alone["dice"]
                d_test.append(dt)
                if alone["val"] is not None and kd["val"] is not None:
                    dv = kd["val"] - alone["val"]
                    d_val.append(dv)
            lines.append(
                f"| {cell.name()} | {cell.student} | {cell.steps} | {cell.fraction:g} "
                f"| {cell.tau:g} | {seed} | {cols[0]} | {cols[1]} | {_fmt(dt, True)} "
                f"| {_fmt(dv, True)} | {secs:.0f} |"
            )
        summary.append((cell, _mean(d_test), _mean(d_val), len(d_test)))
    lines += [
        "",
        "## Mean paired Δ per cell (KD − alone, points; collapsed runs left out)",
        "",
        "| cell | pairs | mean Δ test | mean Δ val |",
        "|---|---|---|---|",
    ]
    for cell, mt, mv, n in summary:
        lines.append(f"| {cell.name()} | {n} | {_fmt(mt, True)} | {_fmt(mv, True)} |")
    best = [s for s in summary if s[2] is not None and s[3] == len(seeds)]
    lines.append("")
    if best:
        top = max(best, key=lambda s: s[2])
        lines.append(
            f"Largest mean val Δ: **{top[0].name()}** ({_fmt(top[2], True)} val, "
            f"{_fmt(top[1], True)} test, {top[3]} pairs)."
        )
        plus2 = [s for s in best if s[1] is not None and s[1] >= 0.02]
        if not plus2:
            lines.append("**No cell shows vanilla KD ≥ +2 Dice over the student alone on test.**")
    dirs = {run_dir(study, fold, c, a, s) for c in plan for a in ARMS for s in seeds}
    done = [r for r in map(read_run, dirs) if r is not None and r["seconds"] is not None]
    total = sum(r["seconds"] for r in done)
    lines += [
        "",
        "## Machine and wall time",
        "",
        f"{machine()}; `python benchmarks/kd_regimes.py --params {study.p.get('_params', '?')}`;"
        f" last written {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. {len(done)} runs,"
        f" {total / 60:.1f} min of distill calls in all (each run's wall.json; this invocation"
        f" computed {len(wall)}). Byte-identical results are expected on this machine only.",
    ]
    if note := study.p["regimes"].get("run_note"):
        lines += ["", note.strip()]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", type=Path, required=True, help="Study params YAML.")
    parser.add_argument("--dry-run", action="store_true", help="Apply the params' dry_run section.")
    parser.add_argument("--workdir", type=Path, help="Default studies/<name>.")
    parser.add_argument("--report", type=Path, help="Default reports/kd-regimes.md.")
    parser.add_argument(
        "--shard", default=None, metavar="I/N",
        help="Run only every N-th grid cell from the I-th (0-based): N processes share the "
        "cores; the τ cells run in a final invocation without --shard, once the grid is done.",
    )  # fmt: skip
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    params = load_params(args.params, args.dry_run)
    params["_params"] = str(args.params)
    section = params["regimes"]
    fold = int(section.get("fold", 0))
    seeds = [int(s) for s in section["seeds"]]
    study = Study(copy.deepcopy(params), args.workdir, args.report)
    report = args.report or ROOT / "reports" / (
        "kd-regimes-dry-run.md" if args.dry_run else "kd-regimes.md"
    )
    if not study.labels(fold).exists():  # the team and label store of the fold
        if study._raw_data_here():
            study.prepare()
        study.train_team(fold)
        study.precompute(fold)
    plan = cells(section)
    mine = plan
    if args.shard:
        i, n = (int(x) for x in args.shard.split("/"))
        mine = plan[i::n]
    wall: dict[str, float] = {}
    n_grid = len(plan)
    for cell in mine:  # without --shard, grows by the τ cells once the grid is done
        for seed in seeds:
            for arm in ARMS:
                out = run_dir(study, fold, cell, arm, seed)
                if (out / "metrics.json").exists():
                    continue
                start = time.perf_counter()
                distill(study, fold, cell, arm, seed)
                seconds = time.perf_counter() - start
                (out / "wall.json").write_text(json.dumps({"seconds": seconds}))
                wall[f"{cell.name()}/{arm}-s{seed}"] = seconds
            write_report(study, fold, plan, seeds, report, wall)
        if not args.shard and cell is plan[-1] and len(plan) == n_grid:  # τ at the best cell
            plan += tau_cells(study, fold, plan, seeds, section.get("best_cell_taus", []))
    print(write_report(study, fold, plan, seeds, report, wall))
    best = best_cell(study, fold, plan, seeds)  # the grid and the τ cells at its best cell
    if best is not None and not args.shard:
        (report.with_suffix(".best.json")).write_text(json.dumps(best, indent=1) + "\n")
    return 0


def best_cell(study: Study, fold: int, grid: list[Cell], seeds: list[int]) -> dict | None:
    """The cell with the largest mean paired val Δ (every seed present, none collapsed): the
    rule that picks the comparison's cell, fixed before the sweep ran. Over the grid it also
    picks where the other τ values run; over the grid and those τ cells it picks the cell of
    the correction comparison (``<report>.best.json``)."""
    scored = []
    for cell in grid:
        deltas = []
        for seed in seeds:
            alone, kd = (read_run(run_dir(study, fold, cell, a, seed)) for a in ARMS)
            paired = alone and kd and not (alone["collapsed"] or kd["collapsed"])
            if paired and alone["val"] is not None and kd["val"] is not None:
                deltas.append(kd["val"] - alone["val"])
        if len(deltas) == len(seeds):
            scored.append((sum(deltas) / len(deltas), cell))
    if not scored:
        return None
    delta, cell = max(scored, key=lambda s: s[0])
    return {"student": cell.student, "steps": cell.steps, "train_fraction": cell.fraction,
            "tau": cell.tau, "mean_val_delta": delta, "cells_scored": len(scored)}  # fmt: skip


def tau_cells(study: Study, fold: int, plan: list[Cell], seeds: list[int],
              taus: list[float]) -> list[Cell]:  # fmt: skip
    """The best grid cell (:func:`best_cell`) at each other τ of ``taus``."""
    best = best_cell(study, fold, plan, seeds)
    if best is None:
        return []
    logger.info("best cell by val Δ: %s; adding τ %s", best, taus)
    extra = [Cell(best["student"], best["steps"], best["train_fraction"], float(t)) for t in taus]
    return [c for c in extra if c not in plan]


if __name__ == "__main__":
    sys.exit(main())
