"""TransUNet: reference parameter count, tiny-config shapes, config checks, overfitting."""

from __future__ import annotations

import pytest
import torch

from pipeline.models.transunet import TINY_TRANSUNET, TransUNet, TransUNetConfig
from pipeline.models.vit import PatchEmbedding


def _gn(c: int) -> int:
    return 2 * c


def _bottleneck(cin: int, cout: int, cmid: int) -> int:
    n = cin * cmid + _gn(cmid) + 9 * cmid * cmid + _gn(cmid) + cmid * cout + _gn(cout)
    if cin != cout:  # first unit of each stage (all stride-2 units change width too)
        n += cin * cout + _gn(cout)
    return n


def _stage(cin: int, cout: int, cmid: int, units: int) -> int:
    return _bottleneck(cin, cout, cmid) + (units - 1) * _bottleneck(cout, cout, cmid)


def _reference_count(num_classes: int, img_size: int) -> int:
    """Hand-written count of R50-ViT-B/16 TransUNet from the paper's architecture numbers."""
    resnet = 3 * 64 * 49 + _gn(64)
    resnet += _stage(64, 256, 64, 3) + _stage(256, 512, 128, 4) + _stage(512, 1024, 256, 9)
    d, tokens = 768, (img_size // 16) ** 2
    block = 2 * 2 * d + 4 * (d * d + d) + (d * 3072 + 3072) + (3072 * d + d)
    vit = (1024 * d + d) + tokens * d + 12 * block + 2 * d
    conv_more = 9 * d * 512 + 2 * 512
    decoder = 0
    for cin, skip, cout in ((512, 512, 256), (256, 256, 128), (128, 64, 64), (64, 0, 16)):
        decoder += 9 * (cin + skip) * cout + 2 * cout + 9 * cout * cout + 2 * cout
    head = 9 * 16 * num_classes + num_classes
    return resnet + vit + conv_more + decoder + head


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_reference_parameter_count_matches_paper_size_and_hand_count() -> None:
    model = TransUNet(TransUNetConfig())  # built for real on CPU; no forward
    n = _count(model)
    assert n == _reference_count(2, 224)
    assert abs(n - 105.3e6) / 105.3e6 < 0.01
    assert model.num_classes == 2 and model.feature_channels == 16


def test_reference_count_at_other_classes_and_size_on_meta() -> None:
    with torch.device("meta"):
        model = TransUNet(TransUNetConfig(num_classes=9, img_size=256))
    assert _count(model) == _reference_count(9, 256)


def _tiny(num_classes: int = 2, img_size: int = 64) -> TransUNet:
    cfg = TransUNetConfig(num_classes=num_classes, img_size=img_size, **TINY_TRANSUNET)
    return TransUNet(cfg, model_name="transunet-tiny").eval()


@pytest.mark.parametrize("num_classes", [2, 3])
@pytest.mark.parametrize("size", [(32, 32), (64, 64), (32, 96)])
def test_tiny_shapes(num_classes: int, size: tuple[int, int]) -> None:
    model = _tiny(num_classes)
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        logits, features = model.forward_features(x)
        plain = model(x)
    assert logits.shape == (2, num_classes, *size)
    assert features.shape == (2, model.feature_channels, *size)
    assert model.feature_channels == 16
    torch.testing.assert_close(plain, logits)
    # the features are exactly what the head sees
    torch.testing.assert_close(model.head(features), logits)


def test_position_embeddings_identity_at_build_grid_and_interpolated_elsewhere() -> None:
    emb = PatchEmbedding(4, 8, (4, 4), dropout=0.0)
    with torch.no_grad():
        emb.position.fill_(0.25)
    assert emb._position_for(4, 4) is emb.position
    resized = emb._position_for(2, 6)
    assert resized.shape == (1, 12, 8)
    torch.testing.assert_close(resized, torch.full((1, 12, 8), 0.25))  # bicubic keeps constants


def test_wrong_input_raises_with_clear_message() -> None:
    model = _tiny()
    with pytest.raises(ValueError, match=r"multiples of 16 .*got 40×32; pad or resize to 48×32"):
        model(torch.randn(1, 3, 40, 32))
    with pytest.raises(ValueError, match=r"input of model 'transunet-tiny' must have shape"):
        model(torch.randn(1, 1, 32, 32))
    with pytest.raises(ValueError, match="must be a float tensor"):
        model(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"num_classes": 1}, r"TransUNetConfig.num_classes must be an integer >= 2, got 1"),
        ({"img_size": 100}, r"TransUNetConfig.img_size must be a positive multiple of 16"),
        ({"heads": 5}, r"TransUNetConfig.heads must be a positive divisor of hidden=768"),
        ({"gn_groups": 3}, r"TransUNetConfig.gn_groups must be a positive divisor of width=64"),
        ({"dropout": 1.0}, r"TransUNetConfig.dropout must be in \[0, 1\)"),
        ({"block_units": (3, 4)}, r"TransUNetConfig.block_units must be three integers"),
    ],
)
def test_config_validation_names_the_field(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TransUNetConfig(**overrides)
