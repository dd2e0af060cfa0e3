"""Training set-up shared by ``pipeline.train``: seeding, device, AMP, optimiser, LR schedule."""

from __future__ import annotations

import copy
import logging
import math
import random
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

logger = logging.getLogger(__name__)

OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("poly", "cosine", "constant")
AMP_MODES = ("auto", "off", "bf16", "fp16")
POLY_POWER = 0.9  # nnU-Net's polynomial decay exponent
SGD_MOMENTUM = 0.9  # Nesterov SGD momentum


def check_choice(field: str, value: object, choices: tuple[str, ...]) -> None:
    """Raise naming ``field`` and the allowed ``choices`` when ``value`` is not one of them."""
    if value not in choices:
        raise ValueError(f"{field} must be one of {', '.join(choices)}; got {value!r}.")


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch (CPU and CUDA); return a CPU generator seeded with ``seed``.

    Deterministic algorithms are not forced (``torch.use_deterministic_algorithms`` is left
    alone): CPU runs repeat exactly, CUDA runs up to non-deterministic kernels.
    """
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    return torch.Generator().manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    """``"auto"`` → CUDA if available, else CPU; otherwise the named device, checked to exist."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ValueError(f'device must be "auto" or a torch device string, got {name!r}.') from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f'device {name!r} asked for CUDA but none is available; use "cpu".')
    return device


def resolve_amp(amp: str, device: torch.device) -> tuple[torch.dtype | None, bool]:
    """The autocast dtype (``None``: AMP off) and whether a GradScaler is needed."""
    check_choice("amp", amp, AMP_MODES)
    if amp == "off":
        return None, False
    if device.type != "cuda":
        if amp != "auto":
            logger.warning("amp=%r is CUDA-only; training on %s without AMP.", amp, device)
        return None, False
    if amp == "bf16" or (amp == "auto" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16, False
    return torch.float16, True


def schedule_factor(schedule: str, step: int, total_steps: int, warmup_steps: int = 0) -> float:
    """LR multiplier of 0-based ``step`` out of ``total_steps``.

    The first ``warmup_steps`` steps ramp linearly up to 1 (``(step + 1) / warmup_steps``);
    the rest follow ``schedule`` from 1 down towards 0 at ``total_steps``.
    """
    check_choice("schedule", schedule, SCHEDULES)
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}.")
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = min((step - warmup_steps) / max(total_steps - warmup_steps, 1), 1.0)
    if schedule == "poly":
        return (1.0 - progress) ** POLY_POWER
    return 0.5 * (1.0 + math.cos(math.pi * progress))


class WeightEMA:
    """An exponential moving average of a model's weights (and BatchNorm statistics).

    After update ``t`` (1-based) every floating-point entry of the state dict moves as
    ``ema = d · ema + (1 − d) · value`` with ``d = min(decay, (1 + t) / (10 + t))``: the
    warm-up of the decay keeps a short run from averaging in its random initialisation.
    Integer entries (``num_batches_tracked``) are copied.

    Attributes:
        model: the averaged copy, in ``eval()`` mode, without gradients.
        updates: number of updates so far.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1), got {decay!r}.")
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Fold the current weights of ``model`` into the average."""
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        current = model.state_dict()
        for name, ema in self.model.state_dict().items():
            value = current[name].detach()
            if ema.dtype.is_floating_point:
                ema.lerp_(value.to(ema.dtype), 1.0 - d)
            else:
                ema.copy_(value)

    def copy_to(self, model: nn.Module) -> None:
        """Load the averaged weights into ``model``."""
        model.load_state_dict(self.model.state_dict())

    def state_dict(self) -> dict[str, Any]:
        """The averaged weights and the update count (what a resumed run needs)."""
        return {"model": self.model.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.updates = int(state["updates"])


def build_optimizer(
    model: nn.Module, name: str, lr: float, weight_decay: float
) -> torch.optim.Optimizer:
    """AdamW or Nesterov SGD over the trainable parameters of ``model``."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no trainable parameters; nothing for fit() to train.")
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    return torch.optim.SGD(
        params, lr=lr, momentum=SGD_MOMENTUM, nesterov=True, weight_decay=weight_decay
    )


def to_device(batch: Any, device: torch.device) -> Any:
    """Move every Tensor inside a Tensor / tuple / list / dict batch to ``device``."""
    if isinstance(batch, Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, tuple | list):
        return type(batch)(to_device(v, device) for v in batch)
    return batch
