"""Pieces shared by the networks: conv-BN-ReLU, the input-size check, feature taps."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

from torch import Tensor, nn

from pipeline.check import check_shape

logger = logging.getLogger(__name__)


def conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    """3×3 conv (no bias) + BatchNorm + ReLU; keeps the spatial size."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


def size_error(name: str, multiple: int, height: int, width: int) -> str | None:
    """The one-sentence complaint about an input size, or None when the size is fine.

    Args:
        name: the model's registry name, for the message.
        multiple: the sides must be positive multiples of this.
        height, width: the input's spatial size.
    """
    if height > 0 and width > 0 and height % multiple == 0 and width % multiple == 0:
        return None
    examples = [multiple * math.ceil(side / multiple) for side in (224, 256)]
    fix_h = multiple * max(1, math.ceil(height / multiple))
    fix_w = multiple * max(1, math.ceil(width / multiple))
    return (
        f"model '{name}' takes inputs whose sides are multiples of {multiple} "
        f"(e.g. {examples[0]}, {examples[1]}); got {height}×{width}; "
        f"pad or resize to {fix_h}×{fix_w}."
    )


def check_image_batch(x: Tensor, name: str, multiple: int) -> None:
    """Raise ValueError unless ``x`` is float (B, 3, H, W), H and W multiples of ``multiple``."""
    sizes = check_shape(x, "B 3 H W", f"input of model '{name}'")
    if not x.is_floating_point():
        raise ValueError(f"input of model '{name}' must be a float tensor, got {x.dtype}.")
    message = size_error(name, multiple, sizes["H"], sizes["W"])
    if message is not None:
        raise ValueError(message)


def check_taps(name: str, wanted: Sequence[str], available: Sequence[str]) -> frozenset[str]:
    """The set of ``wanted`` tap names; a ValueError naming any unknown one and the model's."""
    unknown = [t for t in wanted if t not in available]
    if unknown:
        raise ValueError(
            f"model '{name}' has no feature tap {', '.join(map(repr, unknown))}; its taps are "
            f"{', '.join(available)}."
        )
    return frozenset(wanted)
