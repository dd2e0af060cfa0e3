"""The literal registry of segmentation networks, with builders and input-size checks.

Every registered network maps (B, 3, H, W) float images to logits (B, K, H, W) and has
``forward_features`` returning (logits, last decoder feature map at full resolution), plus
the attributes ``num_classes``, ``feature_channels``, ``size_multiple`` and ``model_name``.

Why a wide UNet teacher: measured before any code (DESIGN.md), a TransUNet trained from
scratch (no ImageNet weights, which this project does not download) reached 0.811 Dice on
the polyp set against 0.839 for UNet-64, so the paper's teacher may not beat the student
here. `wide-unet` (base 96, ≈69.8 M) is a teacher that is bigger than the student and of a
family that trains well from scratch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from pipeline.models.common import size_error
from pipeline.models.transunet import TINY_TRANSUNET, TransUNet, TransUNetConfig
from pipeline.models.unet import UNet, UNetConfig

logger = logging.getLogger(__name__)

Role = Literal["teacher", "student", "any"]


@dataclass(frozen=True)
class ModelSpec:
    """One registry entry.

    Attributes:
        name: registry key.
        role: what the network is meant for: "teacher", "student" or "any".
        builder: ``builder(num_classes=..., img_size=..., model_name=...) -> nn.Module``.
        description: one line for `plc models`.
        size_multiple: input H and W must be multiples of this.
    """

    name: str
    role: Role
    builder: Callable[..., nn.Module]
    description: str
    size_multiple: int

    def __post_init__(self) -> None:
        if self.role not in ("teacher", "student", "any"):
            raise ValueError(
                f"ModelSpec.role must be 'teacher', 'student' or 'any', got {self.role!r}."
            )
        if self.size_multiple < 1:
            raise ValueError(f"ModelSpec.size_multiple must be >= 1, got {self.size_multiple!r}.")


def _transunet(num_classes: int, img_size: int, model_name: str, **overrides) -> TransUNet:
    config = TransUNetConfig(num_classes=num_classes, img_size=img_size, **overrides)
    return TransUNet(config, model_name=model_name)


def _transunet_tiny(num_classes: int, img_size: int, model_name: str) -> TransUNet:
    return _transunet(num_classes, img_size, model_name, **TINY_TRANSUNET)


def _unet(base: int, signed_features: bool = False) -> Callable[..., UNet]:
    def build(num_classes: int, img_size: int, model_name: str) -> UNet:
        del img_size  # a UNet takes any multiple of 16 without being told the size
        config = UNetConfig(num_classes=num_classes, base=base, signed_features=signed_features)
        return UNet(config, model_name=model_name)

    return build


MODELS: dict[str, ModelSpec] = {
    "transunet": ModelSpec(
        "transunet",
        "teacher",
        _transunet,
        "TransUNet R50-ViT-B/16 + cascaded upsampler (paper's teacher), ≈105.3 M",
        16,
    ),
    "transunet-tiny": ModelSpec(
        "transunet-tiny",
        "teacher",
        _transunet_tiny,
        "TransUNet code at tiny widths/depth (CPU tests, default dvc run), ≈0.13 M",
        16,
    ),
    "unet": ModelSpec("unet", "any", _unet(64), "classic UNet, base 64 (paper's student)", 16),
    "unet-small": ModelSpec("unet-small", "student", _unet(16), "UNet, base 16, ≈1.9 M", 16),
    "unet-tiny": ModelSpec("unet-tiny", "student", _unet(8), "UNet, base 8, ≈0.49 M", 16),
    # a student clearly below unet-small/unet-tiny by capacity, so a CPU-sized study has a
    # teacher–student gap to transfer (issue 10's pilot)
    "unet-micro": ModelSpec("unet-micro", "student", _unet(4), "UNet, base 4, ≈0.12 M", 16),
    # the default run's student: far below unet-small, and its head reads signed features
    # (a classic base-2 UNet settles at background: pipeline/models/unet.py)
    "unet-nano": ModelSpec(
        "unet-nano", "student", _unet(2, signed_features=True), "UNet, base 2, ≈0.03 M", 16
    ),
    # unet-micro / unet-tiny with unet-nano's signed head, for the KD-regime sweep (issue 17):
    # a classic unet-micro seed scored 0 Dice for every variant at 200 and 400 steps on fold 0
    "unet-micro-signed": ModelSpec(
        "unet-micro-signed",
        "student",
        _unet(4, signed_features=True),
        "UNet, base 4, head on signed features, ≈0.12 M",
        16,
    ),
    "unet-tiny-signed": ModelSpec(
        "unet-tiny-signed",
        "student",
        _unet(8, signed_features=True),
        "UNet, base 8, head on signed features, ≈0.49 M",
        16,
    ),
    "wide-unet": ModelSpec(
        "wide-unet", "teacher", _unet(96), "UNet, base 96, ≈69.8 M (teacher alternative)", 16
    ),
}


def get_spec(name: str) -> ModelSpec:
    """The registry entry for ``name``; ValueError listing the choices on a miss."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)}.")
    return MODELS[name]


def build_model(name: str, num_classes: int = 2, img_size: int = 224) -> nn.Module:
    """Build the registered network ``name`` (randomly initialised).

    Args:
        name: a key of `MODELS`.
        num_classes: output classes K, background included.
        img_size: the training side; TransUNet builds its position embeddings for it (other
            multiples of 16 still work through interpolation).
    """
    spec = get_spec(name)
    message = size_error(name, spec.size_multiple, img_size, img_size)
    if message is not None:
        raise ValueError(f"img_size: {message}")
    return spec.builder(num_classes=num_classes, img_size=img_size, model_name=name)


def check_input_size(name_or_model: str | nn.Module, height: int, width: int) -> None:
    """Raise ValueError unless a (height, width) input suits the model.

    TransUNet accepts every multiple of 16, not only its ``img_size``: its position
    embeddings are interpolated bicubically to other grids.

    Args:
        name_or_model: a registry name or a network built by `build_model`.
        height, width: the input's spatial size.
    """
    if isinstance(name_or_model, str):
        name, multiple = name_or_model, get_spec(name_or_model).size_multiple
    else:
        multiple = getattr(name_or_model, "size_multiple", None)
        if multiple is None:
            raise ValueError(
                f"model {type(name_or_model).__name__} has no 'size_multiple'; "
                "pass a registry name or a network built by build_model."
            )
        name = getattr(name_or_model, "model_name", type(name_or_model).__name__)
    message = size_error(name, multiple, height, width)
    if message is not None:
        raise ValueError(message)


def count_parameters(name: str, num_classes: int = 2, img_size: int = 224) -> int:
    """Parameter count of a registered network, built on the meta device (no memory used)."""
    with torch.device("meta"):
        model = build_model(name, num_classes, img_size)
    return sum(p.numel() for p in model.parameters())


def describe_models(img_size: int = 224) -> list[dict]:
    """One dict per registered network for `plc models`.

    Keys: name, role, parameters (at 2 classes and ``img_size``), size_multiple,
    input_sizes (a phrase), description.
    """
    return [
        {
            "name": spec.name,
            "role": spec.role,
            "parameters": count_parameters(spec.name, 2, img_size),
            "size_multiple": spec.size_multiple,
            "input_sizes": f"H, W multiples of {spec.size_multiple}",
            "description": spec.description,
        }
        for spec in MODELS.values()
    ]
