"""Joint augmentation of images, masks and soft labels (one geometric transform per sample).

Geometry (scale-crop, small rotation, flips, rot90) is applied identically to the image
(bilinear), the mask (nearest) and the soft label (bilinear, then renormalised so every
pixel sums to 1); photometric changes (brightness, contrast, noise) touch the image only.

Label agreement: bilinear resampling mixes the two sides of a mask edge, so about 0.3 % of
pixels of an all-correct soft label (argmax == mask everywhere) would come out with another
argmax than the nearest-resampled mask. Where that happens and the source pixel the mask
was copied from agreed with its label, the soft label takes that source pixel's vector
instead (the nearest-resampled soft label, same grid, same call as the mask), so an
all-correct label stays all-correct exactly; elsewhere the bilinear value stays.

Padding: where a rotated crop reaches outside the image, every tensor repeats its border
(``padding_mode="border"``: the image and soft label bilinearly, the mask by nearest border
pixel), so the label of a padded pixel is the label of the image pixel it copies and
mask, soft label and image stay consistent. Zero padding would paint black image pixels
labelled "background" — a false pairing for a lesion touching the border.

Randomness: every call draws the same fixed set of uniforms from ``generator`` whatever the
config, so the same seed gives the same output and switching one option off does not shift
the draws of the others.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from pipeline.check import check_shape, class_argmax

logger = logging.getLogger(__name__)

# Column of each per-sample uniform in the (B, _N_DRAWS) draw.
_AREA, _CX, _CY, _ANGLE, _HFLIP, _VFLIP, _ROT, _BRIGHT, _CONTRAST = range(9)
_N_DRAWS = 9


@dataclass(frozen=True)
class AugmentConfig:
    """Which augmentations to apply and how strongly.

    Attributes:
        flip: random horizontal and vertical flips (each with probability 1/2).
        rot90: random rotation by k·90° (k uniform in 0..3; only 0 or 180° when H != W).
        scale_crop: (min, max) area fraction of a random crop that is resized back to
            (H, W); ``None`` disables. Both in (0, 1], min <= max.
        rotate_deg: maximum angle of a random rotation in degrees, in [0, 180]; 0 disables.
        brightness: an offset uniform in [-brightness, brightness] is added; in [0, 1].
        contrast: the deviation from the per-image mean is scaled by a factor uniform in
            [1 - contrast, 1 + contrast]; in [0, 1].
        noise_std: standard deviation of additive Gaussian noise, >= 0; 0 disables.
    """

    flip: bool = True
    rot90: bool = True
    scale_crop: tuple[float, float] | None = (0.8, 1.0)
    rotate_deg: float = 10.0
    brightness: float = 0.1
    contrast: float = 0.1
    noise_std: float = 0.0

    def __post_init__(self) -> None:
        if self.scale_crop is not None:
            if len(self.scale_crop) != 2:
                raise ValueError(
                    f"scale_crop must be None or a (min, max) pair, got {self.scale_crop!r}."
                )
            lo, hi = self.scale_crop
            if not 0.0 < lo <= hi <= 1.0:
                raise ValueError(
                    f"scale_crop must satisfy 0 < min <= max <= 1 (area fractions), "
                    f"got {self.scale_crop!r}."
                )
        _check_range("rotate_deg", self.rotate_deg, 0.0, 180.0)
        _check_range("brightness", self.brightness, 0.0, 1.0)
        _check_range("contrast", self.contrast, 0.0, 1.0)
        _check_range("noise_std", self.noise_std, 0.0, math.inf)

    @property
    def uses_affine(self) -> bool:
        """Whether a resampling transform (scale-crop or rotation) is configured."""
        return self.scale_crop is not None or self.rotate_deg > 0


def _check_range(field: str, value: float, lo: float, hi: float) -> None:
    if not lo <= value <= hi:
        raise ValueError(f"{field} must be in [{lo}, {hi}], got {value!r}.")


def augment_batch(
    images: Tensor,
    masks: Tensor,
    soft: Tensor | None,
    cfg: AugmentConfig,
    generator: torch.Generator,
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Augment a batch; the same random geometry per sample for image, mask and soft label.

    Args:
        images: (B, 3, H, W) float in [0, 1].
        masks: (B, H, W) int64 class indices.
        soft: (B, C, H, W) per-pixel class probabilities (summing to 1), or ``None``.
        cfg: the augmentations to apply.
        generator: source of randomness (any device; draws are moved to the data).

    Returns:
        ``(images, masks, soft)`` with the input shapes and dtypes; images clamped to [0, 1],
        mask values drawn from the input's values, soft label summing to 1 per pixel.
    """
    _check_inputs(images, masks, soft)
    b, _, h, w = images.shape
    draws = torch.rand(b, _N_DRAWS, generator=generator, device=generator.device)
    draws = draws.to(images.device, torch.float64)  # (B, _N_DRAWS)
    masks_f = masks.unsqueeze(1).float()  # (B, 1, H, W); class indices exact in float32
    if cfg.uses_affine:
        grid = _affine_grid(draws, cfg, h, w)
        images = _resample(images, grid, "bilinear")
        if soft is None:
            masks_f = _resample(masks_f, grid, "nearest")
        else:
            masks_f, soft = _resample_labels(masks_f, soft, grid)
    images, masks_f, soft = _dihedral(images, masks_f, soft, draws, cfg)
    images = _photometric(images, draws, cfg, generator)
    return images, masks_f.squeeze(1).round().to(masks.dtype), soft


def _check_inputs(images: Tensor, masks: Tensor, soft: Tensor | None) -> None:
    sizes = check_shape(images, "B 3 H W", "images")
    check_shape(masks, "B H W", "masks")
    if masks.shape != (sizes["B"], sizes["H"], sizes["W"]):
        raise ValueError(
            f"masks must have shape (B, H, W) = {(sizes['B'], sizes['H'], sizes['W'])} "
            f"to match images {tuple(images.shape)}, got {tuple(masks.shape)}."
        )
    if not images.is_floating_point():
        raise ValueError(f"images must be floating point in [0, 1], got dtype {images.dtype}.")
    if masks.is_floating_point() or masks.dtype == torch.bool:
        raise ValueError(f"masks must hold integer class indices, got dtype {masks.dtype}.")
    if soft is None:
        return
    check_shape(soft, "B C H W", "soft")
    if (soft.shape[0], *soft.shape[2:]) != (sizes["B"], sizes["H"], sizes["W"]):
        raise ValueError(
            f"soft must have shape (B, C, H, W) with B, H, W of images {tuple(images.shape)}, "
            f"got {tuple(soft.shape)}."
        )
    if not soft.is_floating_point():
        raise ValueError(f"soft must hold float probabilities, got dtype {soft.dtype}.")


def _affine_grid(draws: Tensor, cfg: AugmentConfig, h: int, w: int) -> Tensor:
    """Sampling grid (B, H, W, 2) of a random crop of random area, rotated by a random angle.

    The matrix maps output coordinates to input coordinates in ``affine_grid``'s normalised
    [-1, 1] frame. The rotation is a true rotation in pixel space: the aspect ratio enters
    the off-diagonal terms. The crop centre is drawn so that an unrotated crop stays inside.
    """
    lo, hi = cfg.scale_crop if cfg.scale_crop is not None else (1.0, 1.0)
    area = lo + (hi - lo) * draws[:, _AREA]  # (B,)
    side = area.sqrt()  # (B,) side length of the crop as a fraction of the image
    cx = (1 - side) * (2 * draws[:, _CX] - 1)  # (B,)
    cy = (1 - side) * (2 * draws[:, _CY] - 1)  # (B,)
    angle = torch.deg2rad(cfg.rotate_deg * (2 * draws[:, _ANGLE] - 1))  # (B,)
    cos, sin = angle.cos(), angle.sin()
    theta = torch.stack(
        [
            torch.stack([side * cos, -side * sin * (h / w), cx], dim=1),
            torch.stack([side * sin * (w / h), side * cos, cy], dim=1),
        ],
        dim=1,
    )  # (B, 2, 3)
    return F.affine_grid(theta.float(), [len(draws), 1, h, w], align_corners=False)


def _resample(x: Tensor, grid: Tensor, mode: str) -> Tensor:
    grid = grid.to(x.dtype)
    return F.grid_sample(x, grid, mode=mode, padding_mode="border", align_corners=False)


def _resample_labels(masks_f: Tensor, soft: Tensor, grid: Tensor) -> tuple[Tensor, Tensor]:
    """Mask (nearest) and soft label (bilinear, renormalised, argmax kept where it agreed).

    Mask and nearest soft label are resampled in one call, so each output pixel of both
    copies the same source pixel.
    """
    dtype = torch.promote_types(soft.dtype, masks_f.dtype)  # float32 unless soft is float64
    near = _resample(torch.cat([masks_f.to(dtype), soft.to(dtype)], dim=1), grid, "nearest")
    masks_f, soft_near = near[:, :1].to(masks_f.dtype), near[:, 1:].to(soft.dtype)
    smooth = _renormalise(_resample(soft, grid, "bilinear"))  # (B, C, H, W)
    target = masks_f.long()  # (B, 1, H, W)
    agreed = class_argmax(soft_near).unsqueeze(1) == target  # the source pixel agreed
    flipped = class_argmax(smooth).unsqueeze(1) != target  # bilinear mixing changed it
    return masks_f, torch.where(agreed & flipped, soft_near, smooth)


def _renormalise(soft: Tensor) -> Tensor:
    soft = soft.clamp_min(0)
    return soft / soft.sum(dim=1, keepdim=True).clamp_min(torch.finfo(soft.dtype).tiny)


def _dihedral(
    images: Tensor, masks_f: Tensor, soft: Tensor | None, draws: Tensor, cfg: AugmentConfig
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Exact flips and k·90° rotations, chosen per sample, applied to all three tensors."""
    tensors = [images, masks_f] if soft is None else [images, masks_f, soft]
    if cfg.flip:
        for col, dim in ((_HFLIP, -1), (_VFLIP, -2)):
            chosen = draws[:, col] < 0.5  # (B,)
            tensors = [_where_sample(chosen, t.flip(dim), t) for t in tensors]
    if cfg.rot90:
        h, w = images.shape[-2:]
        choices = 4 if h == w else 2  # a quarter turn would change (H, W) when H != W
        k = (draws[:, _ROT] * choices).floor().clamp_max(choices - 1).long() * (4 // choices)
        tensors = [_rot90_per_sample(t, k) for t in tensors]
    return tensors[0], tensors[1], (tensors[2] if soft is not None else None)


def _where_sample(chosen: Tensor, a: Tensor, b: Tensor) -> Tensor:
    return torch.where(chosen.view(-1, 1, 1, 1), a, b)  # (B,) -> (B, 1, 1, 1)


def _rot90_per_sample(x: Tensor, k: Tensor) -> Tensor:
    """Rotate sample i of ``x`` (B, C, H, W) by ``k[i]`` quarter turns (counter-clockwise)."""
    out = x.clone()
    for turns in (1, 2, 3):
        idx = (k == turns).nonzero().flatten()
        if len(idx):
            out[idx] = torch.rot90(x[idx], turns, dims=(-2, -1))
    return out


def _photometric(
    images: Tensor, draws: Tensor, cfg: AugmentConfig, generator: torch.Generator
) -> Tensor:
    """Brightness offset, contrast about the per-image mean, Gaussian noise; clamp to [0, 1]."""
    if cfg.brightness == 0 and cfg.contrast == 0 and cfg.noise_std == 0:
        return images
    dtype = images.dtype
    offset = (cfg.brightness * (2 * draws[:, _BRIGHT] - 1)).to(dtype).view(-1, 1, 1, 1)
    factor = (1 + cfg.contrast * (2 * draws[:, _CONTRAST] - 1)).to(dtype).view(-1, 1, 1, 1)
    mean = images.mean(dim=(1, 2, 3), keepdim=True)  # (B, 1, 1, 1)
    out = (images - mean) * factor + mean + offset
    if cfg.noise_std > 0:
        noise = torch.randn(images.shape, generator=generator, device=generator.device)
        out = out + cfg.noise_std * noise.to(images.device, dtype)
    return out.clamp(0, 1)
