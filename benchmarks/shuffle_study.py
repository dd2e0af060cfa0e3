"""Does the block-shuffled order cost the student anything? Paired runs, full vs block.

    python benchmarks/shuffle_study.py --workdir studies/polyp-endotect-cpu \
        [--params params-corrections.yaml] [--folds 0,1,2,3,4] [--seeds 0,1] \
        [--variants none,teacher] [--runs runs-shuffle]

For every fold × seed × variant it trains the student twice with ``plc distill`` on the
fold's label store (``<workdir>/<labels_dir>/<dataset>-fold<F>.zarr`` of the params file):
``--shuffle full`` and ``--shuffle block`` (defaults: blocks of 16 images, windows of 4
blocks), everything else from the params file's ``distill`` section. A finished run is
skipped (``plc distill`` finds it up to date), so a killed study resumes. Then it prints,
per variant and over all pairs, the mean paired test-Dice difference block − full with its
t interval, beside the seed-to-seed noise of the full order (|seed 0 − seed 1| of the same
fold and variant): the order is "within noise" when the interval covers 0 and its
half-width is of the size of that noise.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent)]

from stages.report.stats import t_interval  # noqa: E402

ORDERS = ("full", "block")


def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def run_jobs(args: argparse.Namespace, params: dict) -> None:
    labels_dir = args.workdir / params.get("labels_dir", "labels")
    name = params.get("dataset_name", "polyp")
    jobs = [(f, s, v, o) for f in args.folds for s in args.seeds for v in args.variants
            for o in ORDERS]  # fmt: skip
    for i, (fold, seed, variant, order) in enumerate(jobs, 1):
        out = args.workdir / args.runs / f"fold{fold}" / f"{variant}-s{seed}-{order}"
        if (out / "metrics.json").exists():
            continue
        cmd = [sys.executable, "-c", "from stages.cli import app; app(prog_name='plc')",
               "distill", "--labels", str(labels_dir / f"{name}-fold{fold}.zarr"),
               "--fold", str(fold), "--out", str(out), "--variant", variant, "--seed", str(seed),
               "--params", f"{args.params}:distill", "--shuffle", order, "--no-progress"]  # fmt: skip
        start = time.perf_counter()
        subprocess.run(cmd, check=True, env=os.environ | {"PYTHONPATH": str(HERE.parent)})
        print(f"[{i}/{len(jobs)}] {out.name} fold {fold}: {time.perf_counter() - start:.0f} s",
              flush=True)  # fmt: skip


def dice(args: argparse.Namespace) -> dict[tuple[int, int, str, str], float]:
    found = {}
    for path in (args.workdir / args.runs).glob("fold*/*/metrics.json"):
        cfg = json.loads(path.read_text())
        c = cfg["config"]
        found[(c["fold"], c["seed"], c["variant"], c.get("shuffle", "full"))] = 100 * cfg["dice"]
    return found


def table(args: argparse.Namespace) -> str:
    scores = dice(args)
    lines = ["| variant | pairs | block − full, mean Δ Dice [95 % t interval] | "
             "seed-to-seed noise, full order: mean |s0 − s1| |", "| --- | ---: | --- | ---: |"]  # fmt: skip
    groups = [(v, [v]) for v in args.variants] + [("all", list(args.variants))]
    for label, variants in groups:
        diffs, noise = [], []
        for v in variants:
            for f in args.folds:
                for s in args.seeds:
                    if (f, s, v, "block") in scores and (f, s, v, "full") in scores:
                        diffs.append(scores[(f, s, v, "block")] - scores[(f, s, v, "full")])
                pair = [scores.get((f, s, v, "full")) for s in args.seeds[:2]]
                if len(pair) == 2 and None not in pair:
                    noise.append(abs(pair[0] - pair[1]))
        iv = t_interval(diffs)
        mean_noise = sum(noise) / len(noise) if noise else float("nan")
        lines.append(f"| {label} | {iv.n} | {iv.mean:+.2f} [{iv.low:+.2f}, {iv.high:+.2f}] | "
                     f"{mean_noise:.2f} |")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--params", type=Path, default=HERE.parent / "params-corrections.yaml")
    parser.add_argument("--folds", type=ints, default=[0, 1, 2, 3, 4])
    parser.add_argument("--seeds", type=ints, default=[0, 1])
    parser.add_argument("--variants", type=lambda t: t.split(","), default=["none", "teacher"])
    parser.add_argument("--runs", default="runs-shuffle")
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    params = yaml.safe_load(args.params.read_text())
    if not args.report_only:
        run_jobs(args, params)
    print(table(args))


if __name__ == "__main__":
    main()
