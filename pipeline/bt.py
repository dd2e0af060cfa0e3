"""Boundary Transform (BT, paper §2.3).

For each foreground class c the GT region is split into an interior (the region eroded by delta
pixels with a square (2·delta+1)² kernel, i.e. Chebyshev distance) and a band (region minus
interior: the pixels within delta of the class boundary). n = floor(rho·min(|band|, |interior|))
random band pixels swap their whole value vectors (RGB triples) with n random interior pixels.
The mask is unchanged. The image border does not erode (as cv2.erode's default border): a region
touching the border keeps its border pixels in the interior unless background is within delta.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from pipeline.check import check_shape

logger = logging.getLogger(__name__)

REFERENCE_SIZE = 224


@dataclass(frozen=True)
class BTConfig:
    """BT settings.

    Attributes:
        delta: band width in pixels at the image size the caller works at (paper: 5 at 224²;
            see :func:`scaled_delta`).
        rho: fraction of min(|band|, |interior|) swapped, in [0, 1].
    """

    delta: int = 5
    rho: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.delta, int) or self.delta < 1:
            raise ValueError(f"BTConfig.delta must be an integer >= 1; got {self.delta!r}.")
        if not 0.0 <= self.rho <= 1.0:
            raise ValueError(f"BTConfig.rho must lie in [0, 1]; got {self.rho}.")


def scaled_delta(delta: int, size: int, ref: int = REFERENCE_SIZE) -> int:
    """Scale a band width given at ``ref``² to an image side of ``size`` (at least 1 pixel)."""
    if size < 1 or ref < 1:
        raise ValueError(f"size and ref must be positive; got size={size}, ref={ref}.")
    return max(1, math.floor(delta * size / ref + 0.5))


def _erode(masks: torch.Tensor, delta: int) -> torch.Tensor:
    """Square-kernel erosion of boolean maps (..., H, W) -> same shape (border does not erode)."""
    shape = masks.shape
    outside = (~masks).reshape(-1, 1, *shape[-2:]).float()  # (N, 1, H, W)
    # max_pool pads with -inf, so pixels beyond the image count as inside the region.
    near_outside = F.max_pool2d(outside, kernel_size=2 * delta + 1, stride=1, padding=delta)
    return (near_outside == 0).reshape(shape) & masks


def boundary_regions(mask: torch.Tensor, delta: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Band and interior of a region.

    Args:
        mask: (H, W) or (B, H, W) bool region.
        delta: band width in pixels (>= 1).

    Returns:
        (band, interior), each shaped like ``mask``: interior = erode(mask, delta) with a square
        kernel, band = mask & ~interior.
    """
    if mask.dtype != torch.bool or mask.ndim not in (2, 3):
        raise ValueError(
            f"mask must be a bool (H, W) or (B, H, W) map; got {mask.dtype} {tuple(mask.shape)}."
        )
    if delta < 1:
        raise ValueError(f"delta must be >= 1; got {delta}.")
    interior = _erode(mask, delta)
    return mask & ~interior, interior


def band_sizes(masks: torch.Tensor, delta: int, num_classes: int) -> list[dict[str, float | int]]:
    """Per foreground class of (B, H, W) class-id masks: BT's band and interior sizes.

    Returns one dict per class 1..C−1: ``images`` (holding the class), mean ``band`` and
    ``interior`` pixels per such image, and ``no_interior`` (images where the class has no
    interior at this delta, so BT swaps nothing there).
    """
    check_shape(masks, "B H W", "masks")
    out: list[dict[str, float | int]] = []
    for c in range(1, num_classes):
        region = masks == c  # (B, H, W)
        present = region.flatten(1).any(1)  # (B,)
        band, interior = boundary_regions(region[present], delta)
        n = int(present.sum())
        out.append({
            "class": c,
            "images": n,
            "band": float(band.flatten(1).sum(1).double().mean()) if n else math.nan,
            "interior": float(interior.flatten(1).sum(1).double().mean()) if n else math.nan,
            "no_interior": int((~interior.flatten(1).any(1)).sum()) if n else 0,
        })  # fmt: skip
    return out


def _swap_pairs(
    flat: torch.Tensor,
    band: torch.Tensor,
    interior: torch.Tensor,
    rho: float,
    generator: torch.Generator,
) -> None:
    """Swap n random band pixels with n random interior pixels of one image, in place.

    Args:
        flat: (D, H*W) the image's values (modified).
        band, interior: (H*W,) bool, disjoint.
    """
    band_idx = torch.nonzero(band).squeeze(1)  # (n_band,)
    inner_idx = torch.nonzero(interior).squeeze(1)  # (n_inner,)
    n = math.floor(rho * min(len(band_idx), len(inner_idx)))
    if n == 0:
        return
    gen_dev = generator.device
    pick_b = torch.randperm(len(band_idx), generator=generator, device=gen_dev)[:n].to(flat.device)
    pick_i = torch.randperm(len(inner_idx), generator=generator, device=gen_dev)[:n].to(flat.device)
    a, b = band_idx[pick_b], inner_idx[pick_i]
    values_a = flat[:, a].clone()  # (D, n)
    flat[:, a] = flat[:, b]
    flat[:, b] = values_a


def boundary_transform(
    image: torch.Tensor,
    mask: torch.Tensor,
    cfg: BTConfig,
    generator: torch.Generator,
    num_classes: int = 2,
) -> torch.Tensor:
    """Swap band and interior pixels of every foreground class (a new tensor; input untouched).

    Args:
        image: (D, H, W) or (B, D, H, W), any dtype.
        mask: (H, W) or (B, H, W) long class ids in [0, num_classes); class 0 is background.
        cfg: band width and swap fraction.
        generator: source of the random pairs (fresh swaps each call).
        num_classes: C.

    Returns:
        The transformed image, shaped like ``image``. Regions with an empty band or interior
        (thin structures, empty masks) are left unchanged.
    """
    batched = image.ndim == 4
    images = image if batched else image.unsqueeze(0)  # (B, D, H, W)
    masks = mask if batched else mask.unsqueeze(0)  # (B, H, W)
    sizes = check_shape(masks, "B H W", "mask")
    check_shape(images, f"{sizes['B']} D {sizes['H']} {sizes['W']}", "image")
    if masks.dtype.is_floating_point or masks.dtype == torch.bool:
        raise ValueError(f"mask must hold integer class ids (long); got dtype {masks.dtype}.")
    if masks.numel() and (int(masks.min()) < 0 or int(masks.max()) >= num_classes):
        raise ValueError(f"mask values must lie in [0, {num_classes}); pass the right num_classes.")
    out = images.clone()
    if num_classes < 2:
        return out if batched else out[0]
    classes = torch.arange(1, num_classes, device=masks.device).view(1, -1, 1, 1)
    regions = masks.unsqueeze(1) == classes  # (B, C-1, H, W)
    band, interior = boundary_regions(regions.flatten(0, 1), cfg.delta)  # (B*(C-1), H, W)
    band = band.reshape(masks.shape[0], num_classes - 1, -1)  # (B, C-1, H*W)
    interior = interior.reshape(masks.shape[0], num_classes - 1, -1)  # (B, C-1, H*W)
    flat = out.flatten(2)  # (B, D, H*W), a view of out
    for b in range(masks.shape[0]):
        for c in range(num_classes - 1):
            _swap_pairs(flat[b], band[b, c], interior[b, c], cfg.rho, generator)
    return out if batched else out[0]
