"""Feature-based KD with a live teacher: FitNet, AT and EMKD (rows of ``pipeline.kd_table``).

A loss reads named feature taps of the student and the teacher (``forward_taps`` of every
registry network: ``pipeline/models``). Where the widths or grids differ, FitNet goes through
a :class:`Connector` (1×1 conv + BN on the student's map, resized to the teacher's grid),
trained with the student and kept out of the student's inference checkpoint; AT and EMKD
need none (attention maps have no channels; region affinities compare each network with
itself). The formulas are pure functions of tensors, like ``pipeline/losses``; each loss of
the table is a small ``nn.Module`` over them with the interface of :class:`LiveLoss`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pipeline.check import check_shape
from pipeline.losses import kd_loss

AT_BETA = 1000.0  # Zagoruyko & Komodakis 2017, §4: β = 10³ (the mean below divides by B·h·w)


class Connector(nn.Module):
    """FitNet's regressor: a 1×1 conv + BatchNorm from the student's channels to the
    teacher's, then a bilinear resize to the teacher's grid (CIRKD's and mdistiller's
    connector; Romero et al. 2015 used a convolutional regressor of the same role)."""

    def __init__(self, student_channels: int, teacher_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(student_channels, teacher_channels, kernel_size=1, bias=False)
        self.bn = nn.BatchNorm2d(teacher_channels)

    def forward(self, student: Tensor, size: tuple[int, int]) -> Tensor:
        """(B, Cs, h, w) -> (B, Ct, *size)."""
        y = self.bn(self.conv(student))
        if tuple(y.shape[-2:]) != tuple(size):
            y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
        return y


def fitnet_loss(student: Tensor, teacher: Tensor) -> Tensor:
    """FitNet's hint loss (Romero et al. 2015, eq. 3): the mean squared difference between the
    connected student map and the teacher's, over every element (CIRKD's ``nn.MSELoss``).

    Args:
        student: (B, C, h, w), already through the :class:`Connector`.
        teacher: (B, C, h, w), no gradient needed.
    """
    sizes = check_shape(student, "B C H W", "student")
    check_shape(teacher, f"{sizes['B']} {sizes['C']} {sizes['H']} {sizes['W']}", "teacher")
    return F.mse_loss(student, teacher.detach())


def attention_map(features: Tensor) -> Tensor:
    """AT's spatial attention (Zagoruyko & Komodakis 2017, p = 2): the channel mean of the
    squared activations, flattened and L2-normalised per image: (B, C, h, w) -> (B, h·w)."""
    check_shape(features, "B C H W", "features")
    return F.normalize(features.pow(2).mean(1).flatten(1), dim=1)


def at_loss(student: Tensor, teacher: Tensor, beta: float = AT_BETA) -> Tensor:
    """Attention transfer (Zagoruyko & Komodakis 2017, eq. 2 with p = 2, as their reference
    code): ``β · mean((Q_s − Q_t)²)`` over images and positions, Q the normalised attention
    maps; a student map on another grid is resized (bilinear) to the teacher's first.

    Args:
        student: (B, Cs, h, w) student tap (any channel count).
        teacher: (B, Ct, H, W) teacher tap.
        beta: the weight β (default 10³, the paper's).
    """
    check_shape(student, "B C H W", "student")
    check_shape(teacher, f"{student.shape[0]} C H W", "teacher")
    if student.shape[-2:] != teacher.shape[-2:]:
        student = F.interpolate(
            student, size=teacher.shape[-2:], mode="bilinear", align_corners=False
        )
    return beta * (attention_map(student) - attention_map(teacher.detach())).pow(2).mean()


def resize_to(x: Tensor, size: Sequence[int]) -> Tensor:
    """``x`` (B, C, h, w) resized bilinearly to ``size`` (unchanged when it already fits)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


def nearest_labels(target: Tensor, size: Sequence[int]) -> Tensor:
    """(B, H, W) class indices on the (h, w) grid of a tap, nearest neighbour (IFVD, EMKD,
    CIRKD all resample the GT this way)."""
    if tuple(target.shape[-2:]) == tuple(size):
        return target.long()
    resized = F.interpolate(target[:, None].float(), size=tuple(size), mode="nearest")
    return resized[:, 0].long()


# --------------------------------------------------------------------------- EMKD's terms

EMKD_ALPHA, EMKD_BETA1, EMKD_BETA2 = 0.1, 0.9, 0.9  # EMKD's train_kd.py: α, β1, β2
EMKD_TAU = 4.0  # EMKD's prediction_map_distillation(T=4)
EMKD_P = 4  # EMKD's importance_maps_distillation(exp=4)


def importance_map_loss(student: Tensor, teacher: Tensor, p: int = EMKD_P) -> Tensor:
    """EMKD's importance-map distillation (Qin et al. 2021, eq. 4): attention maps
    Q = normalise(mean_c f^p) per image, ``Σ_positions (Q_s − Q_t)²`` averaged over images;
    the student resized to the teacher's grid first. (AT with exponent p, summed over
    positions rather than averaged, without β.)"""
    check_shape(student, "B C H W", "student")
    check_shape(teacher, f"{student.shape[0]} C H W", "teacher")
    student = resize_to(student, teacher.shape[-2:])

    def q(f: Tensor) -> Tensor:
        return F.normalize(f.pow(p).mean(1).flatten(1), dim=1)

    return (q(student) - q(teacher.detach())).pow(2).sum(1).mean()


def region_prototypes(features: Tensor, labels: Tensor, classes: int) -> tuple[Tensor, Tensor]:
    """Per image and class the mean feature vector over the class's pixels.

    Args:
        features: (B, C, h, w).
        labels: (B, h, w) class indices on the same grid.
        classes: K.

    Returns:
        prototypes (B, K, C) (zero where a class is absent) and ``present`` (B, K) bool.
    """
    onehot = F.one_hot(labels, classes).to(features.dtype)  # (B, h, w, K)
    counts = onehot.sum((1, 2))  # (B, K)
    sums = torch.einsum("bchw,bhwk->bkc", features, onehot)
    return sums / counts.clamp_min(1)[..., None], counts > 0


def region_affinity_loss(student: Tensor, teacher: Tensor, target: Tensor, classes: int) -> Tensor:
    """EMKD's region affinity distillation (Qin et al. 2021, eq. 5-6): for each pair of
    classes (i < j) present in an image, the cosine between their region prototypes (mean
    feature over the GT region, the GT resampled nearest to each tap's grid); the squared
    difference between student and teacher, averaged over the images holding both classes,
    summed over pairs. (EMKD's code drops a pair for the whole batch when one image lacks a
    class, a NaN; here such an image is left out of that pair's mean.) Zero without a pair."""
    check_shape(student, "B C H W", "student")
    check_shape(teacher, f"{student.shape[0]} C H W", "teacher")
    ps, present = region_prototypes(student, nearest_labels(target, student.shape[-2:]), classes)
    pt, present_t = region_prototypes(
        teacher.detach(), nearest_labels(target, teacher.shape[-2:]), classes
    )
    total = student.new_zeros(())
    for i in range(classes):
        for j in range(i + 1, classes):
            both = present[:, i] & present[:, j] & present_t[:, i] & present_t[:, j]
            if bool(both.any()):
                cs = F.cosine_similarity(ps[both, i], ps[both, j], dim=1)
                ct = F.cosine_similarity(pt[both, i], pt[both, j], dim=1)
                total = total + (cs - ct).pow(2).mean()
    return total + 0.0 * student.sum()  # connected to the graph even without a pair


# --------------------------------------------------------------------------- the losses


class LiveLoss(nn.Module):
    """A teacher loss of ``pipeline.kd_table``: built from the taps' channel counts, called
    with both networks' (logits, taps) and the GT; its parameters (if any) train with the
    student and are saved apart from it.

    Args:
        student_channels, teacher_channels: channels of each tap the row reads, in order.
        classes: K.
    """

    def __init__(
        self, student_channels: Sequence[int], teacher_channels: Sequence[int], classes: int
    ) -> None:
        super().__init__()
        self.classes = classes

    def forward(
        self,
        student: tuple[Tensor, Sequence[Tensor]],
        teacher: tuple[Tensor, Sequence[Tensor]],
        target: Tensor,
    ) -> Tensor:
        raise NotImplementedError


class FitNetKD(LiveLoss):
    """FitNet: :func:`fitnet_loss` through a :class:`Connector` on the one tap."""

    def __init__(self, student_channels, teacher_channels, classes) -> None:
        super().__init__(student_channels, teacher_channels, classes)
        self.connector = Connector(student_channels[0], teacher_channels[0])

    def forward(self, student, teacher, target) -> Tensor:
        t = teacher[1][0]
        return fitnet_loss(self.connector(student[1][0], tuple(t.shape[-2:])), t)


class ATKD(LiveLoss):
    """AT: :func:`at_loss` on the one tap (no parameters)."""

    def forward(self, student, teacher, target) -> Tensor:
        return at_loss(student[1][0], teacher[1][0])


class EMKD(LiveLoss):
    """EMKD (Qin et al. 2021): ``α · KD(τ = 4) on the logits + β1 · Σ_taps importance-map
    loss + β2 · Σ_taps region affinity loss`` with α = 0.1, β1 = β2 = 0.9 on two taps (EMKD
    reads a low- and a high-level map; here the two taps given), as EMKD's train_kd.py."""

    def forward(self, student, teacher, target) -> Tensor:
        pmd = kd_loss(student[0], teacher[0].detach(), EMKD_TAU)
        imd = sum(importance_map_loss(s, t) for s, t in zip(student[1], teacher[1], strict=True))
        rad = sum(
            region_affinity_loss(s, t, target, self.classes)
            for s, t in zip(student[1], teacher[1], strict=True)
        )
        return EMKD_ALPHA * pmd + EMKD_BETA1 * imd + EMKD_BETA2 * rad
