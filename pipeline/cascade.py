"""The correction cascade: Y^I (teacher) -> Y^F (TA_f) -> Y^B (TA_b) -> Y^U (SC).

Rule "replace-if-correct": an assistant's vector replaces the previous one only where the
previous argmax is wrong and the assistant's is right, so a correct pixel never turns wrong.
All maps are softmax probabilities (B, C, H, W); argmax ties resolve to the lowest class.
The SC names are re-exported from :mod:`pipeline.sc`.
"""

from __future__ import annotations

import logging

import torch

from pipeline.check import check_same_shape, check_shape, class_argmax
from pipeline.sc import (
    SC_COUNT_KEYS,
    ClassBank,
    SCConfig,
    check_label_map,
    needs_bank,
    sample_correct_pixels,
    similarity_correct,
    smoothed_onehot,
)
from storage_schema import VARIANTS  # one definition, shared with the label store

__all__ = [
    "SC_COUNT_KEYS",
    "VARIANTS",
    "ClassBank",
    "SCConfig",
    "build_variants",
    "count_false",
    "false_pixels",
    "needs_bank",
    "replace_if_correct",
    "sample_correct_pixels",
    "similarity_correct",
    "smoothed_onehot",
]

logger = logging.getLogger(__name__)


def _check_probs_gt(probs: torch.Tensor, gt: torch.Tensor, name: str = "probs") -> None:
    """Shapes (B, C, H, W) and (B, H, W) that agree, GT ids in [0, C)."""
    sizes = check_shape(probs, "B C H W", name)
    check_shape(gt, f"{sizes['B']} {sizes['H']} {sizes['W']}", "gt")
    check_label_map(gt, sizes["C"])


def false_pixels(probs: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """(B, H, W) bool: argmax(probs) != gt. probs (B, C, H, W), gt (B, H, W) long."""
    _check_probs_gt(probs, gt)
    return class_argmax(probs, 1) != gt


def count_false(probs: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """(B,) int64 number of false pixels per image."""
    return false_pixels(probs, gt).flatten(1).sum(dim=1)


def replace_if_correct(
    y_prev: torch.Tensor, y_assist: torch.Tensor, gt: torch.Tensor
) -> torch.Tensor:
    """The assistant's vector where ``y_prev`` is wrong and ``y_assist`` right, else ``y_prev``.

    Args:
        y_prev: (B, C, H, W) probabilities so far.
        y_assist: (B, C, H, W) the assistant's probabilities.
        gt: (B, H, W) long.

    Returns:
        (B, C, H, W) a new tensor.
    """
    check_same_shape(y_prev, y_assist, ("y_prev", "y_assist"))
    _check_probs_gt(y_prev, gt, "y_prev")
    take = (class_argmax(y_prev, 1) != gt) & (class_argmax(y_assist, 1) == gt)  # (B, H, W)
    return torch.where(take.unsqueeze(1), y_assist.to(y_prev.dtype), y_prev)


def build_variants(
    p_t: torch.Tensor,
    p_f: torch.Tensor,
    p_b: torch.Tensor,
    feats: torch.Tensor,
    gt: torch.Tensor,
    cfg: SCConfig,
    bank: ClassBank | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, dict[str, int]]]:
    """Every stored soft-label variant (paper Table 2 rows) of a batch.

    Args:
        p_t, p_f, p_b: (B, C, H, W) softmax probabilities of T, TA_f and TA_b.
        feats: (B, F, H, W) the teacher's features for SC.
        gt: (B, H, W) long.
        cfg: SC settings.
        bank: optional cross-image bank for SC.

    Returns:
        (variants in :data:`VARIANTS` order, SC counts {"teacher_sc": {...}, "plc": {...}}).
        teacher = P_T; teacher_sc = SC(P_T); teacher_fa = Y^F = ric(P_T, P_f);
        teacher_ba = ric(P_T, P_b); teacher_fa_ba = Y^B = ric(Y^F, P_b); plc = Y^U = SC(Y^B).
    """
    check_same_shape(p_t, p_f, ("p_t", "p_f"))
    check_same_shape(p_t, p_b, ("p_t", "p_b"))
    y_f = replace_if_correct(p_t, p_f, gt)
    y_b = replace_if_correct(y_f, p_b, gt)
    teacher_sc, info_sc = similarity_correct(p_t, feats, gt, cfg, bank)
    plc, info_plc = similarity_correct(y_b, feats, gt, cfg, bank)
    variants = {
        "teacher": p_t,
        "teacher_sc": teacher_sc,
        "teacher_fa": y_f,
        "teacher_ba": replace_if_correct(p_t, p_b, gt),
        "teacher_fa_ba": y_b,
        "plc": plc,
    }
    return variants, {"teacher_sc": info_sc, "plc": info_plc}
