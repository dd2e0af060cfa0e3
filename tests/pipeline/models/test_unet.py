"""Classic UNet: reference parameter count, shapes, config checks, overfitting."""

from __future__ import annotations

import pytest
import torch

from pipeline.models.unet import UNet, UNetConfig


def _double(cin: int, cout: int) -> int:
    return 9 * cin * cout + 2 * cout + 9 * cout * cout + 2 * cout  # two conv (no bias) + BN


def _expected(base: int, num_classes: int) -> int:
    """Hand count: double conv in, four downs, four transposed-conv ups, 1×1 head."""
    w = [base * 2**i for i in range(5)]
    n = _double(3, w[0]) + sum(_double(w[i], w[i + 1]) for i in range(4))
    for i in range(4, 0, -1):
        n += 4 * w[i] * w[i - 1] + w[i - 1]  # ConvTranspose2d(w[i], w[i]/2, 2, stride 2)
        n += _double(w[i], w[i - 1])
    return n + w[0] * num_classes + num_classes


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_reference_parameter_count() -> None:
    n = _count(UNet(UNetConfig(base=64, num_classes=2)))
    assert n == _expected(64, 2) == 31_037_698
    assert abs(n - 31.0e6) / 31.0e6 < 0.01


@pytest.mark.parametrize(("base", "num_classes"), [(16, 2), (8, 3), (4, 2), (96, 2)])
def test_other_widths_match_hand_count(base: int, num_classes: int) -> None:
    with torch.device("meta"):
        model = UNet(UNetConfig(base=base, num_classes=num_classes))
    assert _count(model) == _expected(base, num_classes)


@pytest.mark.parametrize("num_classes", [2, 3])
@pytest.mark.parametrize("size", [(32, 32), (64, 64), (16, 48)])
def test_tiny_shapes(num_classes: int, size: tuple[int, int]) -> None:
    model = UNet(UNetConfig(base=8, num_classes=num_classes)).eval()
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        logits, features = model.forward_features(x)
        plain = model(x)
    assert logits.shape == (2, num_classes, *size)
    assert features.shape == (2, 8, *size)
    assert model.feature_channels == 8 and model.num_classes == num_classes
    torch.testing.assert_close(plain, logits)
    torch.testing.assert_close(model.head(features), logits)


def test_bad_input_and_config_messages() -> None:
    model = UNet(UNetConfig(base=4), model_name="unet-tiny")
    with pytest.raises(ValueError, match=r"model 'unet-tiny' takes inputs whose sides are"):
        model(torch.randn(1, 3, 33, 32))
    with pytest.raises(ValueError, match=r"UNetConfig.num_classes must be an integer >= 2, got 1"):
        UNetConfig(num_classes=1)
    with pytest.raises(ValueError, match=r"UNetConfig.base must be an integer >= 1, got 0"):
        UNetConfig(base=0)
