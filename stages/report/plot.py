"""PNG figures of ``plc report``, drawn with OpenCV (matplotlib is not a dependency).

- :func:`forest_plot`: paired ΔDice with 95 % CIs, one row per variant, one panel per
  reference (student alone, vanilla KD);
- :func:`histogram_plot`: the foreground probability of the pixels SC corrected.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from stages.report.stats import Interval

_BLACK, _GREY, _BLUE, _RED = (0, 0, 0), (170, 170, 170), (180, 90, 20), (40, 40, 200)  # BGR
_FONT_SCALE = 0.42


def _text(img: np.ndarray, text: str, xy: tuple[int, int], color=_BLACK, scale=_FONT_SCALE):
    import cv2

    cv2.putText(img, text, xy, cv2.FONT_HERSHEY_SIMPLEX, scale, color, 1, cv2.LINE_AA)


def _write(path: Path, img: np.ndarray) -> Path:
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), img):
        raise OSError(f"could not write {path}; check the folder is writable.")
    return path


def forest_plot(
    rows: Sequence[str], panels: dict[str, Sequence[Interval | None]], path: Path
) -> Path:
    """Draw one panel per reference: each row's mean Δ (points) and its 95 % CI.

    Args:
        rows: row labels, top to bottom.
        panels: panel title -> one interval per row (None: no such comparison).
        path: the PNG to write.
    """
    import cv2

    label_w, panel_w, row_h, top = 230, 300, 26, 44
    width = label_w + panel_w * len(panels) + 20
    height = top + row_h * len(rows) + 40
    img = np.full((height, width, 3), 255, np.uint8)
    for r, label in enumerate(rows):
        _text(img, label[:34], (8, top + r * row_h + 17))
    for p, (title, intervals) in enumerate(panels.items()):
        x0 = label_w + p * panel_w
        bounds = [abs(v) for iv in intervals if iv for v in (iv.low, iv.high, iv.mean)]
        span = max([b for b in bounds if math.isfinite(b)] or [0.01]) * 100 * 1.1
        span = max(span, 0.5)

        def px(value: float, x0: int = x0, span: float = span) -> int:
            return int(x0 + 10 + (value * 100 + span) / (2 * span) * (panel_w - 20))

        _text(img, title, (x0 + 10, 18))
        _text(img, f"paired dDice (points), +-{span:.1f}", (x0 + 10, 34), _GREY, 0.36)
        cv2.line(img, (px(0.0), top - 4), (px(0.0), top + row_h * len(rows)), _GREY, 1)
        for r, iv in enumerate(intervals):
            if iv is None or math.isnan(iv.mean):
                continue
            y = top + r * row_h + 12
            color = _BLUE if iv.excludes_zero() else _BLACK
            if math.isfinite(iv.low):
                cv2.line(img, (px(iv.low), y), (px(iv.high), y), color, 2)
            cv2.circle(img, (px(iv.mean), y), 4, color, -1)
        _text(img, f"{-span:+.1f}", (x0 + 4, height - 14), _GREY, 0.36)
        _text(img, f"{span:+.1f}", (x0 + panel_w - 44, height - 14), _GREY, 0.36)
    _text(img, "blue: 95 % CI excludes 0", (8, height - 14), _GREY, 0.36)
    return _write(path, img)


def histogram_plot(series: dict[str, np.ndarray], path: Path) -> Path:
    """Bars of each series' share per bin over [0, 1] (one panel per series)."""
    import cv2

    panel_w, panel_h, pad = 340, 150, 30
    names = list(series)
    img = np.full((panel_h + 2 * pad, max(1, len(names)) * panel_w, 3), 255, np.uint8)
    for i, name in enumerate(names):
        counts = np.asarray(series[name], dtype=np.float64)
        shares = counts / max(counts.sum(), 1.0)
        x0, bins = i * panel_w + 10, len(counts)
        bar_w = (panel_w - 30) // max(bins, 1)
        _text(img, f"{name[:48]} (n={int(counts.sum())})", (x0, 16), scale=0.36)
        base = pad + panel_h
        for b, share in enumerate(shares):
            h = int(share / max(shares.max(), 1e-9) * (panel_h - 20))
            x = x0 + b * bar_w
            cv2.rectangle(img, (x, base - h), (x + bar_w - 2, base), _RED, -1)
        _text(img, "p_fg 0", (x0, base + 16), _GREY, 0.36)
        _text(img, "1", (x0 + bins * bar_w - 8, base + 16), _GREY, 0.36)
    return _write(path, img)
