"""Temperature scaling (Guo et al. 2017): one scalar T per network, fitted by NLL.

``plc_cal`` (issue 17) divides each assistant's logits by its own T before replace-if-correct,
so that a replaced pixel carries the confidence a calibrated network would give it: the
assistants, trained on FIG/BT images, are overconfident on real ones (their replacements
decode to p ≈ 1.0 on the polyp set). T never changes an argmax, so the cascade replaces
exactly the pixels it replaces without scaling; only the replacing vectors' margins move.
"""

from __future__ import annotations

import math

import torch

from pipeline.check import check_shape

# the search interval of β = 1/T: T in [0.05, 20]
BETA_RANGE = (0.05, 20.0)


def temperature_nll(logits: torch.Tensor, labels: torch.Tensor, temperature: float) -> float:
    """Mean negative log-likelihood of ``labels`` under softmax(logits / T), in float64.

    Args:
        logits: (N, C) scores.
        labels: (N,) long class ids.
        temperature: T > 0.
    """
    z = logits.double() / temperature
    return float((torch.logsumexp(z, dim=1) - z.gather(1, labels[:, None]).squeeze(1)).mean())


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, iters: int = 80) -> float:
    """The T in [0.05, 20] that minimises :func:`temperature_nll` (golden-section search).

    The NLL is convex in β = 1/T (a log-sum-exp of linear functions of β minus a linear
    term), so a golden-section search over β converges to the minimum; 80 steps shrink the
    interval by 0.618^80 ≈ 2e-17 of its width.

    Args:
        logits: (N, C) scores of pixels with known labels (N >= 1).
        labels: (N,) long class ids in [0, C).
        iters: golden-section steps.

    Returns:
        T as a Python float, rounded to 4 decimals.
    """
    sizes = check_shape(logits, "N C", "logits")
    check_shape(labels, f"{sizes['N']}", "labels")
    if sizes["N"] == 0:
        raise ValueError("fit_temperature needs at least one labelled pixel.")
    z, y = logits.double(), labels.long()

    def nll(beta: float) -> float:
        zb = z * beta
        return float((torch.logsumexp(zb, dim=1) - zb.gather(1, y[:, None]).squeeze(1)).mean())

    ratio = (math.sqrt(5.0) - 1.0) / 2.0
    lo, hi = 1.0 / BETA_RANGE[1], 1.0 / BETA_RANGE[0]
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = nll(a), nll(b)
    for _ in range(iters):
        if fa <= fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = nll(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = nll(b)
    # 4 decimals: the fit is then the same whatever the thread count (float32 convolutions
    # move the logits' last bits, and a resumed run must record what the first one did)
    return round(1.0 / ((lo + hi) / 2.0), 4)
