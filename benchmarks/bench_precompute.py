"""Precompute vs the three-forward limit, this checkout beside an older one, in one run.

Trains a small team once (``--team-model``, ``--team-epochs`` of L_Seg each, seeds 0-2) on
``--count`` synthetic images at ``--size``², then, round by round, alternates the trees
(``--before`` and this checkout): each round starts a fresh process per tree that prepares
the same synthetic dataset with that tree's own code, and times in it

- the three-forward limit (the team alone over the train split, precompute's batches),
- a forced ``plc precompute`` (the tree's ``stages.precompute.stage.run``),
- one instrumented precompute, broken down by that tree's own ``_precompute_bench`` probes.

It prints medians over the rounds side by side (limit ÷ total, ms per image beyond the
forwards, SC share) and the breakdown of each tree's last round. Example (issue 7)::

    git archive <old-commit> | tar -x -C /tmp/before
    python benchmarks/bench_precompute.py --before /tmp/before --size 224 --count 160 \\
        --team-model unet-small --team-epochs 1 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
ROLES = ("teacher", "assistant_fp", "assistant_bd")


def train_team(root: Path, size: int, count: int, model: str, epochs: int, batch: int) -> None:
    """Prepare once here and train three nets; checkpoints go to ``root/<role>.pt``."""
    sys.path[:0] = [str(ROOT), str(HERE)]
    from _epoch_setup import build_fixture

    build_fixture(root / "train", size, count, model, epochs, batch)
    for role in ROLES:
        (root / "train" / f"{role}.pt").rename(root / f"{role}.pt")


def random_team(root: Path, size: int, count: int, model: str, quantiles: list[float]) -> None:
    """Seeded random nets whose heads are scaled and shifted so that each predicts
    foreground on the top ``1 - q`` of its margin over the train images (eval mode): a team
    with spatially varied mistakes in every image, without training (an SC stress case)."""
    sys.path[:0] = [str(ROOT), str(HERE), str(ROOT / "tests" / "stages")]
    import torch
    from precompute_inputs import _images, _sharpen

    from pipeline.checkpoint import save_checkpoint
    from pipeline.models.registry import build_model
    from stages.prepare.config import PrepareConfig
    from stages.prepare.stage import run as prepare

    data = prepare(
        PrepareConfig(dataset="synthetic", out=root / "team.zarr", size=size, count=count,
                      progress=False)
    )  # fmt: skip
    images = _images(data)
    for i, role in enumerate(ROLES):
        torch.manual_seed(100 + i)
        net = build_model(model, 2, size).eval()
        _sharpen(net, images, quantiles[i])
        save_checkpoint(root / f"{role}.pt", net, model_name=model, num_classes=2,
                        img_size=size, config={"bench": "random-sharpened", "q": quantiles[i]})  # fmt: skip


def _prepare(tree_out: Path, size: int, count: int) -> Path:
    """The synthetic store at ``tree_out`` made by the imported tree's ``prepare``."""
    from stages.prepare.stage import run as prepare

    try:  # after the "CLI built from config fields" change
        from stages.prepare.config import PrepareConfig
    except ImportError:
        from stages.prepare.stage import PrepareConfig
    if not tree_out.exists():
        prepare(
            PrepareConfig(dataset="synthetic", out=tree_out, size=size, count=count, progress=False)
        )
    return tree_out


def _data_digest(data: Path) -> str:
    import hashlib

    import numpy as np

    from stages.data import load_split, open_store

    train = load_split(open_store(data), "train")
    digest = hashlib.sha256(np.asarray(train.images).tobytes())
    digest.update(np.asarray(train.masks).tobytes())
    return digest.hexdigest()[:12]


def worker(args: argparse.Namespace) -> None:
    """Inside one tree: time the limit, precompute and one instrumented precompute; JSON out."""
    tree = Path(args.tree).resolve()
    sys.path[:0] = [str(tree), str(tree / "benchmarks")]
    # the editable install's finder maps the packages to this checkout: use the tree's own
    sys.meta_path = [f for f in sys.meta_path if "__editable__" not in getattr(f, "__module__", "")]
    logging.basicConfig(level=logging.WARNING)
    import _precompute_bench as pb
    from _common import set_threads, time_it
    from _epoch_setup import Fixture, precompute_config

    from stages.precompute.stage import run as precompute

    set_threads(args.threads)
    work = Path(args.workdir)
    data = _prepare(work / f"data-{args.label}.zarr", args.size, args.count)
    fixture = Fixture(data=data, nets={r: work / f"{r}.pt" for r in ROLES})
    cfg = precompute_config(fixture, work / f"labels-{args.label}.zarr", args.batch, "auto")
    for _ in range(args.warmup):
        precompute(cfg)
    totals, limits = [], []
    for _ in range(args.pairs):  # alternated: the host's speed drifts by tens of % per minute
        totals.append(time_it(lambda: precompute(cfg), 1, 0).median)
        limits.append(pb.three_forward_limit(fixture, args.batch, 1).median)
    with pb.instrument(pb.precompute_targets()) as probes:
        whole = time_it(lambda: precompute(cfg), 1, 0).median
    parts = {name: [p.seconds, p.calls] for name, p in probes.items()}
    print(
        "RESULT "
        + json.dumps(
            {
                "totals": totals,
                "limits": limits,
                "whole": whole,
                "parts": parts,
                "table": pb.breakdown_table(probes, whole),
                "data": _data_digest(data),
                "code": str(Path(sys.modules["stages.precompute.stage"].__file__).parent.parent),
            }
        )
    )


def _run_tree(label: str, tree: Path, work: Path, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--tree", str(tree),
           "--label", label, "--workdir", str(work), "--size", str(args.size),
           "--count", str(args.count), "--batch", str(args.batch),
           "--warmup", str(args.warmup), "--pairs", str(args.pairs)]  # fmt: skip
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=tree, check=False)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
    if done.returncode or not lines:
        raise SystemExit(f"{label} run failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


def _sc_share(result: dict) -> float:
    sc = [v[0] for k, v in result["parts"].items() if k.startswith("SC (")]
    return sum(sc) / result["whole"]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--before", type=Path, help="root of the older tree (git archive of it)")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--count", type=int, default=160, help="synthetic images (80 %% train)")
    p.add_argument("--team-model", default="unet-small")
    p.add_argument("--team-epochs", type=int, default=1)
    p.add_argument(
        "--random-team",
        type=float,
        nargs=3,
        metavar="Q",
        help="no training: random nets sharpened to predict foreground above these margin "
        "quantiles (teacher, TA_f, TA_b), e.g. 0.9 0.86 0.88",
    )
    p.add_argument("--batch", type=int, default=16, help="precompute batch size")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--warmup", type=int, default=0, help="untimed precomputes per process")
    p.add_argument(
        "--pairs", type=int, default=3,
        help="precompute and limit timings per process, alternated (ratio per adjacent pair)",
    )  # fmt: skip
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--workdir", type=Path, default=None)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--tree", help=argparse.SUPPRESS)
    p.add_argument("--label", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(args)
        return
    with tempfile.TemporaryDirectory(prefix="bench_precompute_") as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        if not all((work / f"{r}.pt").exists() for r in ROLES):
            if args.random_team:
                random_team(work, args.size, args.count, args.team_model, args.random_team)
            else:
                train_team(work, args.size, args.count, args.team_model, args.team_epochs, 16)
        trees = {"after": ROOT} | ({"before": args.before} if args.before else {})
        results: dict[str, list[dict]] = {k: [] for k in trees}
        for _ in range(args.rounds):
            for label in sorted(trees):  # "after" then "before", alternating every round
                results[label].append(_run_tree(label, Path(trees[label]), work, args))
        report(results, args)


def report(results: dict[str, list[dict]], args: argparse.Namespace) -> None:
    sys.path[:0] = [str(HERE)]
    from _common import fmt_seconds, machine_lines, markdown_table

    n_train = round(args.count * 0.8)
    print("\n".join(machine_lines()))
    print(
        f"\n### Precompute, {n_train} train images at {args.size}², `{args.team_model}` team, "
        f"batch {args.batch}, {args.rounds} rounds (trees alternated) × {args.pairs} "
        "precompute/limit pairs per process (alternated); medians over all of them\n"
    )
    labels = [k for k in ("before", "after") if k in results]
    rows = []
    med = {k: {m: statistics.median(v for r in results[k] for v in r[f"{m}s"])
               for m in ("total", "limit")} for k in labels}  # fmt: skip
    pair_ratios = {k: [lim / tot for r in results[k] for tot, lim in zip(r["totals"], r["limits"],
                                                                          strict=True)]
                   for k in labels}  # fmt: skip
    for name, key in (("precompute total", "total"), ("three-forward limit", "limit")):
        rows.append([name, *(fmt_seconds(med[k][key]) for k in labels)])
    rows.append(["**limit ÷ total** (target ≥ 80 %)",
                 *(f"**{med[k]['limit'] / med[k]['total']:.0%}**" for k in labels)])  # fmt: skip
    rows.append(["limit ÷ total per pair: median (min–max)",
                 *(f"{statistics.median(pair_ratios[k]):.0%} ({min(pair_ratios[k]):.0%}–"
                   f"{max(pair_ratios[k]):.0%})" for k in labels)])  # fmt: skip
    rows.append(["beyond the forwards, per image (target ≤ 28 ms)",
                 *(f"{1000 * (med[k]['total'] - med[k]['limit']) / n_train:.0f} ms"
                   for k in labels)])  # fmt: skip
    rows.append(["SC share of precompute (target ≤ 10 %)",
                 *(f"{statistics.median(_sc_share(r) for r in results[k]):.1%}" for k in labels)])  # fmt: skip
    rows.append(["train data digest", *(results[k][-1]["data"] for k in labels)])
    rows.append(["code", *(results[k][-1]["code"] for k in labels)])
    print(markdown_table(["", *labels], rows))
    if len(labels) == 2:
        ratio = med["before"]["total"] / med["after"]["total"]
        print(f"\nbefore ÷ after (precompute total): **{ratio:.2f}×**")
    for k in labels:
        print(f"\nBreakdown, {k} (last round, one instrumented run):\n")
        print(results[k][-1]["table"])


if __name__ == "__main__":
    main()
