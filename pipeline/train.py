"""The one training loop every network shares: seeding, device, AMP, optimiser, LR schedule.

A caller supplies ``batches(epoch)`` (an iterable of batch objects) and ``step(model,
batch)`` returning named loss terms; ``fit`` does the rest and returns per-epoch means.
The recipe options (LR warmup, gradient clipping, an EMA of the weights) live on
:class:`TrainConfig`; an optional ``evaluate(model)`` adds validation figures per epoch.

Resume: with a ``state`` (an :class:`EpochState`: where snapshots go), ``fit`` hands it a
snapshot of everything the next epoch depends on at the end of every epoch — weights, EMA,
optimiser, grad scaler, schedule position, history, the python / numpy / torch RNG states
and the state of the caller's ``parts`` (its own generators, FIG's queues) — and, when the
state holds one, starts from it. Batches are drawn per epoch from ``(seed, epoch)`` (or from
a part's generator), so a run resumed after its epoch ``e`` continues bit for bit as the
uninterrupted run did (on CPU; CUDA up to non-deterministic kernels).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import random
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np
import torch
from torch import Tensor, nn

from pipeline.train_setup import (
    AMP_MODES,
    OPTIMIZERS,
    SCHEDULES,
    WeightEMA,
    build_optimizer,
    check_choice,
    resolve_amp,
    resolve_device,
    schedule_factor,
    seed_everything,
    to_device,
)

__all__ = [
    "EpochState",
    "GeneratorPart",
    "Part",
    "TrainConfig",
    "fit",
    "resolve_amp",
    "resolve_device",
    "schedule_factor",
    "seed_everything",
]

logger = logging.getLogger(__name__)

_RESERVED = ("epoch", "lr", "seconds")  # history keys that loss terms may not use
SNAPSHOT_FORMAT = 1  # the layout of fit's epoch-end snapshot (EpochState.save)


class Part(Protocol):
    """Something of the caller's whose state the next epoch depends on (``fit(parts=...)``)."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class GeneratorPart:
    """A ``torch.Generator`` as a :class:`Part` (an augmentation or sampling generator)."""

    def __init__(self, generator: torch.Generator) -> None:
        self.generator = generator

    def state_dict(self) -> dict[str, Any]:
        return {"state": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["state"])


class EpochState(Protocol):
    """Where ``fit`` keeps its epoch-end snapshots (``stages.train.resume.TrainingState``)."""

    def load(self) -> dict[str, Any] | None:
        """The snapshot to continue from, or None to start at epoch 0."""
        ...

    def save(self, snapshot: dict[str, Any]) -> None:
        """Keep ``snapshot`` (replacing the previous one; atomically)."""
        ...


@dataclass(frozen=True)
class TrainConfig:
    """How to train.

    Attributes:
        epochs: passes over ``batches(epoch)``, >= 1.
        lr: peak learning rate, > 0.
        weight_decay: decoupled (AdamW) or L2 (SGD) weight decay, >= 0.
        optimizer: "adamw" or "sgd" (Nesterov, momentum 0.9).
        schedule: per-step LR decay to 0 over all steps: "poly" (power 0.9), "cosine",
            or "constant".
        seed: seeds python, numpy and torch at the start of ``fit``; in [0, 2**32).
        amp: "auto" (bf16 autocast on CUDA where supported, else fp16 with a GradScaler),
            "off", "bf16", "fp16". On CPU AMP is always off.
        grad_clip: max global gradient norm, > 0, or None for no clipping.
        warmup_steps: the LR ramps linearly from lr / warmup_steps to lr over this many
            first steps, then follows ``schedule``; 0 for no warmup.
        ema_decay: decay of an exponential moving average of the weights (see
            ``WeightEMA``), in (0, 1); 0 for none. With it, ``evaluate`` sees the average
            and ``fit`` leaves the averaged weights in the model (so checkpoints, evaluation
            and a team's outputs use them).
        device: "auto" (CUDA if available, else CPU) or a torch device string.
        progress: show a progress bar with the running loss.
        log_every: log the running loss every this many steps (0: only per epoch).
    """

    epochs: int = 10
    lr: float = 1e-3
    weight_decay: float = 1e-4
    optimizer: Literal["adamw", "sgd"] = "adamw"
    schedule: Literal["poly", "cosine", "constant"] = "poly"
    seed: int = 0
    amp: Literal["auto", "off", "bf16", "fp16"] = "auto"
    grad_clip: float | None = None
    warmup_steps: int = 0
    ema_decay: float = 0.0
    device: str = "auto"
    progress: bool = True
    log_every: int = 0

    def __post_init__(self) -> None:
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_choice("schedule", self.schedule, SCHEDULES)
        check_choice("amp", self.amp, AMP_MODES)
        rules = {
            "epochs": (self.epochs >= 1, ">= 1"),
            "lr": (self.lr > 0, "> 0"),
            "weight_decay": (self.weight_decay >= 0, ">= 0"),
            "seed": (0 <= self.seed < 2**32, "in [0, 2**32)"),
            "grad_clip": (self.grad_clip is None or self.grad_clip > 0, "None or > 0"),
            "warmup_steps": (self.warmup_steps >= 0, ">= 0"),
            "ema_decay": (0.0 <= self.ema_decay < 1.0, "0 (off) or in (0, 1)"),
            "device": (bool(self.device), '"auto" or a torch device string such as "cuda:0"'),
            "log_every": (self.log_every >= 0, ">= 0"),
        }
        for field, (ok, rule) in rules.items():
            if not ok:
                raise ValueError(f"{field} must be {rule}, got {getattr(self, field)!r}.")


@dataclass
class _Loop:
    """The state ``fit`` threads through its steps."""

    model: nn.Module
    step: Callable[[nn.Module, Any], dict[str, Tensor]]
    cfg: TrainConfig
    device: torch.device
    optimizer: torch.optim.Optimizer
    amp_dtype: torch.dtype | None
    scaler: torch.amp.GradScaler  # disabled unless fp16 autocast
    total_steps: int
    epoch_steps: int | None  # for the progress bar; None when unknown
    ema: WeightEMA | None = None
    global_step: int = 0


def fit(
    model: nn.Module,
    batches: Callable[[int], Iterable[Any]],
    step: Callable[[nn.Module, Any], dict[str, Tensor]],
    cfg: TrainConfig,
    *,
    steps_per_epoch: int | None = None,
    on_epoch_end: Callable[[int, dict[str, float]], None] | None = None,
    evaluate: Callable[[nn.Module], dict[str, float]] | None = None,
    desc: str = "train",
    state: EpochState | None = None,
    parts: Mapping[str, Part] | None = None,
) -> list[dict[str, float]]:
    """Train ``model`` for ``cfg.epochs`` epochs; return one history record per epoch.

    ``batches(epoch)`` (epoch 0-based) yields batch objects; any Tensor, or tuple / list /
    dict of Tensors, is moved to the training device for you (other objects are passed as
    they are). ``step(model, batch)`` runs under autocast (when AMP is on) and returns named
    scalar loss terms including ``"loss"``, the one back-propagated. The LR follows
    ``cfg.warmup_steps`` then ``cfg.schedule`` per step over ``epochs * steps_per_epoch``
    steps. ``fit`` seeds with ``cfg.seed`` first and leaves the model in ``eval()`` mode on
    the training device, holding the EMA weights when ``cfg.ema_decay`` is set.

    Args:
        model: the network; moved to the resolved ``cfg.device``.
        batches: epoch -> iterable of batches.
        step: (model, batch) -> {"loss": Tensor, <other terms>: Tensor}.
        cfg: the training config.
        steps_per_epoch: batches used per epoch (an epoch stops there); required for the
            "poly" and "cosine" schedules unless ``batches(epoch)`` has a ``len()``.
        on_epoch_end: called with (epoch, record) after each epoch.
        evaluate: called after each epoch with the model to judge (the EMA copy when
            ``cfg.ema_decay`` is set, else the model itself), in ``eval()`` mode; the named
            figures it returns (e.g. ``{"val_dice": 0.7}``) join that epoch's record.
        desc: progress-bar label.
        state: keeps a snapshot after every epoch (after ``evaluate`` and ``on_epoch_end``)
            and, when ``state.load()`` returns one, continues after its epoch: the history
            returned includes the epochs before it.
        parts: the caller's own stateful objects (named), saved in and restored from the
            snapshot; needs ``state``.

    Returns:
        ``[{"epoch": e, "loss": mean, <term>: mean, "lr": last LR, "seconds": t}, ...]``.

    Raises:
        RuntimeError: a loss term is NaN or infinite (names the epoch, step and term).
        ValueError: a step returns no "loss", or an epoch yields no batches; a snapshot
            that does not fit this model, these parts or ``cfg.epochs``.
    """
    parts = dict(parts or {})
    if parts and state is None:
        raise ValueError("fit(parts=...) needs state=: parts are saved in its snapshots.")
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    model.to(device).train()
    amp_dtype, use_scaler = resolve_amp(cfg.amp, device)
    loop = _Loop(
        model=model,
        step=step,
        cfg=cfg,
        device=device,
        optimizer=build_optimizer(model, cfg.optimizer, cfg.lr, cfg.weight_decay),
        amp_dtype=amp_dtype,
        scaler=torch.amp.GradScaler(device.type, enabled=use_scaler),
        total_steps=0,  # set once the first epoch's batches are known
        epoch_steps=None,
        ema=WeightEMA(model, cfg.ema_decay) if cfg.ema_decay > 0 else None,
    )
    snapshot = state.load() if state is not None else None
    history: list[dict[str, float]] = []
    if snapshot is not None:
        history = _restore(loop, snapshot, parts)
        logger.info("%s: resumed after epoch %d of %d", desc, len(history), cfg.epochs)
    start = len(history)
    first = batches(start)
    epoch_steps = _steps_per_epoch(first, steps_per_epoch, cfg.schedule)
    loop.total_steps = cfg.epochs * (epoch_steps or 1)
    loop.epoch_steps = epoch_steps
    with _progress_bar(cfg.progress) as bar:
        for epoch in range(start, cfg.epochs):
            epoch_batches = first if epoch == start else batches(epoch)
            record = _run_epoch(loop, epoch_batches, epoch, steps_per_epoch, bar, desc)
            if evaluate is not None:
                record.update(_evaluate(loop, evaluate))
            logger.info("%s epoch %d: %s", desc, epoch, record)
            history.append(record)
            if on_epoch_end is not None:
                on_epoch_end(epoch, record)
            if state is not None:
                state.save(_snapshot(loop, history, parts))
    if loop.ema is not None:
        loop.ema.copy_to(model)
    model.eval()
    return history


def _snapshot(
    loop: _Loop, history: list[dict[str, float]], parts: Mapping[str, Part]
) -> dict[str, Any]:
    """Everything the next epoch depends on, as tensors and plain values (``torch.load``
    with ``weights_only=True`` reads it back)."""
    np_state = np.random.get_state(legacy=False)
    rng = {
        "python": random.getstate(),
        "numpy": {
            "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    return {
        "format": SNAPSHOT_FORMAT,
        "epochs": loop.cfg.epochs,
        "history": [dict(row) for row in history],
        "global_step": loop.global_step,
        "model": loop.model.state_dict(),
        "optimizer": loop.optimizer.state_dict(),
        "scaler": loop.scaler.state_dict(),
        "ema": None if loop.ema is None else loop.ema.state_dict(),
        "rng": rng,
        "parts": {name: part.state_dict() for name, part in parts.items()},
    }


def _restore(
    loop: _Loop, snapshot: dict[str, Any], parts: Mapping[str, Part]
) -> list[dict[str, float]]:
    """Load a snapshot of :func:`_snapshot` into the loop; returns its history."""
    problems = []
    if snapshot.get("format") != SNAPSHOT_FORMAT:
        problems.append(f"format {snapshot.get('format')!r}, expected {SNAPSHOT_FORMAT}")
    if snapshot.get("epochs") != loop.cfg.epochs:
        problems.append(f"{snapshot.get('epochs')} epochs, this run has {loop.cfg.epochs}")
    if set(snapshot.get("parts", {})) != set(parts):
        problems.append(f"parts {sorted(snapshot.get('parts', {}))}, expected {sorted(parts)}")
    if (snapshot.get("ema") is None) != (loop.ema is None):
        problems.append("an EMA where this run has none, or the reverse")
    if problems:
        raise ValueError(f"the training snapshot does not fit this run: {'; '.join(problems)}.")
    loop.model.load_state_dict(snapshot["model"])
    loop.optimizer.load_state_dict(snapshot["optimizer"])
    loop.scaler.load_state_dict(snapshot["scaler"])
    if loop.ema is not None:
        loop.ema.load_state_dict(snapshot["ema"])
    loop.global_step = int(snapshot["global_step"])
    for name, part in parts.items():
        part.load_state_dict(snapshot["parts"][name])
    rng = snapshot["rng"]
    version, internal, gauss = rng["python"]
    random.setstate((version, tuple(internal), gauss))
    np.random.set_state(
        {
            "bit_generator": "MT19937",
            "state": {
                "key": rng["numpy"]["key"].numpy().astype(np.uint32),
                "pos": rng["numpy"]["pos"],
            },
            "has_gauss": rng["numpy"]["has_gauss"],
            "gauss": rng["numpy"]["gauss"],
        }
    )
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    # interned keys: the same str objects as a fresh run's, so checkpoints that pickle the
    # history come out byte-identical (pickle writes a repeated object once, by reference)
    return [{sys.intern(str(k)): v for k, v in row.items()} for row in snapshot["history"]]


def _evaluate(loop: _Loop, evaluate: Callable[[nn.Module], dict[str, float]]) -> dict[str, float]:
    """Figures of ``evaluate`` on the EMA (or the model) in eval mode; training mode after."""
    judged = loop.ema.model if loop.ema is not None else loop.model
    judged.eval()
    try:
        figures = evaluate(judged)
    finally:
        loop.model.train()
    clash = [name for name in figures if name in _RESERVED or name == "loss"]
    if clash:
        raise ValueError(f"evaluate() figures {clash} clash with history keys; rename them.")
    return {name: float(value) for name, value in figures.items()}


def _steps_per_epoch(first: Iterable[Any], given: int | None, schedule: str) -> int | None:
    """Steps per epoch for the LR schedule: ``given``, else ``len(first)``; None if unneeded."""
    if given is not None:
        if given < 1:
            raise ValueError(f"steps_per_epoch must be >= 1, got {given!r}.")
        return given
    if hasattr(first, "__len__"):
        return max(len(first), 1)
    if schedule == "constant":
        return None  # the constant schedule never looks at the total
    raise ValueError(
        f'schedule "{schedule}" needs the number of steps: pass steps_per_epoch to fit() '
        "when batches(epoch) has no len()."
    )


def _run_epoch(
    loop: _Loop, epoch_batches: Iterable[Any], epoch: int, limit: int | None, bar: Any, desc: str
) -> dict[str, float]:
    start = time.perf_counter()
    sums: dict[str, float] = {}
    task = (
        bar.add_task(f"{desc} {epoch + 1}/{loop.cfg.epochs}", total=loop.epoch_steps)
        if bar
        else None
    )
    lr = loop.cfg.lr
    n = 0
    for n, batch in enumerate(itertools.islice(epoch_batches, limit), start=1):
        lr, values = _train_step(loop, to_device(batch, loop.device), epoch, n)  # lr it used
        for name, value in values.items():
            sums[name] = sums.get(name, 0.0) + value
        running = sums["loss"] / n
        if bar is not None:
            bar.update(task, advance=1, description=f"{desc} {epoch + 1} loss {running:.4f}")
        if loop.cfg.log_every and n % loop.cfg.log_every == 0:
            logger.info("%s epoch %d step %d: loss %.4f lr %.3g", desc, epoch, n, running, lr)
    if n == 0:
        raise ValueError(
            f"batches({epoch}) yielded no batches; fit() needs at least one per epoch."
        )
    means = {name: total / n for name, total in sums.items()}
    return {"epoch": epoch, **means, "lr": lr, "seconds": time.perf_counter() - start}


def _train_step(loop: _Loop, batch: Any, epoch: int, n: int) -> tuple[float, dict[str, float]]:
    """One optimiser step; returns the LR it used and the terms as floats (one sync)."""
    factor = schedule_factor(
        loop.cfg.schedule, loop.global_step, loop.total_steps, loop.cfg.warmup_steps
    )
    lr = loop.cfg.lr * factor
    for group in loop.optimizer.param_groups:
        group["lr"] = lr
    loop.optimizer.zero_grad(set_to_none=True)
    with _autocast(loop.device, loop.amp_dtype):
        terms = loop.step(loop.model, batch)
    values = _term_values(terms, epoch, n)
    loop.scaler.scale(terms["loss"]).backward()  # a disabled scaler passes everything through
    if loop.cfg.grad_clip is not None:
        loop.scaler.unscale_(loop.optimizer)
        nn.utils.clip_grad_norm_(loop.model.parameters(), loop.cfg.grad_clip)
    loop.scaler.step(loop.optimizer)
    loop.scaler.update()
    if loop.ema is not None:
        loop.ema.update(loop.model)
    loop.global_step += 1
    return lr, values


def _term_values(terms: dict[str, Tensor], epoch: int, n: int) -> dict[str, float]:
    """Check the step's terms and read them as floats; NaN/inf raises naming the term."""
    if not isinstance(terms, dict) or "loss" not in terms:
        got = list(terms) if isinstance(terms, dict) else type(terms).__name__
        raise ValueError(f"step() must return a dict of loss terms including 'loss', got {got}.")
    clash = [name for name in terms if name in _RESERVED]
    if clash:
        raise ValueError(
            f"step() terms {clash} clash with history keys {list(_RESERVED)}; rename them."
        )
    bad = [name for name, v in terms.items() if not isinstance(v, Tensor) or v.numel() != 1]
    if bad:
        raise ValueError(f"step() terms {bad} must be scalar Tensors.")
    stacked = torch.stack([v.detach().float().reshape(()) for v in terms.values()])  # (T,)
    values = dict(zip(terms, stacked.tolist(), strict=True))
    for name, value in values.items():
        if not math.isfinite(value):
            raise RuntimeError(
                f"loss term '{name}' is {value} at epoch {epoch} step {n}; lower the lr, "
                "set grad_clip, or check the inputs."
            )
    return values


def _autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


@contextlib.contextmanager
def _progress_bar(enabled: bool) -> Iterator[Any]:
    """A rich progress bar on stderr, or ``None`` when disabled (nothing is printed)."""
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.progress import Progress

    with Progress(*Progress.get_default_columns(), console=Console(stderr=True)) as bar:
        yield bar
