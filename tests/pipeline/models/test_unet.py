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


@pytest.mark.parametrize(("base", "num_classes"), [(16, 2), (8, 3), (4, 2), (2, 2), (96, 2)])
@pytest.mark.parametrize("signed", [False, True])
def test_other_widths_match_hand_count(base: int, num_classes: int, signed: bool) -> None:
    with torch.device("meta"):
        model = UNet(UNetConfig(base=base, num_classes=num_classes, signed_features=signed))
    assert _count(model) == _expected(base, num_classes)


def _trapped_head(model: UNet) -> float:
    """Give every feature a negative foreground-minus-background weight; the bias gap."""
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.weight[1] = -0.5  # (K, F, 1, 1): foreground row
        model.head.bias.copy_(torch.tensor([0.3, -0.1]))
    return -0.4  # b_fg - b_bg


def test_signed_features_let_the_head_leave_the_background_trap() -> None:
    """Behind a ReLU the features are >= 0, so negative weights cap p_fg at sigmoid(b_fg - b_bg)
    for every input; the signed features' head is not capped."""
    torch.manual_seed(0)
    x = torch.randn(4, 3, 32, 32)
    # train mode: BatchNorm normalises with the batch's statistics, unit-scale features
    torch.manual_seed(1)
    classic = UNet(UNetConfig(base=2)).train()
    torch.manual_seed(1)
    signed = UNet(UNetConfig(base=2, signed_features=True)).train()
    # the same initialisation for a seed, key for key
    pairs = zip(classic.state_dict().items(), signed.state_dict().items(), strict=True)
    for (key, a), (other, b) in pairs:
        assert key == other and torch.equal(a, b), key
    cap = torch.sigmoid(torch.tensor(_trapped_head(classic)))
    _trapped_head(signed)
    with torch.no_grad():
        p_classic = classic(x).softmax(1)[:, 1]
        logits, features = signed.forward_features(x)
    assert p_classic.max() <= cap + 1e-6
    assert (features < 0).any()  # signed
    assert logits.softmax(1)[:, 1].max() > cap + 0.05
    # one ReLU fewer, the last decoder conv's; the same maps otherwise
    torch.testing.assert_close(features.clamp(min=0), classic.forward_features(x)[1])
    assert isinstance(classic.ups[-1].conv[1][2], torch.nn.ReLU)
    assert sum(isinstance(m, torch.nn.ReLU) for m in signed.modules()) == (
        sum(isinstance(m, torch.nn.ReLU) for m in classic.modules()) - 1
    )


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
