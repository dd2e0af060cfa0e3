"""The correction cascade, driven by the variant table of :mod:`pipeline.variants`.

Rule "replace-if-correct": an assistant's vector replaces the previous one only where the
previous argmax is wrong and the assistant's is right, so a correct pixel never turns wrong.
Y^I (teacher) -> Y^F (+TA_f) -> Y^B (+TA_b) -> Y^U (SC). All maps are softmax probabilities
(B, C, H, W); argmax ties resolve to the lowest class. The SC names are re-exported from
:mod:`pipeline.sc`.

A batch goes through two steps so that a caller can decide between them whether SC needs the
cross-image bank: :func:`cascade` (every map before SC, with its correct-pixel mask) and
:func:`finish` (SC and the controls). :func:`build_variants` runs both.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from pipeline.check import check_same_shape, check_shape, class_argmax
from pipeline.corrections import swap_correct
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
from pipeline.variants import ASSISTANTS, VARIANTS, Variant, sc_base, sc_bases

__all__ = [
    "SC_COUNT_KEYS",
    "VARIANTS",
    "Cascade",
    "ClassBank",
    "SCConfig",
    "build_variants",
    "cascade",
    "control_map",
    "count_false",
    "false_pixels",
    "finish",
    "needs_bank",
    "replace_if_correct",
    "sample_correct_pixels",
    "sc_bases",
    "similarity_correct",
    "smoothed_onehot",
]

logger = logging.getLogger(__name__)


def _check_probs_gt(probs: torch.Tensor, gt: torch.Tensor, name: str = "probs") -> dict[str, int]:
    """Shapes (B, C, H, W) and (B, H, W) that agree, GT ids in [0, C)."""
    sizes = check_shape(probs, "B C H W", name)
    check_shape(gt, f"{sizes['B']} {sizes['H']} {sizes['W']}", "gt")
    check_label_map(gt, sizes["C"])
    return sizes


def false_pixels(probs: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """(B, H, W) bool: argmax(probs) != gt. probs (B, C, H, W), gt (B, H, W) long."""
    _check_probs_gt(probs, gt)
    return class_argmax(probs, 1) != gt


def count_false(probs: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """(B,) int64 number of false pixels per image."""
    return false_pixels(probs, gt).flatten(1).sum(dim=1)


def _ric(
    y_prev: torch.Tensor,
    right_prev: torch.Tensor,
    y_assist: torch.Tensor,
    right_assist: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Replace-if-correct from known correct-pixel masks; returns (map, its mask, taken).

    A taken pixel gets the assistant's vector, whose argmax is right, so the new mask is
    ``right_prev | right_assist`` without another argmax (exact when the dtypes agree).
    """
    take = ~right_prev & right_assist  # (B, H, W)
    out = torch.where(take.unsqueeze(1), y_assist.to(y_prev.dtype), y_prev)
    return out, right_prev | right_assist, take


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
    right_prev = class_argmax(y_prev, 1) == gt
    return _ric(y_prev, right_prev, y_assist, class_argmax(y_assist, 1) == gt)[0]


@dataclass
class Cascade:
    """The maps before SC of one batch, each with its correct-pixel mask.

    Attributes:
        maps: variant name -> (B, C, H, W) probabilities, for every team row without SC (the
            SC bases among them).
        right: variant name -> (B, H, W) bool, ``argmax == gt``.
        gt: (B, H, W) long.
        num_classes: C.
        dtype: the teacher map's dtype (the controls take it too).
        pred: variant name -> (B, H, W) long, the map's argmax (each network's argmax taken
            once, a replaced pixel taking the assistant's).
    """

    maps: dict[str, torch.Tensor]
    right: dict[str, torch.Tensor]
    gt: torch.Tensor
    num_classes: int
    dtype: torch.dtype
    pred: dict[str, torch.Tensor]

    def needs_bank(self, base: str) -> torch.Tensor:
        """(B,) bool: SC of map ``base`` needs the cross-image bank for the image."""
        return needs_bank(self.maps[base], self.gt, self.right[base])


def _check_team(
    p_t: torch.Tensor, assistants: Mapping[str, torch.Tensor], gt: torch.Tensor
) -> None:
    _check_probs_gt(p_t, gt, "p_t")
    unknown = [k for k in assistants if k not in ASSISTANTS]
    if unknown:
        raise ValueError(f"unknown assistant maps {unknown}; expected keys {list(ASSISTANTS)}.")
    for key, p in assistants.items():
        check_same_shape(p_t, p, ("p_t", f"assistant {key!r}"))


def cascade(
    p_t: torch.Tensor,
    assistants: Mapping[str, torch.Tensor],
    gt: torch.Tensor,
    variants: tuple[Variant, ...] = VARIANTS,
) -> Cascade:
    """Every team map before SC that ``variants`` need, computed once per assistant prefix.

    Args:
        p_t: (B, C, H, W) the teacher's probabilities.
        assistants: assistant key (``fp``, ``bd``) -> (B, C, H, W) probabilities.
        gt: (B, H, W) long.
        variants: the rows to serve (default: the whole table).

    Returns:
        The maps of the non-SC team rows and of every SC base, with their masks. Inputs are
        validated once here; each network's correct-pixel mask is computed once.
    """
    _check_team(p_t, assistants, gt)
    needed = {v.name: v for v in variants if v.source == "team" and not v.sc}
    needed |= {b.name: b for b in (sc_base(v) for v in variants if v.sc)}
    pred_of = {key: class_argmax(p, 1) for key, p in assistants.items()}  # (B, H, W)
    pred_t = class_argmax(p_t, 1)
    # assistant prefix -> (map, its correct-pixel mask, its argmax)
    by_chain: dict[tuple[str, ...], tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {
        (): (p_t, pred_t == gt, pred_t)
    }

    def chain(keys: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if keys not in by_chain:
            prev, right_prev, pred_prev = chain(keys[:-1])
            last = keys[-1]
            if last not in assistants:
                raise ValueError(
                    f"the cascade needs assistant map {last!r}; pass it in assistants."
                )
            out, right, take = _ric(prev, right_prev, assistants[last], pred_of[last] == gt)
            by_chain[keys] = (out, right, torch.where(take, pred_of[last], pred_prev))
        return by_chain[keys]

    maps, right, pred = {}, {}, {}
    for name, v in needed.items():
        maps[name], right[name], pred[name] = chain(v.assistants)
    return Cascade(maps, right, gt, p_t.shape[1], p_t.dtype, pred)


def control_map(
    variant: Variant, gt: torch.Tensor, num_classes: int, smoothing: float, dtype: torch.dtype
) -> torch.Tensor:
    """(B, C, H, W) soft label of a control row: one-hot GT or smoothed one-hot GT.

    The smoothed row holds ``1 - smoothing`` on the GT class and ``smoothing / (C - 1)``
    elsewhere, the values of :func:`smoothed_onehot`, built in the (B, C, H, W) layout.
    """
    if variant.source not in ("gt", "gt_smooth"):
        raise ValueError(f"variant {variant.name!r} is not a control (source {variant.source!r}).")
    classes = torch.arange(num_classes, device=gt.device).view(1, -1, 1, 1)
    hit = gt.unsqueeze(1) == classes  # (B, C, H, W)
    if variant.source == "gt":
        return hit.to(dtype)
    off = smoothing / (num_classes - 1) if num_classes > 1 else 0.0
    on, off_t = (torch.tensor(v, dtype=dtype, device=gt.device) for v in (1.0 - smoothing, off))
    return torch.where(hit, on, off_t)


def finish(
    casc: Cascade,
    feats: torch.Tensor,
    cfg: SCConfig,
    banks: Mapping[str, ClassBank] | None = None,
    variants: tuple[Variant, ...] = VARIANTS,
    gt_smoothing: float = 0.1,
    seeds: Sequence[int] | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, dict[str, torch.Tensor]]]:
    """Every row of ``variants`` from the cascade: SC rows corrected, controls built.

    Args:
        casc: the batch's :func:`cascade`.
        feats: (B, F, H, W) the teacher's features for SC.
        cfg: SC settings.
        banks: SC base name -> cross-image bank (on the maps' device), or None.
        variants: the rows to return, in this order.
        gt_smoothing: epsilon of ``gt_smooth`` (in [0, 0.5)).
        seeds: one per image, the seed of the ``random`` rule's draws for that image (so a
            row depends on the image, never on batching); required when a ``random`` row is
            asked for.

    Returns:
        (variant -> (B, C, H, W) probabilities, SC row -> per-image counts (B,) of
        :data:`SC_COUNT_KEYS`).
    """
    if not 0.0 <= gt_smoothing < 0.5:
        raise ValueError(f"gt_smoothing must lie in [0, 0.5); got {gt_smoothing}.")
    out: dict[str, torch.Tensor] = {}
    counts: dict[str, dict[str, torch.Tensor]] = {}
    for v in variants:
        if v.source != "team":
            out[v.name] = control_map(v, casc.gt, casc.num_classes, gt_smoothing, casc.dtype)
        elif v.sc and v.rule == "swap":
            base = sc_base(v).name
            out[v.name], counts[v.name] = swap_correct(
                casc.maps[base], casc.gt, cfg.smoothing, casc.right[base]
            )
        elif v.sc:
            base = sc_base(v).name
            bank = banks.get(base) if banks else None
            generators = None
            if v.rule == "random":
                if seeds is None or len(seeds) != len(casc.gt):
                    raise ValueError(f"row {v.name!r} needs one seed per image (seeds=...).")
                generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
            out[v.name], counts[v.name] = similarity_correct(
                casc.maps[base], feats, casc.gt, cfg, bank, right=casc.right[base],
                rule=v.rule, generators=generators,
            )  # fmt: skip
        else:
            out[v.name] = casc.maps[v.name]
    return out, counts


def build_variants(
    p_t: torch.Tensor,
    assistants: Mapping[str, torch.Tensor],
    feats: torch.Tensor,
    gt: torch.Tensor,
    cfg: SCConfig,
    banks: Mapping[str, ClassBank] | None = None,
    variants: tuple[Variant, ...] = VARIANTS,
    gt_smoothing: float = 0.1,
    seeds: Sequence[int] | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, dict[str, torch.Tensor]]]:
    """Every soft-label variant of a batch: :func:`cascade` then :func:`finish`.

    Args:
        p_t: (B, C, H, W) softmax probabilities of T.
        assistants: ``{"fp": P_f, "bd": P_b}``, each (B, C, H, W).
        feats: (B, F, H, W) the teacher's features for SC.
        gt: (B, H, W) long.
        cfg: SC settings.
        banks: SC base name (:func:`pipeline.variants.sc_bases`) -> cross-image bank.
        variants: the rows to compute (default: the whole table), returned in this order.
        gt_smoothing: epsilon of the ``gt_smooth`` control.
        seeds: per-image seeds of the ``random`` rule (see :func:`finish`).

    Returns:
        (variant -> (B, C, H, W), SC row -> per-image counts). With the default table:
        teacher = P_T; teacher_sc = SC(P_T); teacher_fa = Y^F = ric(P_T, P_f);
        teacher_ba = ric(P_T, P_b); teacher_fa_ba = Y^B = ric(Y^F, P_b); plc = Y^U = SC(Y^B);
        gt = one-hot GT; gt_smooth = smoothed one-hot GT.
    """
    casc = cascade(p_t, assistants, gt, variants)
    return finish(casc, feats, cfg, banks, variants, gt_smoothing, seeds)
