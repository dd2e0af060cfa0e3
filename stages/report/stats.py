"""The statistics of ``plc report``: paired differences with 95 % CIs, bootstrap, curve slopes.

Pure functions on plain numbers (no files): the report's tables call them, the tests check
them against hand-computed cases and scipy.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

Key = tuple  # (fold, seed) of a run


@dataclass(frozen=True)
class Interval:
    """A mean with its two-sided 95 % confidence interval (NaN bounds: not estimable)."""

    mean: float
    low: float
    high: float
    n: int

    def excludes_zero(self) -> bool:
        return not (math.isnan(self.low) or self.low <= 0.0 <= self.high)

    def fmt(self, scale: float = 100.0) -> str:
        """``+1.23 [-0.40, +2.86]`` in points (``scale`` 100 for fractions)."""
        if self.n == 0 or math.isnan(self.mean):
            return "–"
        if math.isnan(self.low):
            return f"{scale * self.mean:+.2f}"
        return f"{scale * self.mean:+.2f} [{scale * self.low:+.2f}, {scale * self.high:+.2f}]"


def t_interval(values: Sequence[float], level: float = 0.95) -> Interval:
    """Mean and Student-t interval of ``values`` (NaNs dropped; fewer than 2: no interval)."""
    from scipy import stats

    data = np.asarray([v for v in values if not math.isnan(v)], dtype=np.float64)
    if len(data) == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    mean = float(data.mean())
    if len(data) < 2:
        return Interval(mean, math.nan, math.nan, 1)
    if np.all(data == data[0]):  # zero spread: the interval is the point
        return Interval(mean, mean, mean, len(data))
    low, high = stats.ttest_1samp(data, 0.0).confidence_interval(level)
    return Interval(mean, float(low), float(high), len(data))


def paired_diffs(
    runs: Mapping[Key, float], base: Mapping[Key, float]
) -> tuple[list[Key], list[float]]:
    """``runs[k] - base[k]`` for every key in both, in sorted key order."""
    keys = sorted(set(runs) & set(base), key=str)
    return keys, [runs[k] - base[k] for k in keys]


def paired_t(runs: Mapping[Key, float], base: Mapping[Key, float]) -> Interval:
    """Mean paired difference over the shared (fold, seed) runs with its t interval."""
    return t_interval(paired_diffs(runs, base)[1])


def image_bootstrap(
    runs: Mapping[Key, Mapping[str, float]],
    base: Mapping[Key, Mapping[str, float]],
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> Interval:
    """Image-level paired bootstrap of the mean per-image difference.

    Per (fold, seed) run pair and test image (ids matched), ``d = run - base``; an image's
    difference is the mean of its ``d`` over the seeds it was paired in. Images are resampled
    with replacement within their fold (each fold's test images are a separate sample), and
    the percentile interval of the resampled means is returned.

    Args:
        runs, base: per (fold, seed) key, per image id, the score (NaN scores are skipped).
    """
    per_image: dict[tuple, list[float]] = {}
    for key in set(runs) & set(base):
        fold = key[0]
        for image, value in runs[key].items():
            other = base[key].get(image)
            if other is None or math.isnan(value) or math.isnan(other):
                continue
            per_image.setdefault((fold, image), []).append(value - other)
    if not per_image:
        return Interval(math.nan, math.nan, math.nan, 0)
    folds: dict[object, list[float]] = {}
    for (fold, _), diffs in sorted(per_image.items(), key=str):
        folds.setdefault(fold, []).append(float(np.mean(diffs)))
    groups = [np.asarray(v) for v in folds.values()]
    point = float(np.concatenate(groups).mean())
    rng = np.random.default_rng(seed)
    total = sum(len(g) for g in groups)
    sums = np.zeros(n_boot)
    for g in groups:  # (n_boot, len(g)) resampled indices per fold
        sums += g[rng.integers(0, len(g), size=(n_boot, len(g)))].sum(axis=1)
    means = sums / total
    alpha = (1 - level) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return Interval(point, float(low), float(high), total)


def tail_slope(values: Sequence[float], fraction: float = 0.2) -> float:
    """Least-squares slope per epoch of the last ``fraction`` of ``values`` (at least 2 points).

    NaN when fewer than 2 values are finite.
    """
    data = np.asarray(values, dtype=np.float64)
    n = max(2, math.ceil(fraction * len(data)))
    tail = data[-n:]
    x = np.arange(len(data))[-n:][np.isfinite(tail)]
    y = tail[np.isfinite(tail)]
    if len(y) < 2:
        return math.nan
    return float(np.polyfit(x, y, 1)[0])


def histogram(values: np.ndarray, bins: int = 10) -> np.ndarray:
    """Counts of ``values`` in ``bins`` equal bins over [0, 1] (1.0 goes to the last bin)."""
    return np.histogram(np.clip(values, 0.0, 1.0), bins=bins, range=(0.0, 1.0))[0]
