"""fit()'s epoch-end snapshots: a run continued from epoch e's snapshot ends bit for bit where
the uninterrupted run ends (weights, EMA, optimiser, history, the caller's generator parts)."""

from __future__ import annotations

import copy
import io
import random
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from pipeline.train import GeneratorPart, TrainConfig, fit


class MemoryState:
    """An EpochState in memory: every snapshot round-trips through torch.save/load
    (weights_only=True, as stages.train.resume reads them)."""

    def __init__(self, start: dict[str, Any] | None = None) -> None:
        self.start = start
        self.saved: list[dict[str, Any]] = []

    def load(self) -> dict[str, Any] | None:
        return self.start

    def save(self, snapshot: dict[str, Any]) -> None:
        buf = io.BytesIO()
        torch.save(snapshot, buf)
        buf.seek(0)
        self.saved.append(torch.load(buf, weights_only=True))


def _net() -> nn.Module:
    torch.manual_seed(7)  # the same initial weights for every run
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Dropout2d(0.3),  # draws from torch's global RNG every step
        nn.Conv2d(8, 2, 1),
    )


def _run(epochs: int, state: MemoryState | None) -> tuple[nn.Module, list[dict[str, float]]]:
    """Batches draw from a caller generator (a part), numpy's and python's global RNGs."""
    model = _net()
    generator = torch.Generator().manual_seed(3)
    images = torch.randn(16, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    masks = (images[:, 0] > 0).long()

    def batches(epoch: int):
        for _ in range(3):
            idx = torch.randint(0, 16, (4,), generator=generator)
            noise = float(np.random.rand()) + random.random()  # global numpy / python draws
            yield images[idx] + 0.1 * noise, masks[idx]

    def step(net: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"loss": nn.functional.cross_entropy(net(batch[0]), batch[1])}

    cfg = TrainConfig(
        epochs=epochs, lr=0.05, seed=11, progress=False, device="cpu", ema_decay=0.9,
        warmup_steps=2, grad_clip=1.0,
    )  # fmt: skip
    history = fit(
        model,
        batches,
        step,
        cfg,
        steps_per_epoch=3,
        evaluate=lambda net: {"val_mean": float(net(images[:2]).mean())},
        state=state,
        parts={"generator": GeneratorPart(generator)} if state is not None else None,
    )
    return model, history


def _stable(history: list[dict[str, float]]) -> list[dict[str, float]]:
    return [{k: v for k, v in row.items() if k != "seconds"} for row in history]


@pytest.mark.parametrize("after_epoch", [0, 2, 3])
def test_a_run_resumed_from_any_epoch_ends_bit_for_bit_as_the_uninterrupted_run(
    after_epoch: int,
) -> None:
    whole = MemoryState()
    reference, ref_history = _run(4, whole)
    assert [len(s["history"]) for s in whole.saved] == [1, 2, 3, 4]
    resumed_state = MemoryState(copy.deepcopy(whole.saved[after_epoch]))
    resumed, history = _run(4, resumed_state)
    for name, value in reference.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[name]), name
    assert _stable(history) == _stable(ref_history)
    # the resumed run's own snapshots continue the numbering (none for the epochs it skipped)
    assert [len(s["history"]) for s in resumed_state.saved] == list(range(after_epoch + 2, 5))


def test_without_state_fit_trains_exactly_as_before() -> None:
    """Adding the snapshots changes nothing about what a plain run draws."""
    plain, plain_history = _run(2, None)
    kept, kept_history = _run(2, MemoryState())
    # the plain run has no generator part: its batches use the same generator, so the
    # weights agree as long as taking a snapshot draws nothing from any RNG
    for name, value in plain.state_dict().items():
        assert torch.equal(value, kept.state_dict()[name]), name
    assert _stable(plain_history) == _stable(kept_history)


def test_a_snapshot_of_another_run_is_refused_naming_what_differs() -> None:
    whole = MemoryState()
    _run(2, whole)
    with pytest.raises(ValueError, match=r"2 epochs, this run has 3"):
        _run(3, MemoryState(whole.saved[0]))
    bad = copy.deepcopy(whole.saved[0])
    bad["parts"] = {}
    with pytest.raises(ValueError, match=r"parts \[\], expected \['generator'\]"):
        _run(2, MemoryState(bad))


def test_parts_without_a_state_are_refused() -> None:
    generator = torch.Generator()
    with pytest.raises(ValueError, match="needs state="):
        fit(_net(), lambda e: [], lambda n, b: {}, TrainConfig(epochs=1, progress=False),
            parts={"g": GeneratorPart(generator)})  # fmt: skip
