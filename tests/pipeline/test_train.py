"""The shared training loop: learning, history, seeding, NaN guard, schedules, AMP, progress."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.train import (
    TrainConfig,
    fit,
    resolve_amp,
    resolve_device,
    schedule_factor,
    seed_everything,
)
from pipeline.train_setup import WeightEMA

QUIET = {"progress": False, "device": "cpu"}


class TinySeg(nn.Module):
    """Two 3×3 convolutions and a 1×1 head: (B, 3, H, W) -> (B, classes, H, W)."""

    def __init__(self, classes: int = 2, width: int = 8) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1),
            nn.ReLU(),
        )
        self.head = nn.Conv2d(width, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def _data(n: int = 4, size: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    images = torch.rand(n, 3, size, size, generator=g)
    masks = (images[:, 0] > 0.5).long()  # (B, H, W) learnable from the red channel
    return images, masks


def _seg_step(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> dict:
    images, masks = batch
    logits = model(images)
    ce = F.cross_entropy(logits, masks)
    acc = (logits.argmax(1) == masks).float().mean()
    return {"loss": ce, "ce": ce, "acc": acc}


def _train(cfg: TrainConfig, steps: int = 5) -> tuple[nn.Module, list[dict]]:
    seed_everything(cfg.seed)
    model = TinySeg()
    images, masks = _data()
    history = fit(model, lambda e: [(images, masks)] * steps, _seg_step, cfg)
    return model, history


def test_tiny_model_overfits_and_history_has_named_terms() -> None:
    model, history = _train(TrainConfig(epochs=6, lr=2e-2, **QUIET), steps=5)
    losses = [h["loss"] for h in history]
    assert losses[-1] < 0.5 * losses[0]
    assert history[-1]["acc"] > 0.9
    assert [h["epoch"] for h in history] == list(range(6))
    for h in history:
        assert set(h) == {"epoch", "loss", "ce", "acc", "lr", "seconds"}
        assert h["loss"] == pytest.approx(h["ce"])
        assert h["seconds"] >= 0
    assert not model.training  # left in eval() mode


def test_same_seed_gives_identical_weights() -> None:
    cfg = TrainConfig(epochs=2, seed=3, **QUIET)
    a, hist_a = _train(cfg)
    b, hist_b = _train(cfg)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb)
    assert [h["loss"] for h in hist_a] == [h["loss"] for h in hist_b]


def test_nan_loss_raises_naming_epoch_step_and_term() -> None:
    def step(model: nn.Module, batch: tuple) -> dict:
        calls.append(1)
        out = _seg_step(model, batch)
        kd = torch.tensor(float("nan")) if len(calls) == 3 else out["ce"]  # 3rd = epoch 1 step 1
        return {"loss": out["loss"], "kd": kd}

    calls: list[int] = []
    images, masks = _data()
    cfg = TrainConfig(epochs=2, **QUIET)
    with pytest.raises(RuntimeError, match=r"'kd' is nan at epoch 1 step 1"):
        fit(TinySeg(), lambda e: [(images, masks)] * 2, step, cfg)


def test_inf_loss_raises() -> None:
    images, masks = _data()
    step = lambda m, b: {"loss": _seg_step(m, b)["loss"] * float("inf")}  # noqa: E731
    with pytest.raises(RuntimeError, match=r"'loss' is inf at epoch 0 step 1"):
        fit(TinySeg(), lambda e: [(images, masks)], step, TrainConfig(epochs=1, **QUIET))


def test_step_without_loss_is_refused() -> None:
    images, masks = _data()
    step = lambda m, b: {"ce": _seg_step(m, b)["ce"]}  # noqa: E731
    with pytest.raises(ValueError, match="including 'loss'"):
        fit(TinySeg(), lambda e: [(images, masks)], step, TrainConfig(epochs=1, **QUIET))


def test_progress_false_prints_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    _train(TrainConfig(epochs=2, **QUIET))
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_progress_true_runs() -> None:
    _, history = _train(TrainConfig(epochs=1, progress=True, device="cpu"))
    assert len(history) == 1


@pytest.mark.parametrize("schedule", ["poly", "cosine", "constant"])
def test_schedules_reach_the_expected_final_lr(schedule: str) -> None:
    epochs, steps, lr = 3, 4, 0.1
    cfg = TrainConfig(epochs=epochs, lr=lr, schedule=schedule, **QUIET)
    images, masks = _data()
    total = epochs * steps
    history = fit(TinySeg(), lambda e: [(images, masks)] * steps, _seg_step, cfg)
    last = (total - 1) / total  # progress of the last step
    expected = {
        "poly": lr * (1 - last) ** 0.9,
        "cosine": lr * 0.5 * (1 + math.cos(math.pi * last)),
        "constant": lr,
    }[schedule]
    assert history[-1]["lr"] == pytest.approx(expected)
    assert history[0]["lr"] == pytest.approx(lr * schedule_factor(schedule, steps - 1, total))
    assert schedule_factor(schedule, 0, total) == 1.0
    if schedule != "constant":
        assert schedule_factor(schedule, total, total) == 0.0  # the LR after the last step


def test_schedule_factor_hand_values() -> None:
    assert schedule_factor("poly", 5, 10) == pytest.approx(0.5**0.9)
    assert schedule_factor("cosine", 5, 10) == pytest.approx(0.5)
    assert schedule_factor("cosine", 10, 10) == pytest.approx(0.0)
    assert schedule_factor("constant", 9, 10) == 1.0


def test_amp_auto_is_off_on_cpu() -> None:
    cpu = torch.device("cpu")
    assert resolve_amp("auto", cpu) == (None, False)
    assert resolve_amp("bf16", cpu) == (None, False)
    seen: list[bool] = []

    def step(model: nn.Module, batch: tuple) -> dict:
        seen.append(torch.is_autocast_enabled("cpu"))
        return _seg_step(model, batch)

    images, masks = _data()
    fit(TinySeg(), lambda e: [(images, masks)], step, TrainConfig(epochs=1, amp="auto", **QUIET))
    assert seen == [False]


def test_batches_are_moved_and_dicts_passed_through() -> None:
    images, masks = _data()
    seen: list[dict] = []

    def step(model: nn.Module, batch: dict) -> dict:
        seen.append(batch)
        return _seg_step(model, (batch["x"], batch["y"]))

    batch = {"x": images, "y": masks, "ids": ["a", "b"]}
    fit(TinySeg(), lambda e: [batch], step, TrainConfig(epochs=1, **QUIET))
    assert seen[0]["ids"] == ["a", "b"] and seen[0]["x"].device.type == "cpu"


def test_steps_per_epoch_limits_an_endless_iterator_and_is_required_for_decay() -> None:
    images, masks = _data()

    def endless(epoch: int):
        while True:
            yield images, masks

    cfg = TrainConfig(epochs=2, **QUIET)
    counted: list[int] = []
    history = fit(
        TinySeg(),
        endless,
        lambda m, b: counted.append(1) or _seg_step(m, b),
        cfg,
        steps_per_epoch=3,
        on_epoch_end=lambda e, rec: counted.append(100 + e),
    )
    assert counted == [1, 1, 1, 100, 1, 1, 1, 101] and len(history) == 2
    with pytest.raises(ValueError, match="pass steps_per_epoch"):
        fit(TinySeg(), endless, _seg_step, cfg)


def test_empty_epoch_is_refused() -> None:
    with pytest.raises(ValueError, match="yielded no batches"):
        fit(TinySeg(), lambda e: [], _seg_step, TrainConfig(epochs=1, **QUIET))


def test_sgd_and_grad_clip_train() -> None:
    cfg = TrainConfig(epochs=3, lr=0.05, optimizer="sgd", grad_clip=1.0, **QUIET)
    _, history = _train(cfg)
    assert history[-1]["loss"] < history[0]["loss"]


def test_seed_everything_seeds_all_generators() -> None:
    g = seed_everything(11)
    a = (random.random(), np.random.rand(), torch.rand(1).item(), torch.rand(1, generator=g).item())
    g = seed_everything(11)
    b = (random.random(), np.random.rand(), torch.rand(1).item(), torch.rand(1, generator=g).item())
    assert a == b and g.device.type == "cpu"


def test_resolve_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    with pytest.raises(ValueError, match="torch device string"):
        resolve_device("banana")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="none is available"):
            resolve_device("cuda:0")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"epochs": 0}, "epochs must be >= 1"),
        ({"lr": 0.0}, "lr must be > 0"),
        ({"optimizer": "adam"}, "optimizer must be one of adamw, sgd"),
        ({"schedule": "step"}, "schedule must be one of poly, cosine, constant"),
        ({"amp": "fp8"}, "amp must be one of auto, off, bf16, fp16"),
        ({"grad_clip": 0.0}, "grad_clip must be None or > 0"),
        ({"seed": -1}, "seed must be in"),
        ({"log_every": -1}, "log_every must be >= 0"),
        ({"warmup_steps": -1}, "warmup_steps must be >= 0"),
        ({"ema_decay": 1.0}, r"ema_decay must be 0 \(off\) or in \(0, 1\)"),
    ],
)
def test_config_validation_messages(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TrainConfig(**kwargs)


def test_warmup_ramps_linearly_then_follows_the_schedule() -> None:
    # 3 warmup steps of 1/3, 2/3, 1; then poly over the 7 remaining steps
    assert [schedule_factor("poly", s, 10, 3) for s in range(3)] == pytest.approx([1 / 3, 2 / 3, 1])
    assert schedule_factor("poly", 3, 10, 3) == 1.0
    assert schedule_factor("poly", 5, 10, 3) == pytest.approx((1 - 2 / 7) ** 0.9)
    assert schedule_factor("constant", 1, 10, 4) == pytest.approx(0.5)
    images, masks = _data()
    lrs: list[float] = []
    cfg = TrainConfig(epochs=3, lr=0.1, schedule="constant", warmup_steps=2, **QUIET)
    fit(
        TinySeg(),
        lambda e: [(images, masks)],
        _seg_step,
        cfg,
        on_epoch_end=lambda e, rec: lrs.append(rec["lr"]),
    )
    assert lrs == pytest.approx([0.05, 0.1, 0.1])


def test_weight_ema_matches_a_hand_computed_average() -> None:
    net = nn.Sequential(nn.Linear(1, 1, bias=False), nn.BatchNorm1d(1))
    with torch.no_grad():
        net[0].weight.fill_(0.0)
    ema = WeightEMA(net, decay=0.5)
    values = [1.0, 2.0, 4.0]
    expected = 0.0
    for t, v in enumerate(values, start=1):
        with torch.no_grad():
            net[0].weight.fill_(v)
        net[1].num_batches_tracked += 1
        ema.update(net)
        d = min(0.5, (1 + t) / (10 + t))
        expected = d * expected + (1 - d) * v
    assert ema.model[0].weight.item() == pytest.approx(expected)
    assert ema.model[1].num_batches_tracked.item() == 3  # integer buffers copied
    assert not ema.model.training and not ema.model[0].weight.requires_grad
    ema.copy_to(net)
    assert net[0].weight.item() == pytest.approx(expected)
    with pytest.raises(ValueError, match="ema_decay must be in"):
        WeightEMA(net, decay=0.0)


def test_fit_with_ema_leaves_the_average_and_evaluates_it() -> None:
    images, masks = _data()
    seen: list[nn.Module] = []

    def evaluate(model: nn.Module) -> dict:
        seen.append(model)
        assert not model.training
        return {"val_acc": (model(images).argmax(1) == masks).float().mean()}

    def run(decay: float) -> tuple[nn.Module, list[dict]]:
        seed_everything(0)
        model = TinySeg()
        cfg = TrainConfig(epochs=3, lr=2e-2, ema_decay=decay, **QUIET)
        history = fit(model, lambda e: [(images, masks)] * 4, _seg_step, cfg, evaluate=evaluate)
        return model, history

    plain, plain_hist = run(0.0)
    assert seen[-1] is plain  # without EMA the model itself is judged
    averaged, hist = run(0.9)
    assert seen[-1] is not averaged  # the EMA copy was judged ...
    assert all(0.0 <= h["val_acc"] <= 1.0 and isinstance(h["val_acc"], float) for h in hist)
    judged = seen[-1]
    for a, b in zip(judged.state_dict().values(), averaged.state_dict().values(), strict=True):
        assert torch.equal(a, b)  # ... and is what fit leaves in the model
    assert any(
        not torch.equal(a, b)
        for a, b in zip(plain.state_dict().values(), averaged.state_dict().values(), strict=True)
    )
    assert [h["loss"] for h in hist] == [h["loss"] for h in plain_hist]  # EMA never trains


def test_evaluate_figures_may_not_clash_with_history_keys() -> None:
    images, masks = _data()
    with pytest.raises(ValueError, match="clash with history keys"):
        fit(
            TinySeg(),
            lambda e: [(images, masks)],
            _seg_step,
            TrainConfig(epochs=1, **QUIET),
            evaluate=lambda m: {"lr": 1.0},
        )


def test_grad_clip_bounds_the_update() -> None:
    images, masks = _data()

    def first_update(clip: float | None) -> float:
        seed_everything(0)
        model = TinySeg()
        before = [p.detach().clone() for p in model.parameters()]
        cfg = TrainConfig(
            epochs=1, lr=1.0, optimizer="sgd", weight_decay=0.0, grad_clip=clip, **QUIET
        )
        fit(model, lambda e: [(images, masks)], _seg_step, cfg)
        params = [p.detach() for p in model.parameters()]
        sq = sum(((p - q) ** 2).sum() for p, q in zip(params, before, strict=True))
        return float(sq.sqrt())

    # the first Nesterov step (momentum 0.9) with lr 1 moves the weights by 1.9 x the
    # (clipped) gradient norm
    assert first_update(1e-3) == pytest.approx(1.9e-3, rel=1e-3)
    assert first_update(None) > 1e-2


@pytest.mark.gpu
@pytest.mark.parametrize("amp", ["auto", "bf16", "fp16", "off"])
def test_cuda_amp_training_runs(amp: str) -> None:
    cfg = TrainConfig(epochs=3, lr=2e-2, progress=False, device="cuda", amp=amp, grad_clip=1.0)
    model, history = _train(cfg)
    assert history[-1]["loss"] < history[0]["loss"]
    assert next(model.parameters()).device.type == "cuda"
    dtype, scaler = resolve_amp(amp, torch.device("cuda"))
    assert scaler == (dtype == torch.float16)
