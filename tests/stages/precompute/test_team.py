"""fit_temperatures: the record plc_cal stores, against pipeline.calibration on the same pixels."""

from __future__ import annotations

import pytest
import torch

from pipeline.calibration import fit_temperature, temperature_nll
from stages.precompute import team as team_module
from stages.precompute.team import fit_temperatures


class _Split:
    def __init__(self, images: torch.Tensor, masks: torch.Tensor) -> None:
        self.images, self.masks = images, masks

    def batch(self, idx: torch.Tensor, device: torch.device):
        return self.images[idx], self.masks[idx]


class _Team:
    """Assistants whose logits are fixed functions of the image: overconfident TA_f."""

    device = torch.device("cpu")

    def assistant_logits(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        z = images[:, :2] * 10.0  # (B, 2, H, W)
        return {"fp": z, "bd": z / 10.0}


def _data():
    g = torch.Generator().manual_seed(0)
    images = torch.randn(6, 3, 8, 8, generator=g)
    masks = (images[:, 1] + 0.8 * torch.randn(6, 8, 8, generator=g) > images[:, 0]).long()
    return images, masks


def test_temperatures_and_nll_are_those_of_the_pixels() -> None:
    images, masks = _data()
    cal = fit_temperatures(_Team(), _Split(images, masks), [0, 2, 3, 5], 2, "test images")
    z = images[[0, 2, 3, 5], :2].permute(0, 2, 3, 1).reshape(-1, 2)
    y = masks[[0, 2, 3, 5]].reshape(-1)
    assert cal["fp"] == fit_temperature(z * 10.0, y) and cal["bd"] == fit_temperature(z, y)
    assert cal["fp"] > 1.0  # the overconfident one is softened
    assert cal["nll_before"]["fp"] == round(temperature_nll(z * 10.0, y, 1.0), 6)
    assert cal["images"] == 4 and cal["pixels"] == 4 * 64 and cal["source"] == "test images"
    assert cal["at_bound"] == [k for k in ("fp", "bd") if cal[k] in (0.05, 20.0)]


def test_a_large_fit_set_is_subsampled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(team_module, "MAX_FIT_PIXELS", 100)
    images, masks = _data()
    cal = fit_temperatures(_Team(), _Split(images, masks), list(range(6)), 4, "all")
    assert cal["pixels"] == 256 // 4 + 128 // 4  # stride ceil(384 / 100) = 4, per batch
    assert 0.05 <= cal["fp"] <= 20.0
