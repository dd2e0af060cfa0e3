"""Soft-label encoding: log-probabilities as int8 codes at scale 1/8, argmax preserved.

A code is ``round(log p * 8)`` clipped to ``[-128, 0]``; decoding is
``log_softmax(code / 8)`` along the class axis. Bounds (scale 8):

- before renormalisation, ``|code / 8 - log p| <= 1/16`` for every entry with
  ``log p >= -16`` that the argmax guard did not touch; entries below ``-16`` (``p < 1.2e-7``)
  clip to code ``-128``;
- the argmax guard changes at most the codes of a pixel's exact rounding ties by one step,
  so a nudged entry is within ``3/16`` of ``log p``;
- ``np.argmax`` of the codes (hence of the decoded map) equals ``np.argmax`` of the input
  along the class axis, first index on ties, for every pixel.

Measured on realistic maps (C = 2, 384²) the design reports KL 6.5e-6 nats/pixel at τ = 4;
:func:`encoding_error` measures it for any input.
"""

from __future__ import annotations

import logging

import numpy as np

from storage_schema.errors import StoreError

logger = logging.getLogger(__name__)

LOGP_SCALE: int = 8
CODE_MIN: int = -128
CODE_MAX: int = 0


def _check_logp(logp: np.ndarray, axis: int) -> np.ndarray:
    x = np.asarray(logp)
    if not np.issubdtype(x.dtype, np.floating):
        raise StoreError(
            f"log-probabilities must be a floating array, got dtype {x.dtype}; "
            "pass float log-probs or write int8 codes directly."
        )
    if x.ndim == 0 or not -x.ndim <= axis < x.ndim:
        raise StoreError(f"class axis {axis} is out of range for an array of shape {x.shape}.")
    if np.isnan(x).any():
        raise StoreError("log-probabilities contain NaN; fix the producing network's output.")
    return x


def _tied_top(codes: np.ndarray, axis: int) -> np.ndarray:
    """Pixels (``codes.shape`` without ``axis``) whose maximal code is held by 2+ classes."""
    top = np.max(codes, axis=axis, keepdims=True)
    held = np.zeros(top.shape, np.uint8)
    for k in range(codes.shape[axis]):  # C is small: C cheap passes beat one argmax
        held += np.take(codes, [k], axis=axis) == top
    return np.squeeze(held, axis=axis) > 1


def _guard_argmax(codes: np.ndarray, logp: np.ndarray, axis: int) -> int:
    """Nudge ``codes`` in place so that ``argmax(codes) == argmax(logp)`` along ``axis``.

    Rounding is monotone, so the wanted class always holds a maximal code; only a tie with an
    earlier class can steal the argmax, so only pixels whose top code is tied are examined
    (two full-size argmaxes cost 10x the rest of the encoding). The wanted code is raised by
    one step where it is below 0, else the earlier tied codes (all 0) are lowered to -1.
    Returns the number of pixels fixed.
    """
    if codes.ndim == 1:  # one pixel: give it a pixel axis (a view, so edits land in codes)
        return _guard_argmax(codes[:, None], np.asarray(logp)[:, None], 0)
    tied_mask = _tied_top(codes, axis)  # candidates; every other pixel is already right
    flat = np.flatnonzero(tied_mask)  # 1-D: several times faster than an N-D np.nonzero
    if len(flat) == 0:
        return 0
    tied = np.unravel_index(flat, tied_mask.shape)
    axis %= codes.ndim
    at = [(*tied[:axis], k, *tied[axis:]) for k in range(codes.shape[axis])]  # class k's
    rows = np.stack([codes[i] for i in at], axis=1)  # (M, C) the tied pixels' codes
    want = np.argmax(np.stack([logp[i] for i in at], axis=1), axis=1)  # (M,)
    bad = np.argmax(rows, axis=1) != want  # (M,) the tied pixels whose argmax flipped
    n_bad = int(bad.sum())
    if n_bad == 0:
        return 0
    k = want[bad]  # (N,)
    fix = rows[bad]  # (N, C)
    idx = np.arange(n_bad)
    can_raise = fix[idx, k] < CODE_MAX
    fix[idx[can_raise], k[can_raise]] += 1
    earlier = np.arange(fix.shape[1])[None, :] < k[:, None]  # (N, C)
    lower = ~can_raise[:, None] & earlier & (fix == CODE_MAX)
    fix[lower] -= 1
    rows[bad] = fix
    for c, i in enumerate(at):
        codes[i] = rows[:, c]
    return n_bad


def encode_logprobs(logp: np.ndarray, axis: int = -3) -> np.ndarray:
    """Encode float log-probabilities as argmax-preserving int8 codes.

    Args:
        logp: log-probabilities, e.g. ``(..., C, H, W)``; ``-inf`` is allowed, NaN is not.
        axis: the class axis.

    Returns:
        int8 codes of the same shape, ``round(logp * 8)`` clipped to ``[-128, 0]`` and nudged
        by one step where rounding would change ``np.argmax`` along ``axis``.

    Raises:
        StoreError: on a non-float input, NaN, or an out-of-range axis.
    """
    x = _check_logp(logp, axis)
    scaled = np.rint(x * LOGP_SCALE)  # exact scaling by a power of two, monotone rounding
    codes = np.clip(scaled, CODE_MIN, CODE_MAX).astype(np.int8)
    n_fixed = _guard_argmax(codes, x, axis)
    if n_fixed:
        logger.debug("argmax guard nudged %d pixels", n_fixed)
    return codes


def _log_softmax(z: np.ndarray, axis: int) -> np.ndarray:
    m = np.max(z, axis=axis, keepdims=True)
    shifted = z - m
    return shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))


def decode_logprobs(codes: np.ndarray, axis: int = -3) -> np.ndarray:
    """Decode int8 codes to normalised float32 log-probabilities.

    Args:
        codes: int8 codes, e.g. ``(..., C, H, W)``.
        axis: the class axis.

    Returns:
        float32 ``log_softmax(codes / 8)`` along ``axis``, same shape as ``codes``.
    """
    c = np.asarray(codes)
    if c.dtype != np.int8:
        raise StoreError(f"codes must be int8, got dtype {c.dtype}; encode with encode_logprobs.")
    z = c.astype(np.float32) / np.float32(LOGP_SCALE)
    return _log_softmax(z, axis).astype(np.float32, copy=False)


def encoding_error(logp: np.ndarray, axis: int = -3, tau: float = 1.0) -> dict[str, float]:
    """Measure the error of one encode/decode round trip.

    Args:
        logp: float log-probabilities, e.g. ``(..., C, H, W)`` (renormalised here first).
        axis: the class axis.
        tau: distillation temperature; the KL compares ``softmax(log p / tau)`` maps.

    Returns:
        ``max_abs_logp_error`` (codes / 8 vs input before renormalisation, nudged entries
        included, over entries at or above the clip floor -16), ``max_abs_prob_error``,
        ``mean_kl`` (nats/pixel, ``KL(p_tau || q_tau)`` averaged over all non-class
        positions) and ``argmax_flips``.
    """
    x = _check_logp(logp, axis).astype(np.float64)
    codes = encode_logprobs(x, axis)
    in_range = x >= CODE_MIN / LOGP_SCALE
    diff = np.abs(codes.astype(np.float64) / LOGP_SCALE - x)
    p_log = _log_softmax(x, axis)
    q_log = decode_logprobs(codes, axis).astype(np.float64)
    pt_log = _log_softmax(p_log / tau, axis)
    qt_log = _log_softmax(q_log / tau, axis)
    pt = np.exp(pt_log)
    with np.errstate(invalid="ignore"):  # 0 * (-inf) where p = 0 is masked out below
        kl_terms = np.where(pt > 0, pt * (pt_log - qt_log), 0.0)
    flips = np.argmax(codes, axis=axis) != np.argmax(x, axis=axis)
    return {
        "max_abs_logp_error": float(diff[in_range].max(initial=0.0)),
        "max_abs_prob_error": float(np.abs(np.exp(p_log) - np.exp(q_log)).max()),
        "mean_kl": float(np.sum(kl_terms, axis=axis).mean()),
        "argmax_flips": int(flips.sum()),
    }
