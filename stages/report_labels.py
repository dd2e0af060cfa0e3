"""Label quality for ``plc report``: false pixels and Dice vs GT per variant, and what SC did.

Read from one or more label stores (one per fold): the per-image stats the precompute wrote,
and, for each SC row, the pixels SC corrected — where the argmax of the SC variant differs
from the argmax of the map SC corrected (its SC base; SC only rewrites wrong pixels, and the
result is all-correct) — with a histogram of the foreground probability SC gave them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.variants import VARIANTS, sc_base
from stages.report_stats import histogram

logger = logging.getLogger(__name__)

BINS = 10


@dataclass
class VariantQuality:
    """Label quality of one variant summed over the stores."""

    false_pixels: float = 0.0
    pixels: int = 0
    images_with_false: int = 0
    images: int = 0
    dice: list[float] = field(default_factory=list)


@dataclass
class Corrected:
    """The pixels SC corrected in one SC variant, by the class SC gave them."""

    to_lesion: np.ndarray = field(default_factory=lambda: np.zeros(BINS, np.int64))
    to_background: np.ndarray = field(default_factory=lambda: np.zeros(BINS, np.int64))


def label_stores(path: Path, dataset: str | None = None) -> list[Path]:
    """``path`` itself when it is a store, else every label store (``*.zarr``) directly inside
    it, sorted — those of ``dataset`` only when it is given and some are."""
    from storage_schema import open_label_store

    path = Path(path)
    if (path / "zarr.json").exists() or not path.is_dir():
        return [path]
    found = sorted(p for p in path.glob("*.zarr") if (p / "zarr.json").exists())
    if not found:
        raise FileNotFoundError(f"no label store (*.zarr) in {path}: pass a store or its folder.")
    if dataset is not None:
        mine = [p for p in found if open_label_store(p).dataset_name == dataset]
        found = mine or found
    return found


def quality(paths: list[Path]) -> dict[str, VariantQuality]:
    """Per-variant false pixels and label Dice over every store (table order)."""
    from storage_schema import open_label_store

    out: dict[str, VariantQuality] = {}
    for p in paths:
        store = open_label_store(p)
        n_pix = store.size[0] * store.size[1]
        for v in VARIANTS:
            if v.name not in store.variants:  # a store made before the row existed
                continue
            fp = store.stat(f"false_pixels_{v.name}")
            q = out.setdefault(v.name, VariantQuality())
            q.false_pixels += float(fp.sum())
            q.pixels += n_pix * len(fp)
            q.images_with_false += int((fp > 0).sum())
            q.images += len(fp)
            q.dice += store.stat(f"dice_{v.name}").tolist()
    return out


def sc_corrections(paths: list[Path], block: int = 32) -> dict[str, Corrected]:
    """Histogram (BINS bins over [0, 1]) of p_fg = 1 − p(background) at the pixels each SC
    variant corrected, split by the class SC set (lesion: any foreground class)."""
    from storage_schema import open_label_store

    out: dict[str, Corrected] = {}
    for p in paths:
        store = open_label_store(p)
        for v in VARIANTS:
            base = sc_base(v).name if v.sc else None
            if base is None or v.name not in store.variants or base not in store.variants:
                continue
            c = out.setdefault(v.name, Corrected())
            for start in range(0, len(store), block):
                sel = slice(start, min(start + block, len(store)))
                after = store.read(v.name, sel)  # (b, C, H, W) log-probabilities
                before = store.read(base, sel)  # (b, C, H, W)
                changed = after.argmax(1) != before.argmax(1)  # (b, H, W)
                p_fg = 1.0 - np.exp(after[:, 0])  # (b, H, W)
                lesion = after.argmax(1) > 0
                c.to_lesion += histogram(p_fg[changed & lesion], BINS)
                c.to_background += histogram(p_fg[changed & ~lesion], BINS)
    return out


SOURCES = (("in_image", "nearest correct pixel, same image"), ("bank", "cross-image bank"),
           ("onehot", "smoothed one-hot"))  # fmt: skip


def sc_sources(paths: list[Path]) -> dict[str, dict[str, int]]:
    """Per SC variant: how many pixels each SC source filled, summed over the stores (from the
    per-image ``sc_<source>_<variant>`` stats the precompute wrote)."""
    from storage_schema import open_label_store

    out: dict[str, dict[str, int]] = {}
    for p in paths:
        store = open_label_store(p)
        for v in VARIANTS:
            if not v.sc or v.name not in store.variants:
                continue
            counts = out.setdefault(v.name, dict.fromkeys((k for k, _ in SOURCES), 0))
            for kind, _ in SOURCES:
                counts[kind] += int(store.stat(f"sc_{kind}_{v.name}").sum())
    return out


def source_lines(sources: dict[str, dict[str, int]]) -> list[str]:
    """One row per SC variant: pixels filled by each source (count and share)."""
    lines = [
        "| SC variant | pixels corrected | " + " | ".join(label for _, label in SOURCES) + " |",
        "|---|---|" + "---|" * len(SOURCES),
    ]
    labels = {v.name: v.label for v in VARIANTS}
    for name, counts in sources.items():
        total = sum(counts.values())
        cells = " | ".join(
            f"{counts[k]} ({100 * counts[k] / max(total, 1):.1f} %)" for k, _ in SOURCES
        )
        lines.append(f"| {labels[name]} | {total} | {cells} |")
    return lines


def team_checkpoints(paths: list[Path]) -> Iterator[tuple[Any, int | None, str, dict | None]]:
    """Every team network that each label store's provenance names: ``(store, fold, role,
    checkpoint metadata)``, the metadata None when the file cannot be read from here (moved,
    replaced, or on another machine)."""
    from pipeline.checkpoint import load_checkpoint
    from storage_schema import open_label_store

    for path in paths:  # one store per fold
        store = open_label_store(path)
        fold = store.provenance.get("fold")
        for role, net in store.provenance.get("networks", {}).items():
            try:
                meta = load_checkpoint(net["path"])
            except (KeyError, FileNotFoundError, ValueError):
                meta = None
            yield store, fold, role, meta


def _recomputed_bands(meta: dict) -> dict | None:
    """A boundary assistant's BT bands from its recorded options; None when they cannot be
    recomputed here (another kind, or its dataset store is not readable from here)."""
    from stages.train_assistant import recompute_bt_bands

    config = meta.get("config", {})
    options = config.get("stage", {})
    if options.get("kind") != "boundary":
        return None
    try:
        return {"bt_bands": recompute_bt_bands(config), "recomputed": True}
    except (FileNotFoundError, KeyError, ValueError) as err:
        logger.info("BT bands of %s not recomputed: %s", options.get("out"), err)
        return None


def team_lines(paths: list[Path]) -> list[str]:
    """What the assistants trained on, per label store (fold): TA_f's false-pixel queues at the
    end of training and TA_b's band and interior sizes, from the diagnostics each assistant
    checkpoint recorded (checkpoints from before they were recorded are named as such)."""
    fig = ["| fold | GT class of the queued false pixels | queued / length | mean RGB (0–1) |",
           "|---|---|---|---|"]  # fmt: skip
    bt = ["| fold | class | images | band px per image | interior px per image | "
          "images without interior |", "|---|---|---|---|---|---|"]  # fmt: skip
    missing, unreadable, recomputed = [], [], []
    for store, fold_id, role, meta in team_checkpoints(paths):
        if not role.startswith("assistant"):
            continue
        fold = "–" if fold_id is None else str(fold_id)
        if meta is None:
            unreadable.append(f"{role} (fold {fold})")
            continue
        diag = meta.get("extra", {}).get("diagnostics") or _recomputed_bands(meta)
        if not diag:
            missing.append(f"{role} (fold {fold})")
            continue
        if "recomputed" in diag:
            recomputed.append(f"{role} (fold {fold})")
        for q in diag.get("fig_queues", []):
            rgb = ", ".join(f"{v:.3f}" for v in q["mean"])
            fig.append(f"| {fold} | {store.classes[q['class']]} | {q['fill']} / {q['length']} "
                       f"| {rgb} |")  # fmt: skip
        for b in diag.get("bt_bands", []):
            bt.append(f"| {fold} | {store.classes[b['class']]} | {b['images']} "
                      f"| {b['band']:.1f} | {b['interior']:.1f} | {b['no_interior']} |")  # fmt: skip
    lines = []
    if len(fig) > 2:
        lines += ["TA_f's false-pixel queues at the end of its training (FIG):", "", *fig, ""]
    if len(bt) > 2:
        lines += ["TA_b's boundary bands on the train masks (BT, at its δ):", "", *bt, ""]
    if recomputed:
        lines += [
            "The bands of " + ", ".join(recomputed) + " were recomputed from the options "
            "recorded in their checkpoints (the same train masks at the same δ), which "
            "predate plc-kd recording them.",
            "",
        ]
    if missing:
        lines.append(
            "Not recorded for " + ", ".join(missing) + ": those checkpoints were trained before "
            "plc-kd recorded FIG queues and BT bands (retrain them to see these tables)."
        )
    if unreadable:
        lines.append(
            "Not shown for " + ", ".join(unreadable) + ": the checkpoint the label store's "
            "provenance names could not be read from here (moved, replaced or elsewhere)."
        )
    return lines[:-1] if lines and not lines[-1] else lines


def quality_lines(q: dict[str, VariantQuality]) -> list[str]:
    lines = [
        "| Variant | false pixels (% of pixels) | images with false pixels | label Dice vs GT (%) |",
        "|---|---|---|---|",
    ]
    for v in VARIANTS:
        if v.name in q:
            r = q[v.name]
            lines.append(
                f"| {v.label} | {100 * r.false_pixels / max(r.pixels, 1):.3f} "
                f"| {r.images_with_false}/{r.images} | {100 * float(np.mean(r.dice)):.2f} |"
            )
    return lines


def correction_lines(corr: dict[str, Corrected]) -> list[str]:
    """One row per SC variant and class set: the share of its corrected pixels in each bin."""
    edges = [f"{i / BINS:.1f}–{(i + 1) / BINS:.1f}" for i in range(BINS)]
    lines = [
        "| SC variant | corrected to | pixels | " + " | ".join(edges) + " |",
        "|---|---|---|" + "---|" * BINS,
    ]
    labels = {v.name: v.label for v in VARIANTS}
    for name, c in corr.items():
        for what, counts in (("lesion", c.to_lesion), ("background", c.to_background)):
            total = int(counts.sum())
            shares = " | ".join(f"{100 * n / max(total, 1):.1f}" for n in counts)
            lines.append(f"| {labels[name]} | {what} | {total} | {shares} |")
    return lines
