"""Tests for pipeline.calibration: the fitted temperature minimises the NLL (grid oracle)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.calibration import fit_temperature, temperature_nll


def test_fit_recovers_the_temperature_labels_were_drawn_with() -> None:
    g = torch.Generator().manual_seed(0)
    logits = 3.0 * torch.randn(40_000, 3, generator=g, dtype=torch.float64)
    labels = torch.multinomial((logits / 2.5).softmax(1), 1, generator=g).squeeze(1)
    assert fit_temperature(logits, labels) == pytest.approx(2.5, abs=0.1)


def test_fit_is_the_minimum_of_a_dense_grid() -> None:
    g = torch.Generator().manual_seed(1)
    logits = 5.0 * torch.randn(3_000, 2, generator=g)
    labels = torch.randint(0, 2, (3_000,), generator=g)  # labels unrelated: T grows
    labels[:2_000] = logits[:2_000].argmax(1)  # mostly right, overconfident
    t = fit_temperature(logits, labels)
    grid = np.exp(np.linspace(np.log(0.05), np.log(20.0), 2_001))
    best = min(grid, key=lambda x: temperature_nll(logits, labels, float(x)))
    assert t == pytest.approx(best, rel=0.01)
    assert temperature_nll(logits, labels, t) <= temperature_nll(logits, labels, float(best)) + 1e-6
    assert t > 1.0  # an overconfident network is softened


def test_nll_by_hand() -> None:
    # one pixel, logits (0, ln 3): p(label 1) = 3/4 at T = 1 and 2/3... at T = ln3/ln2: 2/3
    logits = torch.tensor([[0.0, float(np.log(3.0))]])
    labels = torch.tensor([1])
    assert temperature_nll(logits, labels, 1.0) == pytest.approx(-np.log(0.75))
    assert temperature_nll(logits, labels, float(np.log(3) / np.log(2))) == pytest.approx(
        -np.log(2.0 / 3.0)
    )
    with pytest.raises(ValueError, match="at least one labelled pixel"):
        fit_temperature(torch.zeros(0, 2), torch.zeros(0, dtype=torch.long))
