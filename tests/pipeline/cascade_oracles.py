"""Independent, loop-based reference implementations for the cascade and SC tests."""

from __future__ import annotations

import numpy as np
import torch

from pipeline import search

# faiss-cpu is an optional extra ([faiss-cpu]); its search backend is tested where installed
FAISS_CPU: tuple[str, ...] = ("faiss-cpu",) if search._faiss() is not None else ()


def make_case(
    seed: int, b: int, c: int, h: int, w: int, f: int, scale: float = 2.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random (p_t, p_f, p_b, feats, gt) with continuous values (no exact ties)."""
    g = torch.Generator().manual_seed(seed)
    probs = [torch.softmax(torch.randn(b, c, h, w, generator=g) * scale, dim=1) for _ in range(3)]
    feats = torch.randn(b, f, h, w, generator=g)
    gt = torch.randint(0, c, (b, h, w), generator=g)
    return probs[0], probs[1], probs[2], feats, gt


def ric_loop(prev: torch.Tensor, assist: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Replace-if-correct, one pixel at a time."""
    out = prev.clone()
    b, _, h, w = prev.shape
    for i in range(b):
        for y in range(h):
            for x in range(w):
                g = int(gt[i, y, x])
                if int(prev[i, :, y, x].argmax()) != g and int(assist[i, :, y, x].argmax()) == g:
                    out[i, :, y, x] = assist[i, :, y, x]
    return out


def _cos64(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-300))


def sc_loop(
    probs: torch.Tensor,
    feats: torch.Tensor,
    gt: torch.Tensor,
    eps: float,
    bank: tuple[dict[int, torch.Tensor], dict[int, torch.Tensor]] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """SC with a float64 brute force per false pixel.

    Returns:
        (corrected probs, margin (B, H, W) float64: best minus second-best similarity of the
        search that filled the pixel, +inf where it needed no search), so callers can excuse
        float32 near-ties.
    """
    out = probs.clone()
    b, c, h, w = probs.shape
    margin = torch.full((b, h, w), float("inf"), dtype=torch.float64)
    fs = feats.double().numpy()
    for i in range(b):
        right = [
            (y, x)
            for y in range(h)
            for x in range(w)
            if int(probs[i, :, y, x].argmax()) == int(gt[i, y, x])
        ]
        for y in range(h):
            for x in range(w):
                cls = int(gt[i, y, x])
                if int(probs[i, :, y, x].argmax()) == cls:
                    continue
                q = fs[i, :, y, x]
                cands = [(yy, xx) for (yy, xx) in right if int(gt[i, yy, xx]) == cls]
                if cands:
                    sims = [_cos64(q, fs[i, :, yy, xx]) for (yy, xx) in cands]
                    vecs = [probs[i, :, yy, xx] for (yy, xx) in cands]
                elif bank is not None and cls in bank[0] and len(bank[0][cls]):
                    sims = [_cos64(q, v.double().numpy()) for v in bank[0][cls]]
                    vecs = list(bank[1][cls])
                else:
                    vec = torch.full((c,), eps / (c - 1), dtype=probs.dtype)
                    vec[cls] = 1.0 - eps
                    out[i, :, y, x] = vec
                    continue
                order = np.argsort(sims)[::-1]
                best = vecs[order[0]]
                if int(best.argmax()) != cls:
                    best = torch.full((c,), eps / (c - 1), dtype=probs.dtype)
                    best[cls] = 1.0 - eps
                out[i, :, y, x] = best
                if len(order) > 1:
                    margin[i, y, x] = sims[order[0]] - sims[order[1]]
    return out, margin
