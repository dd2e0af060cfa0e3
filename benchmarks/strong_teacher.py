"""What a stronger teacher changes (issue 20, part 4): an imported teacher on the polyp folds.

    python benchmarks/strong_teacher.py --workdir studies/polyp-endotect-cpu [--fold 0] \
        [--params params-corrections.yaml] [--seeds 0,1,2] [--variants none,teacher,plc]

No network stronger than the study's `unet-small` teacher can be trained here in the time a
session has, so the stronger teacher is built from what the fold already has, without
touching its test images: candidates are T with flip test-time augmentation (the mean of its
probabilities over the identity, horizontal, vertical and both flips) and the mean of T, TA_f
and TA_b under the same flips. The rule, fixed before any number was seen: the candidate with
the highest Dice on the teacher's held-out val images (its ``--val-fraction`` of the fold's
train split) is imported, if it beats T there; test Dice is reported for all of them, never
used to choose.

Then, in ``--workdir``: its maps for every image go to ``strong/fold<F>/probs/<id>.npy``;
``plc import-teacher`` makes the teacher; ``plc train-assistant --kind false-pixel`` trains a
new TA_f on its false pixels (the params file's ``team`` and ``assistant`` sections, as the
study's TA_f); TA_b is the study's (it never reads T); ``plc precompute`` writes
``strong/labels/polyp-fold<F>.zarr``; ``plc distill`` trains the student cell of the params
file's ``distill`` section for each variant × seed. Finished steps are skipped (resumable).
It prints the teacher table, the label quality of both stores and the students' paired
differences beside the same runs on the study's own teacher (``runs_dir`` of the params).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
import yaml
from torch import nn

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT)]

from stages.report.stats import t_interval  # noqa: E402

FLIPS = ((), (3,), (2,), (2, 3))  # identity, horizontal, vertical, both (dims of (B, C, H, W))


class FlipMean(nn.Module):
    """Log of the mean softmax of ``nets`` over the four flips (a module: evaluate_model
    scores it as it scores any network)."""

    def __init__(self, *nets: nn.Module) -> None:
        super().__init__()
        self.nets = nn.ModuleList(nets)

    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        total = 0
        for net in self.nets:
            for dims in FLIPS:
                x = images.flip(dims) if dims else images
                p = net(x).float().softmax(1)
                total = total + (p.flip(dims) if dims else p)
        return total / (len(self.nets) * len(FLIPS))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.probabilities(images).clamp_min(1e-12).log()


def plc(*args: object) -> None:
    cmd = [sys.executable, "-c", "from stages.cli import app; app(prog_name='plc')"]
    subprocess.run([*cmd, *map(str, args), "--no-progress"], check=True,
                   env=os.environ | {"PYTHONPATH": str(ROOT)})  # fmt: skip


def teachers(args: argparse.Namespace, models: Path) -> tuple[list[str], FlipMean]:
    """The teacher table's rows and the chosen candidate (rule in the module docstring)."""
    from pipeline.checkpoint import build_from_checkpoint
    from pipeline.sampling import validation_indices
    from stages.data import StoreSplit, open_store
    from stages.evaluate import evaluate_model

    nets = {r: build_from_checkpoint(models / f"{r}.pt")[0] for r in ("teacher", "assistant_fp",
                                                                       "assistant_bd")}  # fmt: skip
    stage = build_from_checkpoint(models / "teacher.pt")[1]["config"]["stage"]
    store = open_store(args.data, args.fold)
    n = len(store.indices("train"))
    val = StoreSplit(store, "train", validation_indices(n, stage["val_fraction"]))
    test = StoreSplit(store, "test")
    candidates = {
        "T (the study's teacher)": nets["teacher"],
        "T, flip TTA": FlipMean(nets["teacher"]),
        "mean of T, TA_f, TA_b, flip TTA": FlipMean(*nets.values()),
    }
    cpu = torch.device("cpu")
    scores = {name: (evaluate_model(net, val, 2, 16, cpu)["dice"],
                     evaluate_model(net, test, 2, 16, cpu)["dice"])
              for name, net in candidates.items()}  # fmt: skip
    base = scores["T (the study's teacher)"][0]
    best = max(list(candidates)[1:], key=lambda k: scores[k][0])
    if scores[best][0] <= base:
        raise SystemExit(f"no candidate beats T on the val images ({scores}); nothing to import")
    rows = ["| teacher | val Dice (chooses) | test Dice |", "| --- | ---: | ---: |"]
    rows += [f"| {k}{' **(imported)**' if k == best else ''} | {100 * v:.2f} | {100 * t:.2f} |"
             for k, (v, t) in scores.items()]  # fmt: skip
    return rows, candidates[best]


def write_maps(args: argparse.Namespace, teacher: FlipMean, folder: Path) -> None:
    """The chosen teacher's probabilities (C, H, W) float32 for every image of the store."""
    from stages.data import StoreSplit, open_store

    if (folder / "done").exists():
        return
    folder.mkdir(parents=True, exist_ok=True)
    store = open_store(args.data)
    ids = store.ids()
    with torch.inference_mode():
        for split in ("train", "test"):
            view = StoreSplit(store, split)
            for a in range(0, len(view), 32):
                idx = torch.arange(a, min(a + 32, len(view)))
                probs = teacher.probabilities(view.batch(idx, torch.device("cpu"))[0])
                for i, p in zip(idx.tolist(), probs, strict=True):
                    np.save(folder / f"{ids[view.indices[i]]}.npy", p.numpy().astype(np.float32))
    (folder / "done").write_text("")


def label_quality(store_path: Path) -> str:
    from storage_schema import open_label_store

    store = open_label_store(store_path)
    pixels = store.size[0] * store.size[1]
    fp = {v: 100 * store.stat(f"false_pixels_{v}").mean() / pixels for v in ("teacher", "plc")}
    dice = 100 * store.stat("dice_teacher").mean()
    return (f"false pixels: Y^I {fp['teacher']:.2f} % of a map, plc {fp['plc']:.2f} %; "
            f"Y^I Dice vs GT {dice:.2f}")  # fmt: skip


def sc_choice_table(stores: dict[str, Path]) -> list[str]:
    """Per SC feature source: how SC filled the wrong pixels of ``plc`` (the sources' shares)
    and how sure the copied labels are (mean probability of the class SC set)."""
    from pipeline.variants import VARIANTS, sc_base
    from stages.report.labels import SOURCES, sc_sources
    from storage_schema import open_label_store

    plc_variant = next(v for v in VARIANTS if v.name == "plc")
    base = sc_base(plc_variant).name
    rows = ["| SC features | pixels corrected | " + " | ".join(lab for _, lab in SOURCES)
            + " | mean p of the class SC set |", "| --- | ---: |" + " ---: |" * len(SOURCES)
            + " ---: |"]  # fmt: skip
    for choice, path in stores.items():
        counts = sc_sources([path])["plc"]
        store = open_label_store(path)
        after, before = store.read("plc", slice(None)), store.read(base, slice(None))
        changed = after.argmax(1) != before.argmax(1)  # (N, H, W)
        sure = np.exp(after.max(1))[changed]  # p of the class SC set, at the corrected pixels
        total = sum(counts.values())
        shares = " | ".join(f"{100 * counts[k] / max(total, 1):.1f} %" for k, _ in SOURCES)
        rows.append(f"| {choice} | {total} | {shares} | {sure.mean():.3f} |")
    return rows


def student_table(args: argparse.Namespace, runs: dict[str, Path]) -> list[str]:
    def dice(root: Path, variant: str, seed: int) -> float | None:
        """``<variant>-s<seed>`` here, ``<variant>-l<λ>-t<τ>-s<seed>`` in the study's runs."""
        pattern = re.compile(rf"{re.escape(variant)}(-l[\d.]+-t[\d.]+)?-s{seed}")
        found = [d for d in root.iterdir() if pattern.fullmatch(d.name)]
        return 100 * json.loads((found[0] / "metrics.json").read_text())["dice"] if found else None

    rows = ["| teacher | student alone | vanilla KD − alone | PLC-KD − vanilla KD |",
            "| --- | ---: | --- | --- |"]  # fmt: skip
    for name, root in runs.items():
        cell = {v: [dice(root, v, s) for s in args.seeds] for v in ("none", "teacher", "plc")}

        def delta(a: str, b: str, cell: dict = cell) -> str:
            pairs = [x - y for x, y in zip(cell[a], cell[b], strict=True) if None not in (x, y)]
            iv = t_interval(pairs)
            return f"{iv.mean:+.2f} [{iv.low:+.2f}, {iv.high:+.2f}] (n={iv.n})"

        alone = [d for d in cell["none"] if d is not None]
        rows.append(f"| {name} | {np.mean(alone):.2f} | {delta('teacher', 'none')} | "
                    f"{delta('plc', 'teacher')} |")  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--params", type=Path, default=ROOT / "params-corrections.yaml")
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--seeds", type=lambda t: [int(x) for x in t.split(",")], default=[0, 1, 2])
    parser.add_argument(
        "--variants", type=lambda t: t.split(","), default=["none", "teacher", "plc"]
    )
    args = parser.parse_args()
    params = yaml.safe_load(args.params.read_text())
    name, f, w = params.get("dataset_name", "polyp"), args.fold, args.workdir
    args.data = w / "data" / f"{name}.zarr"
    models = w / "models" / name / f"fold{f}"
    strong = w / "strong" / f"fold{f}"
    rows, chosen = teachers(args, models)
    write_maps(args, chosen, strong / "probs")
    teacher = strong / "teacher.pt"
    if not teacher.exists():
        plc("import-teacher", "--dataset", name, "--data", args.data, "--probs", strong / "probs",
            "--out", teacher)  # fmt: skip
    fp = strong / "assistant_fp.pt"
    if not fp.exists():
        plc("train-assistant", "--dataset", name, "--data", args.data, "--fold", f, "--kind",
            "false-pixel", "--teacher", teacher, "--model", params["team"]["model"],
            "--params", f"{args.params}:team", "--params", f"{args.params}:assistant",
            "--out", fp)  # fmt: skip
    labels = w / "strong" / "labels" / f"{name}-fold{f}.zarr"
    if not labels.exists():
        plc("precompute", "--dataset", name, "--data", args.data, "--fold", f, "--teacher",
            teacher, "--assistant-fp", fp, "--assistant-bd", models / "assistant_bd.pt",
            "--params", f"{args.params}:precompute", "--out", labels)  # fmt: skip
    sc_stores = {"assistant-false-pixel (default)": labels}
    for choice in ("assistant-boundary", "both"):
        sc_stores[choice] = w / "strong" / f"labels-sc-{choice}" / f"{name}-fold{f}.zarr"
        if not sc_stores[choice].exists():
            plc("precompute", "--dataset", name, "--data", args.data, "--fold", f, "--teacher",
                teacher, "--assistant-fp", fp, "--assistant-bd", models / "assistant_bd.pt",
                "--params", f"{args.params}:precompute", "--sc-features", choice,
                "--out", sc_stores[choice])  # fmt: skip
    for variant in args.variants:
        for seed in args.seeds:
            out = w / "strong" / "runs" / f"fold{f}" / f"{variant}-s{seed}"
            if not (out / "metrics.json").exists():
                plc("distill", "--labels", labels, "--fold", f, "--out", out, "--variant",
                    variant, "--seed", seed, "--params", f"{args.params}:distill")  # fmt: skip
    study_labels = w / params.get("labels_dir", "labels") / f"{name}-fold{f}.zarr"
    print("\n".join(rows))
    print(f"\nLabel stores, fold {f} train split: study teacher — {label_quality(study_labels)}; "
          f"imported teacher — {label_quality(labels)}\n")  # fmt: skip
    runs = {"the study's T": w / params.get("runs_dir", "runs") / f"fold{f}",
            "imported, stronger": w / "strong" / "runs" / f"fold{f}"}  # fmt: skip
    print("\n".join(student_table(args, runs)))
    print("\nSC on the imported teacher (no features of its own), fold "
          f"{f} train split, by the feature map SC searches:\n")  # fmt: skip
    print("\n".join(sc_choice_table(sc_stores)))


if __name__ == "__main__":
    main()
