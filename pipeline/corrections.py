"""Correction rules beside the paper's SC (issue 17): does SC's choice of vector matter?

The paper's SC (:func:`pipeline.sc.similarity_correct`, rule ``nearest``) gives each remaining
false pixel of GT class c the whole soft vector of its nearest correct class-c pixel (cosine
of T's features). Measured on the polyp set, those copies are barely correct (median p ≈ 0.53):
the nearest neighbour of a hard pixel is itself a low-margin pixel. The rules here change only
which vector a false pixel gets, from the same database (the correct class-c pixels of the
same image, else the cross-image bank):

- ``random``: a uniformly random database pixel (does similarity matter?);
- ``mean``: the mean vector of the database (a class-mean confidence, as Online Label
  Smoothing's class mean of correctly classified samples; Zhang et al. 2021);
- ``confident``: the nearest database pixel among those whose class-c probability is at least
  the database's ``quantile`` (0.5: its median) — SC that keeps confidence;
- ``knn``: the mean vector of the ``k`` nearest database pixels (noisy-label relabelling by
  neighbour averaging).

Each returns vectors whose argmax is c whenever every database vector's is: a mean of vectors
that all have argmax c keeps argmax c (the inequalities p_c > p_j (j < c), p_c >= p_j (j > c)
survive averaging); SC's tie guard still replaces any vector that does not.

``swap`` is Knowledge Adjustment's correction (Wen et al. 2019, "Preparing lessons"): at each
false pixel the probabilities of the GT class and the argmax class trade places, so the
teacher's map stays where it was right and its margins move only where it was wrong; for C > 2
only those two entries move. It needs no features and no database.

Every function is pure (tensors in, tensors out); tie handling follows ``torch.argmax``
(lowest class index), as everywhere in this package.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from pipeline.check import check_shape, class_argmax
from pipeline.search import nearest_neighbours

Rule = Literal["nearest", "random", "mean", "confident", "knn", "swap"]
RULES: tuple[str, ...] = ("nearest", "random", "mean", "confident", "knn", "swap")
COPY_RULES: tuple[str, ...] = ("nearest", "random", "mean", "confident", "knn")


def confident_rows(db_soft: torch.Tensor, c: int, quantile: float) -> torch.Tensor:
    """(n_db,) bool: database vectors whose class-c probability is >= its ``quantile``.

    The quantile is ``torch.quantile``'s (linear interpolation) over the database's p_c, so
    the most confident row is always kept and ``quantile`` 0 keeps every row.
    """
    if not 0.0 <= quantile <= 1.0:
        raise ValueError(f"quantile must lie in [0, 1]; got {quantile}.")
    p_c = db_soft[:, c].double()
    return p_c >= torch.quantile(p_c, quantile)


def knn_indices(
    queries: torch.Tensor, database: torch.Tensor, k: int, batch_size: int = 4096
) -> torch.Tensor:
    """(Q, min(k, N)) indices of the ``k`` database rows most cosine-similar to each query.

    Exact (one matmul per chunk of ``batch_size`` queries, ``torch.topk``); rows are
    L2-normalised first, as in SC.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1; got {k}.")
    check_shape(queries, "Q D", "queries")
    check_shape(database, f"N {queries.shape[1]}", "database")
    if len(database) == 0:
        raise ValueError("database is empty (N == 0): there is no neighbour to return.")
    q, db = F.normalize(queries.float(), dim=1), F.normalize(database.float(), dim=1)
    k = min(k, len(db))
    out = [
        (q[lo : lo + batch_size] @ db.T).topk(k, dim=1).indices
        for lo in range(0, len(q), batch_size)
    ]
    if not out:
        return torch.zeros(0, k, dtype=torch.int64, device=queries.device)
    return torch.cat(out)


def pick_vectors(
    rule: str,
    q_feats: torch.Tensor,
    db_feats: torch.Tensor,
    db_soft: torch.Tensor,
    c: int,
    *,
    backend: str = "auto",
    batch_size: int = 4096,
    k: int = 8,
    quantile: float = 0.5,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The soft vector (n_q, C) each query of GT class ``c`` gets under a copy ``rule``.

    Args:
        rule: one of :data:`COPY_RULES`.
        q_feats: (n_q, F) features of the false pixels.
        db_feats: (n_db, F) features of the database (correct class-c pixels).
        db_soft: (n_db, C) their soft vectors.
        c: the GT class.
        backend, batch_size: nearest-neighbour search (``nearest``, ``confident``).
        k: neighbours averaged by ``knn``.
        quantile: ``confident`` searches only rows at or above this quantile of p_c.
        generator: the source of ``random``'s draws (required for ``random``; CPU).
    """
    n_q = len(q_feats)
    if rule == "nearest":
        nn = nearest_neighbours(q_feats, db_feats, backend, normalize=True, batch_size=batch_size)
        return db_soft[nn]
    if rule == "confident":
        keep = torch.nonzero(confident_rows(db_soft, c, quantile)).squeeze(1)
        nn = nearest_neighbours(
            q_feats, db_feats[keep], backend, normalize=True, batch_size=batch_size
        )
        return db_soft[keep[nn]]
    if rule == "knn":
        idx = knn_indices(q_feats, db_feats, k, batch_size)  # (n_q, k')
        return db_soft[idx].mean(dim=1)
    if rule == "mean":
        return db_soft.mean(dim=0, keepdim=True).expand(n_q, -1).clone()
    if rule == "random":
        if generator is None:
            raise ValueError("rule 'random' needs a generator (one per image).")
        draw = torch.randint(len(db_soft), (n_q,), generator=generator, device=generator.device)
        return db_soft[draw.to(db_soft.device)]
    raise ValueError(f"unknown copy rule {rule!r}; choose one of {', '.join(COPY_RULES)}.")


def swap_correct(
    probs: torch.Tensor, gt: torch.Tensor, smoothing: float = 0.1, right: torch.Tensor | None = None
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Knowledge Adjustment's swap: at each false pixel, p[gt] and p[argmax] trade places.

    A pixel whose swapped vector still does not have argmax = GT (a tie: another class holds
    the same maximum at a lower index, e.g. 0.5 / 0.5 in a binary map) gets the smoothed
    one-hot of :func:`pipeline.sc.smoothed_onehot` instead, as SC's tie guard does.

    Args:
        probs: (B, C, H, W) probabilities.
        gt: (B, H, W) long.
        smoothing: ε of the tie fallback.
        right: (B, H, W) bool ``argmax(probs) == gt`` when the caller has it already.

    Returns:
        (corrected (B, C, H, W), per-image counts {"sc_in_image": swapped, "sc_bank": 0,
        "sc_onehot": tie fallbacks} -> (B,) int64 on the CPU). Argmax == GT everywhere.

    Raises:
        RuntimeError: if the all-correct invariant fails afterwards (a bug).
    """
    from pipeline.sc import check_sc_inputs, smoothed_onehot

    sizes = check_sc_inputs(probs, probs[:, :1], gt, right)  # no features: a 1-channel stand-in
    pred = class_argmax(probs, 1)  # (B, H, W)
    wrong = pred != gt if right is None else ~right
    g, p = gt.unsqueeze(1), pred.unsqueeze(1)  # (B, 1, H, W)
    p_gt, p_pred = probs.gather(1, g), probs.gather(1, p)
    out = probs.clone()
    out.scatter_(1, g, torch.where(wrong.unsqueeze(1), p_pred, p_gt))
    out.scatter_(1, p, torch.where(wrong.unsqueeze(1), p_gt, p_pred))
    tie = class_argmax(out, 1) != gt  # only where the maximum is shared
    if tie.any():
        fill = smoothed_onehot(gt[tie], sizes["C"], smoothing, probs.dtype)  # (n, C)
        out.permute(0, 2, 3, 1)[tie] = fill
    n_bad = int((class_argmax(out, 1) != gt).sum())
    if n_bad:
        raise RuntimeError(f"swap left {n_bad} pixels whose argmax differs from the GT; a bug.")
    n_tie = tie.flatten(1).sum(1).cpu()
    n_wrong = wrong.flatten(1).sum(1).cpu()
    zeros = torch.zeros_like(n_tie)
    return out, {"sc_in_image": n_wrong - n_tie, "sc_bank": zeros, "sc_onehot": n_tie}
