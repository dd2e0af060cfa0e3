"""Feature-based KD pieces (issue 18, parts 2-3): the connector and the FitNet and AT losses.

A loss reads named feature taps of the student and the teacher (``forward_taps`` of every
registry network: ``pipeline/models``). Where the widths or grids differ, FitNet goes through
a :class:`Connector` (1×1 conv + BN on the student's map, resized to the teacher's grid),
trained with the student and kept out of the student's inference checkpoint; AT needs none
(its attention maps have no channels). Pure functions of tensors, like ``pipeline/losses``.

Not yet wired into ``plc distill`` (the live teacher, the connector's optimiser group and
its checkpoint record are the next step of issue 18).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from pipeline.check import check_shape

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
