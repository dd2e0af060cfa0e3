"""Segmentation and distillation losses: pure tensor functions (module wrappers at the end).

Shapes: logits and teacher log-probabilities are (B, K, H, W); targets are (B, H, W) long
class indices. The temperature of a softmax over classes is applied in exactly one place,
`soften`; CWD's softmax over positions (`cwd_loss`) is a different axis and scales there.
"""

from __future__ import annotations

import logging
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pipeline.check import check_same_shape, check_shape

logger = logging.getLogger(__name__)

StudentSpace = Literal["log_probs", "logits"]


def soften(logits_or_logp: Tensor, tau: float) -> Tensor:
    """Temperature-scaled log-probabilities: ``log_softmax(x / tau, dim=1)``.

    For logits this is log softmax(z / τ). For stored log-probabilities log p it is the log of
    softmax(log p / τ) ∝ p^(1/τ): log p differs from the logits only by a per-pixel constant,
    which the softmax over classes removes, so both give the same result.

    Args:
        logits_or_logp: (B, K, ...) logits or log-probabilities, classes on dim 1.
        tau: temperature > 0.

    Returns:
        (B, K, ...) log-probabilities at temperature ``tau``.
    """
    if not tau > 0:
        raise ValueError(f"tau must be a positive temperature, got {tau!r}.")
    return F.log_softmax(logits_or_logp / tau, dim=1)


def _check_logits_target(logits: Tensor, target: Tensor) -> int:
    """Validate (B, K, H, W) logits against a (B, H, W) integer target; return K."""
    sizes = check_shape(logits, "B K H W", "logits")
    check_shape(target, "B H W", "target")
    if target.shape != (sizes["B"], sizes["H"], sizes["W"]):
        raise ValueError(
            f"target must have shape (B, H, W) = {(sizes['B'], sizes['H'], sizes['W'])} "
            f"to match logits {tuple(logits.shape)}, got {tuple(target.shape)}."
        )
    if target.dtype.is_floating_point or target.dtype == torch.bool:
        raise ValueError(f"target must hold integer class indices, got dtype {target.dtype}.")
    low, high = int(target.min()), int(target.max())
    if low < 0 or high >= sizes["K"]:
        raise ValueError(
            f"target values must lie in [0, {sizes['K'] - 1}] for {sizes['K']} classes, "
            f"got values in [{low}, {high}]."
        )
    return sizes["K"]


def dice_loss(
    logits: Tensor, target: Tensor, smooth_nr: float = 1e-5, smooth_dr: float = 1e-5
) -> Tensor:
    """Soft Dice loss, as MONAI ``DiceLoss(softmax=True, to_onehot_y=True)``.

    Per image and class (background included): 1 − (2·Σ p·g + smooth_nr) / (Σ p + Σ g +
    smooth_dr), sums over pixels; then the mean over images and classes.

    Args:
        logits: (B, K, H, W) raw scores.
        target: (B, H, W) long class indices in [0, K).
        smooth_nr, smooth_dr: numerator and denominator smoothing.

    Returns:
        Scalar loss.
    """
    classes = _check_logits_target(logits, target)
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()  # pixel sums in half precision lose too much
    probs = torch.softmax(logits, dim=1)
    onehot = F.one_hot(target.long(), classes).permute(0, 3, 1, 2).to(probs.dtype)  # (B,K,H,W)
    intersection = (probs * onehot).sum(dim=(2, 3))  # (B, K)
    denominator = probs.sum(dim=(2, 3)) + onehot.sum(dim=(2, 3))  # (B, K)
    return (1.0 - (2.0 * intersection + smooth_nr) / (denominator + smooth_dr)).mean()


def seg_loss(
    logits: Tensor, target: Tensor, ce_weight: float = 0.5, dice_weight: float = 0.5
) -> Tensor:
    """L_Seg = ce_weight · CE + dice_weight · Dice (MONAI ``DiceCELoss`` with those lambdas).

    Args:
        logits: (B, K, H, W) raw scores.
        target: (B, H, W) long class indices in [0, K).
        ce_weight, dice_weight: non-negative weights of the two terms.

    Returns:
        Scalar loss.
    """
    if ce_weight < 0 or dice_weight < 0:
        raise ValueError(
            f"ce_weight and dice_weight must be >= 0, got {ce_weight!r} and {dice_weight!r}."
        )
    dice = dice_loss(logits, target)
    return ce_weight * F.cross_entropy(logits, target.long()) + dice_weight * dice


def _check_pair(student: Tensor, teacher: Tensor) -> None:
    check_shape(student, "B K H W", "student_logits")
    check_same_shape(student, teacher, ("student_logits", "teacher_logp"))


def kd_loss(student_logits: Tensor, teacher_logp: Tensor, tau: float = 1.0) -> Tensor:
    """Pixel-wise KD: τ² · KL(p_t,τ ‖ p_s,τ), teacher as target, mean over pixels.

    ``kl_div(soften(s, τ), soften(t, τ), log_target=True, reduction='none').sum(1).mean() · τ²``.

    Args:
        student_logits: (B, K, H, W) student logits.
        teacher_logp: (B, K, H, W) teacher log-probabilities (or logits: same result); it
            should carry no gradient.
        tau: temperature > 0.

    Returns:
        Scalar loss (nats per pixel, times τ²).
    """
    _check_pair(student_logits, teacher_logp)
    log_ps, log_pt = soften(student_logits, tau), soften(teacher_logp, tau)
    kl = F.kl_div(log_ps, log_pt, log_target=True, reduction="none")  # (B, K, H, W)
    return kl.sum(dim=1).mean() * tau**2


def masked_kd_loss(
    student_logits: Tensor, teacher_logp: Tensor, mask: Tensor, tau: float = 1.0
) -> Tensor:
    """:func:`kd_loss` over the pixels of ``mask`` only, normalised by their count.

    ``plc distill --kd-pixels correct``: the "don't correct, mask" control, KD only where the
    soft label's argmax equals the GT. A mask that keeps every pixel returns exactly
    :func:`kd_loss` (the same operations, so the same bits); one that keeps none returns 0
    (still connected to the graph).

    Args:
        student_logits: (B, K, H, W) student logits.
        teacher_logp: (B, K, H, W) teacher log-probabilities.
        mask: (B, H, W) bool, the pixels that carry the KD term.
        tau: temperature > 0.

    Returns:
        Scalar loss: τ² · Σ_masked KL / #masked.
    """
    _check_pair(student_logits, teacher_logp)
    b, _, h, w = student_logits.shape
    check_shape(mask, f"{b} {h} {w}", "mask")
    if mask.dtype != torch.bool:
        raise ValueError(f"mask must be bool, got {mask.dtype}.")
    if bool(mask.all()):
        return kd_loss(student_logits, teacher_logp, tau)
    log_ps, log_pt = soften(student_logits, tau), soften(teacher_logp, tau)
    kl = F.kl_div(log_ps, log_pt, log_target=True, reduction="none").sum(dim=1)  # (B, H, W)
    count = mask.sum()
    if int(count) == 0:
        return (kl * 0.0).sum()
    return kl[mask].sum() / count * tau**2


def dkd_loss(
    student_logits: Tensor,
    teacher_logp: Tensor,
    target: Tensor,
    tau: float = 1.0,
    alpha: float = 1.0,
    beta: float = 8.0,
) -> Tensor:
    """Decoupled KD (Zhao et al. 2022, "Decoupled Knowledge Distillation"), per pixel.

    With t the GT class of a pixel and p = softmax(z / τ): TCKD = KL(b_T ‖ b_S) over the
    binary split b = (p_t, 1 − p_t); NCKD = KL(p̂_T ‖ p̂_S) over the non-target classes only,
    p̂ = softmax of the non-target entries of z / τ. Loss = (α · TCKD + β · NCKD) · τ², mean
    over pixels (mdistiller's defaults α = 1, β = 8; mdistiller divides the summed KL by the
    batch size, here by the number of pixels). Stored log-probabilities stand in for the
    teacher's logits: both softmaxes are invariant to the per-pixel constant between them.

    **Binary segmentation**: a pixel has one non-target class, p̂ = (1) for both networks, so
    NCKD is identically 0 and DKD is α · KD (tested); DKD's decoupling needs C > 2.

    Args:
        student_logits: (B, K, H, W).
        teacher_logp: (B, K, H, W) teacher log-probabilities.
        target: (B, H, W) long GT classes.
        tau, alpha, beta: temperature (> 0) and the weights of TCKD and NCKD (>= 0).
    """
    _check_pair(student_logits, teacher_logp)
    b, k, h, w = student_logits.shape
    check_shape(target, f"{b} {h} {w}", "target")
    if not tau > 0:
        raise ValueError(f"tau must be a positive temperature, got {tau!r}.")
    zs, zt = student_logits / tau, teacher_logp / tau
    onehot = F.one_hot(target, k).permute(0, 3, 1, 2).bool()  # (B, K, H, W)
    log_ps, log_pt = F.log_softmax(zs, dim=1), F.log_softmax(zt, dim=1)
    # TCKD: binary (target, rest) distributions, in log space for stability
    lt_s = log_ps.masked_fill(~onehot, 0).sum(1)  # log p_t (B, H, W)
    lt_t = log_pt.masked_fill(~onehot, 0).sum(1)
    lr_s, lr_t = (
        torch.log1p(-lt_s.exp().clamp(max=1 - 1e-7)),
        torch.log1p(-lt_t.exp().clamp(max=1 - 1e-7)),
    )
    tckd = lt_t.exp() * (lt_t - lt_s) + lr_t.exp() * (lr_t - lr_s)  # (B, H, W)
    # NCKD: softmax over the non-target classes (the target pushed to -inf)
    if k > 2:
        fill = torch.finfo(zs.dtype).min
        ln_s = F.log_softmax(zs.masked_fill(onehot, fill), dim=1)
        ln_t = F.log_softmax(zt.masked_fill(onehot, fill), dim=1)
        nckd = (ln_t.exp() * (ln_t - ln_s)).masked_fill(onehot, 0).sum(1)
    else:
        nckd = torch.zeros_like(tckd)
    return (alpha * tckd + beta * nckd).mean() * tau**2


def _pearson(a: Tensor, b: Tensor, eps: float = 1e-8) -> Tensor:
    """Pearson correlation of the rows of (N, D) ``a`` and ``b``: (N,)."""
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + eps)


def dist_loss(
    student_logits: Tensor,
    teacher_logp: Tensor,
    tau: float = 1.0,
    beta: float = 1.0,
    gamma: float = 1.0,
) -> Tensor:
    """DIST (Huang et al. 2022, "Knowledge Distillation from A Stronger Teacher"), per pixel.

    Every pixel of the batch is a sample (hunto/DIST_KD's segmentation loss flattens
    (B, K, H, W) to (B·H·W, K)); with Y = softmax(z / τ): inter-class relation
    1 − mean over pixels of Pearson(Y_S[i, :], Y_T[i, :]) (across classes), intra-class
    relation 1 − mean over classes of Pearson(Y_S[:, c], Y_T[:, c]) (across the batch's
    pixels); loss = τ² (β · inter + γ · intra), β = γ = 1 as in the paper.

    **Binary segmentation**: two centred class probabilities (p − ½, ½ − p) are collinear, so
    the per-pixel Pearson is ±1 (the sign of agreement) and the inter-class term carries no
    gradient; only the intra-class term trains (tested).

    Args:
        student_logits: (B, K, H, W).
        teacher_logp: (B, K, H, W) teacher log-probabilities (softmax-invariant stand-ins for
            the logits).
        tau, beta, gamma: temperature (> 0), inter- and intra-class weights.
    """
    _check_pair(student_logits, teacher_logp)
    if not tau > 0:
        raise ValueError(f"tau must be a positive temperature, got {tau!r}.")
    k = student_logits.shape[1]
    ys = (student_logits / tau).softmax(1).permute(0, 2, 3, 1).reshape(-1, k)  # (N, K)
    yt = (teacher_logp / tau).softmax(1).permute(0, 2, 3, 1).reshape(-1, k)
    inter = 1 - _pearson(ys, yt).mean()
    intra = 1 - _pearson(ys.T, yt.T).mean()
    return tau**2 * (beta * inter + gamma * intra)


def cwd_loss(
    student_logits: Tensor,
    teacher_logp: Tensor,
    tau: float = 1.0,
    student_space: StudentSpace = "log_probs",
) -> Tensor:
    """Channel-wise distillation (Shu et al. 2021) from stored teacher log-probabilities.

    For each image and class channel c, the map is turned into a distribution over the H·W
    positions, softmax_hw(map_c / τ); the loss is KL(teacher ‖ student) summed over
    positions, times τ², summed over channels and images and divided by B·K.

    Teacher log-probabilities stand in for the teacher logits of the original. They differ
    from the logits by a per-pixel constant −logsumexp_k z_k(h, w), and a softmax over
    positions does NOT remove a per-pixel constant: the teacher's channel distribution here is
    ∝ p_c(h, w)^(1/τ) — where the probability mass of class c lies — rather than ∝
    exp(z_c(h, w) / τ). We use it as is (the store keeps no logits). By default the student is
    put on the same footing: its logits are first turned into log-probabilities
    (``student_space="log_probs"``), so the loss compares like with like, depends on the
    student only through its class probabilities, and is zero when they equal the teacher's.
    ``student_space="logits"`` feeds raw student logits, as the original CWD does.

    Args:
        student_logits: (B, K, H, W) student logits.
        teacher_logp: (B, K, H, W) teacher log-probabilities; no gradient expected.
        tau: temperature > 0.
        student_space: "log_probs" (default) or "logits", see above.

    Returns:
        Scalar loss.
    """
    _check_pair(student_logits, teacher_logp)
    if student_space not in ("log_probs", "logits"):
        raise ValueError(f"student_space must be 'log_probs' or 'logits', got {student_space!r}.")
    if not tau > 0:
        raise ValueError(f"tau must be a positive temperature, got {tau!r}.")
    student = student_logits
    if student_space == "log_probs":
        student = F.log_softmax(student_logits, dim=1)
    b, k = student.shape[:2]
    log_qs = F.log_softmax(student.reshape(b, k, -1) / tau, dim=2)  # (B, K, H·W)
    log_qt = F.log_softmax(teacher_logp.reshape(b, k, -1) / tau, dim=2)  # (B, K, H·W)
    kl = F.kl_div(log_qs, log_qt, log_target=True, reduction="sum")
    return kl * tau**2 / (b * k)


class SegLoss(nn.Module):
    """Module form of `seg_loss`."""

    def __init__(self, ce_weight: float = 0.5, dice_weight: float = 0.5) -> None:
        super().__init__()
        self.ce_weight, self.dice_weight = ce_weight, dice_weight

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """See `seg_loss`."""
        return seg_loss(logits, target, self.ce_weight, self.dice_weight)


class KDLoss(nn.Module):
    """Module form of `kd_loss`."""

    def __init__(self, tau: float = 1.0) -> None:
        super().__init__()
        self.tau = tau

    def forward(self, student_logits: Tensor, teacher_logp: Tensor) -> Tensor:
        """See `kd_loss`."""
        return kd_loss(student_logits, teacher_logp, self.tau)


class CWDLoss(nn.Module):
    """Module form of `cwd_loss`."""

    def __init__(self, tau: float = 1.0, student_space: StudentSpace = "log_probs") -> None:
        super().__init__()
        self.tau, self.student_space = tau, student_space

    def forward(self, student_logits: Tensor, teacher_logp: Tensor) -> Tensor:
        """See `cwd_loss`."""
        return cwd_loss(student_logits, teacher_logp, self.tau, self.student_space)
