"""What ``plc report`` reads: student runs and teachers' metrics as :class:`Run` records, and
the report row each run belongs to.

Both the report stage (:mod:`stages.report.stage`) and its tables (:mod:`stages.report.tables`)
import from here, downward: neither imports the other's records.
"""

from __future__ import annotations

import csv
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.kd_table import BY_NAME as LOSSES
from pipeline.kd_table import FAMILIES, KD_LOSSES
from pipeline.variants import NO_KD, NO_KD_LABEL, VARIANTS

VANILLA = "teacher"  # --variant teacher with --loss kd: vanilla KD
# ``plc distill --kd-pixels correct`` runs are their own rows: the variant's name + MASKED
MASKED = "+masked"
PLUS_KD = "+kd"  # a teacher loss with --plus-kd


def _loss_rows() -> list[tuple[str, str]]:
    """The rows of every loss but KD (``pipeline.kd_table``): a stored loss on T's labels
    (``cwd``) or another variant's (``cwd:plc``); a teacher loss alone (``at``), plus KD on
    T's labels (``at+kd``) or another variant's (``at+kd:plc``)."""
    others = [v for v in VARIANTS if v.name != VANILLA]
    rows = []
    for x in KD_LOSSES:
        if x.name == "kd":
            continue
        rows.append((x.name, x.label))
        if x.reads == "stored":
            rows += [(f"{x.name}:{v.name}", f"{x.label} on {v.label}") for v in others]
        else:
            rows.append((x.name + PLUS_KD, f"{x.label} + KD"))
            rows += [(f"{x.name}{PLUS_KD}:{v.name}", f"{x.label} + KD on {v.label}")
                     for v in others]  # fmt: skip
    return rows


LOSS_ROWS = tuple(_loss_rows())
# (row key, row label in the paper's notation), from the variant and loss tables
ROWS = (
    (NO_KD, NO_KD_LABEL),
    *((v.name, v.label) for v in VARIANTS),
    *((v.name + MASKED, f"{v.label}, KD on correct pixels only") for v in VARIANTS),
    *LOSS_ROWS,
)


def row_key(config: dict) -> str:
    """The report row of a run's config: with ``--loss kd`` its variant (+ MASKED with
    ``--kd-pixels correct``); with another loss the loss's row (:func:`_loss_rows`); with
    ``--variant none`` and a stored loss, the student alone."""
    loss, variant = config.get("loss", "kd"), config["variant"]
    if loss == "kd" or loss not in LOSSES:
        masked = config.get("kd_pixels", "all") == "correct"
        return variant + (MASKED if masked else "")
    if LOSSES[loss].reads == "stored":
        if variant == NO_KD:
            return NO_KD
        return loss if variant == VANILLA else f"{loss}:{variant}"
    if not config.get("plus_kd") or variant == NO_KD:
        return loss
    return loss + PLUS_KD + ("" if variant == VANILLA else f":{variant}")


def families(key: str) -> tuple[str, ...]:
    """The families (response / feature / relation) of a row: the loss's own, with
    "response" added for a stored loss or --plus-kd (the paper's tick columns)."""
    loss = key.split(":")[0].removesuffix(PLUS_KD).removesuffix(MASKED)
    own = LOSSES[loss].families if loss in LOSSES else ("response",)
    response = loss not in LOSSES or LOSSES[loss].reads == "stored" or PLUS_KD in key
    return tuple(f for f in FAMILIES if f in own or (f == "response" and response))


METRICS = (("dice", "Dice (%)", 100.0), ("iou", "IoU (%)", 100.0))
BOUNDARY = (("hd95", "HD95 (px)", 1.0), ("assd", "ASSD (px)", 1.0))


_PER_CLASS = re.compile(r"dice_class\d+")  # evaluate's per-class Dice (C > 2)


@dataclass
class Run:
    """One trained network evaluated on a test split (a student run or a fold's teacher)."""

    variant: str
    fold: int | None
    seed: int
    config: dict
    scores: dict[str, float]
    per_image: dict[str, dict[str, float]] = field(default_factory=dict)
    val_dice: list[float] = field(default_factory=list)
    path: str = ""
    train_check: dict = field(default_factory=dict)  # distill's training check (if recorded)

    @property
    def key(self) -> tuple:
        return (self.fold, self.seed)

    @property
    def setting(self) -> tuple[float, float]:
        return (float(self.config.get("lam", math.nan)), float(self.config.get("tau", math.nan)))


def _per_image(csv_path: Path) -> dict[str, dict[str, float]]:
    if not csv_path.exists():
        return {}
    with open(csv_path, newline="") as f:
        return {
            r["id"]: {k: float(v) for k, v in r.items() if k != "id"} for r in csv.DictReader(f)
        }


def _val_dice(curve: Path) -> list[float]:
    if not curve.exists():
        return []
    with open(curve, newline="") as f:
        rows = list(csv.DictReader(f))
    return [float(r["val_dice"]) for r in rows if r.get("val_dice") not in (None, "")]


def load_runs(runs: Path) -> list[Run]:
    """Every student run (``metrics.json``) under ``runs``."""
    found = sorted(Path(runs).glob("**/metrics.json"))
    if not found:
        raise FileNotFoundError(
            f"no metrics.json under {runs}: run `plc distill ... --out {runs}/<exp>` first."
        )
    out = []
    for p in found:
        m = json.loads(p.read_text())
        cfg = m.get("config", {})
        out.append(
            Run(row_key(cfg), cfg.get("fold"), int(cfg["seed"]),
                cfg | digests(m) | {"dataset": m.get("dataset", "?")},
                _scores(m), _per_image(p.with_name("metrics_per_image.csv")),
                _val_dice(p.with_name("curve.csv")), str(p.parent), m.get("train_check") or {})
        )  # fmt: skip
    return out


def digests(m: dict) -> dict:
    return {k: m[k] for k in ("init_sha256", "batches_sha256") if k in m}


def _scores(m: dict) -> dict[str, float]:
    keys = [k for k, _, _ in (*METRICS, *BOUNDARY)] + [k for k in m if _PER_CLASS.fullmatch(k)]
    return {k: float(m[k]) for k in keys if m.get(k) is not None}


def load_teachers(path: Path | None) -> list[Run]:
    """The teacher's metrics: one ``teacher.metrics.json``, or every one under a folder
    (one per fold; the fold from the file, else from a ``fold<F>`` folder name)."""
    if path is None:
        return []
    files = (
        [Path(path)] if Path(path).is_file() else sorted(Path(path).glob("**/teacher.metrics.json"))
    )
    if not files:
        raise FileNotFoundError(
            f"no teacher.metrics.json at {path}: run `plc train-teacher` first."
        )
    out = []
    for p in files:
        m = json.loads(p.read_text())
        fold = m.get("fold")
        if fold is None and (hit := re.fullmatch(r"fold(\d+)", p.parent.name)):
            fold = int(hit.group(1))
        per_image = _per_image(p.with_name(p.name.removesuffix(".json") + "_per_image.csv"))
        out.append(Run("T", fold, -1, {"model": m.get("model", "teacher")}, _scores(m), per_image,
                       path=str(p)))  # fmt: skip
    return out
