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
from stages.report.stats import histogram

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


SOURCES = (("in_image", "same image (a correct pixel; swap: in place)"), ("bank", "cross-image bank"),
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
    from stages.train.assistant import recompute_bt_bands

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


FINE = 1000  # bins of the corrected pixels' probability histogram (quantiles to 0.001)
QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)


@dataclass
class Coherence:
    """One row's corrections against the teacher's map, summed over the stores.

    ``p_hist``: histogram (FINE bins over [0, 1]) of the GT-class probability at the pixels
    whose argmax differs from the teacher's (every row here is correct there, so it is the
    row's top probability); ``isolated``: those of them with no such 4-neighbour; ``grad_sum``
    / ``grad_n``: sum and count of |Δp_fg| between horizontal and vertical neighbours.
    """

    p_hist: np.ndarray = field(default_factory=lambda: np.zeros(FINE, np.int64))
    corrected: int = 0
    isolated: int = 0
    grad_sum: float = 0.0
    grad_n: int = 0


def coherence(paths: list[Path], block: int = 32) -> dict[str, Coherence]:
    """Margins and spatial coherence of every stored row's labels (table order).

    For each row: where its argmax differs from the teacher's (the pixels it corrected: the
    assistants' replacements and SC's or another rule's fills), the GT-class probability it
    gave them, how many of them have no corrected 4-neighbour (scattered "speckle"), and the
    mean absolute spatial gradient of the label map's p_fg = 1 − p(background) over all
    pixels (the teacher and the GT rows give the reference roughness).
    """
    from storage_schema import open_label_store

    out: dict[str, Coherence] = {}
    for p in paths:
        store = open_label_store(p)
        if "teacher" not in store.variants:
            continue
        for start in range(0, len(store), block):
            sel = slice(start, min(start + block, len(store)))
            base = store.read("teacher", sel).argmax(1)  # (b, H, W)
            for v in VARIANTS:
                if v.name not in store.variants:
                    continue
                logp = store.read(v.name, sel)  # (b, C, H, W)
                c = out.setdefault(v.name, Coherence())
                p_fg = 1.0 - np.exp(logp[:, 0].astype(np.float64))
                dx, dy = np.abs(np.diff(p_fg, axis=2)), np.abs(np.diff(p_fg, axis=1))
                c.grad_sum += float(dx.sum() + dy.sum())
                c.grad_n += dx.size + dy.size
                changed = logp.argmax(1) != base  # (b, H, W)
                if not changed.any():
                    continue
                top = np.exp(logp.max(axis=1).astype(np.float64))[changed]
                c.p_hist += np.histogram(np.clip(top, 0, 1), bins=FINE, range=(0.0, 1.0))[0]
                c.corrected += int(changed.sum())
                pad = np.pad(changed, ((0, 0), (1, 1), (1, 1)))
                neighbour = (
                    pad[:, :-2, 1:-1] | pad[:, 2:, 1:-1] | pad[:, 1:-1, :-2] | pad[:, 1:-1, 2:]
                )
                c.isolated += int((changed & ~neighbour).sum())
    return out


def hist_quantile(hist: np.ndarray, q: float) -> float:
    """The ``q`` quantile of values binned in ``hist`` (equal bins over [0, 1]): the upper
    edge of the first bin where the cumulative count reaches q of the total."""
    cum = np.cumsum(hist)
    k = int(np.searchsorted(cum, q * cum[-1], side="left"))
    return (k + 1) / len(hist)


def coherence_lines(coh: dict[str, Coherence]) -> list[str]:
    """One row per variant: corrected pixels' probability quantiles, isolation, gradient."""
    qs = " | ".join(f"q{int(100 * q)}" for q in QUANTILES)
    lines = [
        f"| Variant | pixels changed vs T | p(GT class) there: {qs} | isolated (% of changed) "
        "| mean abs. spatial gradient of p_fg |",
        "|---|---|" + "---|" * len(QUANTILES) + "---|---|",
    ]
    for v in VARIANTS:
        c = coh.get(v.name)
        if c is None:
            continue
        if c.corrected:
            quant = " | ".join(f"{hist_quantile(c.p_hist, q):.3f}" for q in QUANTILES)
            iso = f"{100 * c.isolated / c.corrected:.1f}"
        else:
            quant, iso = " | ".join("–" for _ in QUANTILES), "–"
        grad = c.grad_sum / max(c.grad_n, 1)
        lines.append(f"| {v.label} | {c.corrected} | {quant} | {iso} | {grad:.4f} |")
    return lines


def calibration_lines(paths: list[Path]) -> list[str]:
    """One row per label store: the assistants' temperatures of ``plc_cal`` and the NLL
    before / after on the images they were fitted on (stores made before it: none)."""
    from storage_schema import open_label_store

    lines = [
        "| label store | fitted on | T (TA_f) | NLL TA_f before → after | T (TA_b) "
        "| NLL TA_b before → after |",
        "|---|---|---|---|---|---|",
    ]
    rows = 0
    for p in paths:
        cal = open_label_store(p).provenance.get("calibration")
        if not cal:
            continue
        rows += 1
        bound = set(cal.get("at_bound", []))
        cells = []
        for k in ("fp", "bd"):
            t = f"{cal[k]:g}" + (" (search bound)" if k in bound else "")
            cells += [t, f"{cal['nll_before'][k]:.3f} → {cal['nll_after'][k]:.3f}"]
        lines.append(f"| {p.name} | {cal['images']} {cal['source']} | {' | '.join(cells)} |")
    return lines if rows else []


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
