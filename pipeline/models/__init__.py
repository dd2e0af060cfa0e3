"""Segmentation networks in plain torch (no torchvision/timm) and their registry."""

from pipeline.models.registry import (
    MODELS,
    ModelSpec,
    build_model,
    check_input_size,
    count_parameters,
    describe_models,
)
from pipeline.models.transunet import TransUNet, TransUNetConfig
from pipeline.models.unet import UNet, UNetConfig

__all__ = [
    "MODELS",
    "ModelSpec",
    "TransUNet",
    "TransUNetConfig",
    "UNet",
    "UNetConfig",
    "build_model",
    "check_input_size",
    "count_parameters",
    "describe_models",
]
