"""The paper's Table 1 on real data: every KD loss of ``pipeline.kd_table`` on the same students.

    python benchmarks/table1.py --workdir studies/polyp-endotect-cpu \
        [--params params-corrections.yaml] [--folds 0,1,2,3,4] [--seeds 0,1] [--jobs 2] \
        [--methods none,kd,...] [--runs runs-table1] [--alone]

For every fold × seed it trains the student of the params file's ``distill`` section with
``plc distill`` on the fold's label store, once per method: the student alone (``none``),
vanilla KD (``kd``: KD on T's stored labels), the other stored losses on T's labels (cwd,
dkd, dist), every teacher loss (fitnet, at, emkd, pa, ifvd, cirkd, spkd) with ``--plus-kd``
(KD + X: the paper's Table 1 ticks "Response" on every baseline, and the reference scripts
add KD to each) — ``--alone`` trains X + L_Seg instead, in ``<method>-alone-s<seed>``
folders — and PLC-KD (KD on the ``plc`` labels). All runs of a (fold, seed) share the initial weights and the batch order (checked
by ``plc report``). A finished run is skipped, so a killed study resumes; each run's wall
time (the whole ``plc distill`` process, with ``--jobs`` processes side by side) is appended
to ``<runs>/timings.jsonl``. Then: ``plc report --runs <workdir>/<runs>`` and
``python benchmarks/table1.py ... --summary`` (the median wall time per method).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent)]

from pipeline.kd_table import KD_LOSSES, LIVE, get_loss  # noqa: E402

METHODS = ("none", *(x.name for x in KD_LOSSES), "plc")


def method_args(method: str, alone: bool) -> list[str]:
    """``plc distill`` flags of a Table-1 method."""
    if method == "none":
        return ["--variant", "none"]
    if method == "plc":
        return ["--variant", "plc", "--loss", "kd"]
    row = get_loss(method)
    extra = ["--plus-kd"] if row.reads == "teacher" and not alone else []
    return ["--variant", "teacher", "--loss", method, *extra]


def jobs(args: argparse.Namespace, params: dict) -> list[tuple[Path, list[str]]]:
    labels_dir = args.workdir / params.get("labels_dir", "labels")
    name = params.get("dataset_name", "polyp")
    out = []
    for fold in args.folds:
        for seed in args.seeds:
            for method in args.methods:
                alone = args.alone and method in LIVE  # its own run folder: X + L_Seg
                folder = f"{method}-alone" if alone else method
                run = args.workdir / args.runs / f"fold{fold}" / f"{folder}-s{seed}"
                cmd = [sys.executable, "-c", "from stages.cli import app; app(prog_name='plc')",
                       "distill", "--labels", str(labels_dir / f"{name}-fold{fold}.zarr"),
                       "--fold", str(fold), "--out", str(run), "--seed", str(seed),
                       "--params", f"{args.params}:distill", "--no-progress",
                       *method_args(method, args.alone)]  # fmt: skip
                out.append((run, cmd))
    return out


def run_one(job: tuple[Path, list[str]], log: Path) -> None:
    run, cmd = job
    if (run / "metrics.json").exists():
        return
    start = time.perf_counter()
    env = os.environ | {"PYTHONPATH": str(HERE.parent), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        print(f"FAILED {run}:\n{done.stderr[-2000:]}", flush=True)
        return
    record = {"run": str(run.relative_to(log.parent)), "seconds": round(seconds, 1)}
    with open(log, "a") as f:
        f.write(json.dumps(record) + "\n")
    print(f"{run.parent.name}/{run.name}: {seconds:.0f} s", flush=True)


def summary(args: argparse.Namespace) -> str:
    log = args.workdir / args.runs / "timings.jsonl"
    per: dict[str, list[float]] = {}
    for line in log.read_text().splitlines():
        r = json.loads(line)
        per.setdefault(Path(r["run"]).name.rsplit("-s", 1)[0], []).append(r["seconds"])
    lines = [
        "| method | runs | wall time per run, median (s) | ÷ vanilla KD |",
        "|---|---:|---:|---:|",
    ]
    base = statistics.median(per.get("kd", [float("nan")]))
    for m in [x for method in args.methods for x in (method, f"{method}-alone")]:
        if m in per:
            median = statistics.median(per[m])
            lines.append(f"| {m} | {len(per[m])} | {median:.1f} | {median / base:.2f} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workdir", type=Path, required=True)
    p.add_argument("--params", default="params-corrections.yaml")
    p.add_argument(
        "--folds", type=lambda s: [int(x) for x in s.split(",")], default=[0, 1, 2, 3, 4]
    )
    p.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=[0, 1])
    p.add_argument("--methods", type=lambda s: s.split(","), default=list(METHODS))
    p.add_argument("--runs", default="runs-table1")
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--alone", action="store_true", help="teacher losses without --plus-kd")
    p.add_argument("--summary", action="store_true", help="print the wall-time table only")
    args = p.parse_args()
    unknown = sorted(set(args.methods) - set(METHODS))
    if unknown:
        p.error(f"unknown methods {unknown}; choose from {', '.join(METHODS)}")
    if args.summary:
        print(summary(args))
        return
    params = yaml.safe_load(Path(args.params).read_text())
    log = args.workdir / args.runs / "timings.jsonl"
    log.parent.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(args.jobs) as pool:
        list(pool.map(lambda j: run_one(j, log), jobs(args, params)))
    print(summary(args))


if __name__ == "__main__":
    main()
