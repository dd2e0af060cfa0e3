"""False-pixel Image Generation (FIG, paper §2.2).

Queue generation: the RGB values of pixels the teacher mispredicts go into one FIFO ring buffer
per GT class (binary: Q+ = class 1, false negatives, length M; Q- = class 0, false positives,
length N). Image construction: for a real GT mask, every pixel of class c gets a value drawn
uniformly from queue c. The schedule (:class:`FIGSampler`) runs queue generation alone until
every queue is full, then generation and construction alternate.

Random draws use the given ``torch.Generator``; indices are drawn on the generator's device and
moved to the data, so a CPU generator works with CUDA tensors.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import torch

from pipeline.check import check_same_shape, check_shape

logger = logging.getLogger(__name__)


def _check_labels(x: torch.Tensor, num_classes: int, name: str) -> None:
    """Raise unless ``x`` is an integer map with values in [0, num_classes)."""
    if x.dtype.is_floating_point or x.dtype == torch.bool:
        raise ValueError(f"{name} must hold integer class ids (long); got dtype {x.dtype}.")
    if x.numel() and (int(x.min()) < 0 or int(x.max()) >= num_classes):
        raise ValueError(
            f"{name} values must lie in [0, {num_classes}); got [{int(x.min())}, {int(x.max())}]."
        )


def _randperm(n: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """A random permutation of range(n) drawn with ``generator``, returned on ``device``."""
    return torch.randperm(n, generator=generator, device=generator.device).to(device)


class FalsePixelQueues:
    """One FIFO ring buffer of pixel values per GT class (oldest entries overwritten).

    Args:
        m: length of every foreground queue (binary: Q+, false negatives).
        n: length of the background queue, class 0 (binary: Q-, false positives).
        d: values per pixel (3 for RGB).
        num_classes: number of GT classes C >= 2.
    """

    def __init__(self, m: int = 65536, n: int = 65536, d: int = 3, num_classes: int = 2) -> None:
        for field, value, low in (
            ("m", m, 1),
            ("n", n, 1),
            ("d", d, 1),
            ("num_classes", num_classes, 2),
        ):
            if not isinstance(value, int) or value < low:
                raise ValueError(
                    f"FalsePixelQueues.{field} must be an integer >= {low}; got {value!r}."
                )
        self.d = d
        self.num_classes = num_classes
        self.lengths = [n] + [m] * (num_classes - 1)
        self._buf = [torch.zeros(length, d) for length in self.lengths]  # c -> (L_c, D)
        self._ptr = [0] * num_classes  # next write position
        self._fill = [0] * num_classes

    def _append(self, c: int, values: torch.Tensor) -> None:
        """Push (k, D) values into queue c, oldest first out."""
        length = self.lengths[c]
        values = values[-length:].to(self._buf[c])  # only the newest L_c survive anyway
        pos = (self._ptr[c] + torch.arange(len(values))) % length  # (k,) distinct
        self._buf[c][pos] = values
        self._ptr[c] = (self._ptr[c] + len(values)) % length
        self._fill[c] = min(self._fill[c] + len(values), length)

    def push(
        self,
        images: torch.Tensor,
        preds: torch.Tensor,
        gts: torch.Tensor,
        k: int,
        generator: torch.Generator,
    ) -> None:
        """Queue k random false pixels of each class per image (fewer if fewer exist).

        Args:
            images: (B, D, H, W) float.
            preds: (B, H, W) long, the teacher's argmax.
            gts: (B, H, W) long ground truth; a pixel goes to queue ``gts`` if ``preds != gts``.
            k: pixels per image and class.
            generator: source of the random choice.
        """
        check_shape(images, f"B {self.d} H W", "images")
        sizes = check_shape(gts, "B H W", "gts")
        check_same_shape(preds, gts, ("preds", "gts"))
        if images.shape[0] != sizes["B"] or images.shape[2:] != gts.shape[1:]:
            raise ValueError(f"images {tuple(images.shape)} and gts {tuple(gts.shape)} disagree.")
        if k < 1:
            raise ValueError(f"k (pixels per image) must be >= 1; got {k}.")
        _check_labels(gts, self.num_classes, "gts")
        flat = images.flatten(2)  # (B, D, H*W)
        false = (preds != gts).flatten(1)  # (B, H*W)
        gt_flat = gts.flatten(1)  # (B, H*W)
        for b in range(images.shape[0]):
            for c in range(self.num_classes):
                idx = torch.nonzero(false[b] & (gt_flat[b] == c)).squeeze(1)  # (n_false,)
                if len(idx) == 0:
                    continue
                idx = idx[_randperm(len(idx), generator, idx.device)[:k]]
                self._append(c, flat[b][:, idx].T.detach().cpu())  # (k, D)

    def is_full(self) -> bool:
        """Whether every queue holds its full length."""
        return all(f == length for f, length in zip(self._fill, self.lengths, strict=True))

    def fill(self, c: int) -> int:
        """Number of values currently held by queue c."""
        return self._fill[c]

    def summary(self) -> list[dict[str, float | int | list[float]]]:
        """Per GT class: what the queue holds (fill, length, mean and std of each value)."""
        out: list[dict[str, float | int | list[float]]] = []
        for c in range(self.num_classes):
            held = self.values(c).double()  # (fill, D)
            mean = held.mean(0).tolist() if len(held) else [math.nan] * self.d
            std = held.std(0, correction=0).tolist() if len(held) else [math.nan] * self.d
            out.append({"class": c, "fill": self.fill(c), "length": self.lengths[c],
                        "mean": mean, "std": std})  # fmt: skip
        return out

    def state_dict(self) -> dict[str, Any]:
        """The queues' contents and positions (a resumed training run restores them)."""
        return {"buffers": [b.clone() for b in self._buf], "ptr": list(self._ptr),
                "fill": list(self._fill), "lengths": list(self.lengths)}  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if list(state["lengths"]) != self.lengths:
            raise ValueError(
                f"FIG queue lengths {list(state['lengths'])} differ from {self.lengths}."
            )
        self._buf = [b.clone() for b in state["buffers"]]
        self._ptr, self._fill = list(state["ptr"]), list(state["fill"])

    def values(self, c: int) -> torch.Tensor:
        """Queue c's values (fill, D), in insertion order oldest -> newest."""
        buf, ptr = self._buf[c], self._ptr[c]
        if self._fill[c] < self.lengths[c]:
            return buf[: self._fill[c]].clone()
        return torch.cat([buf[ptr:], buf[:ptr]])


def construct_images(
    queues: FalsePixelQueues, masks: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """Synthetic images whose class-c pixels are drawn uniformly from queue c.

    Args:
        queues: the false-pixel queues.
        masks: (B, H, W) long real GT masks.
        generator: source of the draws.

    Returns:
        (B, D, H, W) float32 on the masks' device.

    Raises:
        ValueError: a class present in ``masks`` has an empty queue, or labels out of range.
    """
    check_shape(masks, "B H W", "masks")
    _check_labels(masks, queues.num_classes, "masks")
    flat = masks.flatten()  # (B*H*W,)
    out = torch.empty(flat.numel(), queues.d, device=masks.device)  # (B*H*W, D)
    for c in range(queues.num_classes):
        idx = torch.nonzero(flat == c).squeeze(1)  # (n_c,)
        if len(idx) == 0:
            continue
        if queues.fill(c) == 0:
            raise ValueError(f"queue of class {c} is empty; push false pixels of class {c} first.")
        draw = torch.randint(
            queues.fill(c), (len(idx),), generator=generator, device=generator.device
        )
        out[idx] = queues.values(c).to(masks.device)[draw.to(masks.device)]
    b, h, w = masks.shape
    return out.reshape(b, h, w, queues.d).permute(0, 3, 1, 2).contiguous()  # (B, D, H, W)


@dataclass(frozen=True)
class FIGConfig:
    """FIG settings.

    Attributes:
        queue_len_pos: length M of every foreground queue (Q+).
        queue_len_neg: length N of the background queue (Q-).
        pixels_per_image: k, false pixels per image and class pushed per step.
        real_fraction: share of each constructed batch replaced by the real images (0 = paper).
        max_warmup_observations: 0 = wait until every queue is full (paper); > 0 = after that
            many ``observe`` calls, start once every queue is non-empty (a teacher that rarely
            errs on a class would otherwise never fill its queue).
    """

    queue_len_pos: int = 65536
    queue_len_neg: int = 65536
    pixels_per_image: int = 256
    real_fraction: float = 0.0
    max_warmup_observations: int = 0

    def __post_init__(self) -> None:
        for field in ("queue_len_pos", "queue_len_neg", "pixels_per_image"):
            value = getattr(self, field)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"FIGConfig.{field} must be an integer >= 1; got {value!r}.")
        if not 0.0 <= self.real_fraction <= 1.0:
            raise ValueError(
                f"FIGConfig.real_fraction must lie in [0, 1]; got {self.real_fraction}."
            )
        if not isinstance(self.max_warmup_observations, int) or self.max_warmup_observations < 0:
            raise ValueError(
                "FIGConfig.max_warmup_observations must be an integer >= 0; "
                f"got {self.max_warmup_observations!r}."
            )


class FIGSampler:
    """The FIG schedule: queue generation alone until ready, then generation and construction.

    A training loop calls :meth:`step` once per real batch: it always observes, and returns a
    synthetic batch once :attr:`ready` (``None`` before).
    """

    def __init__(self, cfg: FIGConfig, num_classes: int, generator: torch.Generator) -> None:
        self.cfg = cfg
        self.generator = generator
        self.queues = FalsePixelQueues(cfg.queue_len_pos, cfg.queue_len_neg, 3, num_classes)
        self.observations = 0
        self.constructions = 0

    def state_dict(self) -> dict[str, Any]:
        """Queues and counters; the generator is the caller's (saved as its own part)."""
        return {"queues": self.queues.state_dict(), "observations": self.observations,
                "constructions": self.constructions}  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.queues.load_state_dict(state["queues"])
        self.observations = int(state["observations"])
        self.constructions = int(state["constructions"])

    def observe(self, images: torch.Tensor, teacher_preds: torch.Tensor, gts: torch.Tensor) -> None:
        """Queue-generation step: push the teacher's false pixels of a real batch."""
        self.queues.push(images, teacher_preds, gts, self.cfg.pixels_per_image, self.generator)
        self.observations += 1

    @property
    def ready(self) -> bool:
        """Whether construction may start (all queues full, or the warm-up cap rule)."""
        if self.queues.is_full():
            return True
        cap = self.cfg.max_warmup_observations
        all_seen = all(self.queues.fill(c) > 0 for c in range(self.queues.num_classes))
        return cap > 0 and self.observations >= cap and all_seen

    def make_batch(
        self, masks: torch.Tensor, images: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Construct a synthetic batch on real GT masks.

        Args:
            masks: (B, H, W) long real GT masks (returned unchanged as the targets).
            images: (B, 3, H, W) the real images of ``masks``; needed only when
                ``real_fraction > 0``, where round(real_fraction * B) random items are kept real.

        Returns:
            (synthetic images (B, 3, H, W), masks (B, H, W)).

        Raises:
            RuntimeError: before :attr:`ready`.
        """
        if not self.ready:
            raise RuntimeError(
                "FIG queues are not ready yet; call observe() on real batches until sampler.ready."
            )
        out = construct_images(self.queues, masks, self.generator)
        n_real = math.floor(self.cfg.real_fraction * masks.shape[0] + 0.5)
        if n_real > 0:
            if images is None:
                raise ValueError("FIGConfig.real_fraction > 0 needs the real images; pass images=.")
            check_shape(images, f"{masks.shape[0]} 3 {masks.shape[1]} {masks.shape[2]}", "images")
            keep = _randperm(masks.shape[0], self.generator, masks.device)[:n_real]
            out[keep] = images[keep].to(out)
        self.constructions += 1
        return out, masks

    def step(
        self, images: torch.Tensor, teacher_preds: torch.Tensor, gts: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Observe a real batch, then (once ready) construct a synthetic batch on its masks."""
        self.observe(images, teacher_preds, gts)
        return self.make_batch(gts, images) if self.ready else None
