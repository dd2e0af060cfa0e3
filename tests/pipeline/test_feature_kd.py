"""Feature taps of the registry networks, the connector, and FitNet / AT against float64
implementations written here from the papers' formulas on small hand-made tensors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pipeline.feature_kd import AT_BETA, Connector, at_loss, attention_map, fitnet_loss
from pipeline.models.registry import build_model


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("unet-tiny", {"bottleneck": (128, 2), "dec1": (64, 4), "dec2": (32, 8),
                       "dec3": (16, 16), "dec4": (8, 32)}),
        ("transunet-tiny", None),
    ],
)  # fmt: skip
def test_every_tap_has_its_documented_grid_and_forward_is_unchanged(name, expected) -> None:
    torch.manual_seed(0)
    net = build_model(name, num_classes=2, img_size=32).eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        logits, maps = net.forward_taps(x, net.taps)
        plain, feats = net.forward_features(x)
    assert list(maps) != [] and set(maps) == set(net.taps)
    assert torch.equal(logits, plain) and torch.equal(maps["dec4"], feats)  # one forward path
    if expected is not None:
        got = {k: (v.shape[1], v.shape[-1]) for k, v in maps.items()}
        assert got == expected
    else:  # TransUNet: R50 stages at H/2, H/4, H/8, H/16, the ViT grid at H/16
        sides = {k: v.shape[-1] for k, v in maps.items()}
        assert sides["r50_half"] == 16 and sides["r50_quarter"] == 8 and sides["r50_eighth"] == 4
        assert sides["r50_deep"] == sides["vit"] == 2 and sides["dec4"] == 32
        assert maps["vit"].shape[1] == net.config.hidden
    with pytest.raises(ValueError, match=r"has no feature tap 'neck'; its taps are"):
        net.forward_taps(x, ("neck",))


def _fitnet64(s: np.ndarray, t: np.ndarray) -> float:
    """Romero et al. eq. 3 as a mean over elements: sum((s - t)^2) / count."""
    return float(((s - t) ** 2).sum() / s.size)


def _at64(s: np.ndarray, t: np.ndarray, beta: float) -> float:
    """Zagoruyko & Komodakis, p = 2: Q = mean_c A_c^2, flattened, divided by its L2 norm;
    beta times the mean over images and positions of (Q_s - Q_t)^2."""

    def q(a: np.ndarray) -> np.ndarray:
        m = (a**2).mean(axis=1).reshape(a.shape[0], -1)
        return m / np.linalg.norm(m, axis=1, keepdims=True)

    return float(beta * ((q(s) - q(t)) ** 2).mean())


def test_fitnet_and_at_equal_the_formulas_in_float64() -> None:
    rng = np.random.default_rng(0)
    s, t = rng.normal(size=(2, 3, 4, 5)), rng.normal(size=(2, 3, 4, 5))
    st, tt = torch.from_numpy(s), torch.from_numpy(t)
    assert fitnet_loss(st, tt).item() == pytest.approx(_fitnet64(s, t), rel=1e-12)
    t5 = rng.normal(size=(2, 5, 4, 5))  # AT: any channel counts
    assert at_loss(st, torch.from_numpy(t5)).item() == pytest.approx(
        _at64(s, t5, AT_BETA), rel=1e-12
    )
    # a hand case: one image, one channel, two positions with activations (1, 0) vs (0, 1):
    # Q_s = (1, 0), Q_t = (0, 1) -> mean((1, -1)^2) = 1 -> beta
    a = torch.tensor([[[[1.0, 0.0]]]], dtype=torch.float64)
    b = torch.tensor([[[[0.0, 1.0]]]], dtype=torch.float64)
    assert at_loss(a, b).item() == pytest.approx(AT_BETA)
    assert torch.allclose(attention_map(a), torch.tensor([[1.0, 0.0]], dtype=torch.float64))


def test_mimic_losses_vanish_when_the_student_equals_the_teacher() -> None:
    x = torch.randn(2, 4, 6, 6)
    assert fitnet_loss(x, x.clone()).item() == 0.0
    assert at_loss(x, x.clone()).item() == 0.0
    assert at_loss(x * 3.0, x).item() == pytest.approx(0.0, abs=1e-9)  # scale-free maps


def test_gradients_reach_the_connector_and_the_student_not_the_teacher() -> None:
    torch.manual_seed(0)
    connector = Connector(student_channels=3, teacher_channels=5)
    student = torch.randn(2, 3, 4, 4, requires_grad=True)
    teacher = torch.randn(2, 5, 8, 8, requires_grad=True)
    out = connector(student, teacher.shape[-2:])
    assert out.shape == (2, 5, 8, 8)  # widened and resized to the teacher's grid
    loss = fitnet_loss(out, teacher) + at_loss(student, teacher)
    loss.backward()
    assert connector.conv.weight.grad is not None and connector.conv.weight.grad.abs().sum() > 0
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert teacher.grad is None  # the teacher is detached: one no-grad forward serves all taps
    assert math.isfinite(loss.item())


def test_shapes_that_do_not_fit_are_named() -> None:
    with pytest.raises(ValueError, match="teacher"):
        fitnet_loss(torch.zeros(2, 3, 4, 4), torch.zeros(2, 5, 4, 4))
    with pytest.raises(ValueError, match="teacher"):
        at_loss(torch.zeros(2, 3, 4, 4), torch.zeros(3, 3, 4, 4))
