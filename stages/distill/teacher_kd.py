"""The live teacher of ``plc distill --loss <teacher loss>`` (FitNet, AT, EMKD, PA, IFVD,
CIRKD, SPKD: the rows of ``pipeline.kd_table`` that read ``teacher``).

The teacher is the label store's own T (its provenance names the checkpoint, as ``--live``
finds it; ``--teacher`` overrides), a plc-kd checkpoint of a registry network: the loss
reads its named feature taps (``forward_taps``), which a TorchScript file or imported maps
do not have. It runs once per step, in ``eval()`` and without grad, on the batch the student
sees (augmented), and every tap the loss reads comes from that one forward.

The student and the loss's own parameters (FitNet's connector, CIRKD's projection head and
memory) train together as one :class:`Distiller`, so the optimiser, the EMA, gradient
clipping and ``--resume`` see them; the student's checkpoint holds the student only, and the
loss's parameters are written beside it (``kd_modules.pt``; with ``--ema-decay`` they are the
EMA of their training values like the student's weights — CIRKD's memory queues too, which
makes that saved memory a record, not a queue to go on from).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from pipeline.kd_table import KDLoss, implementation

logger = logging.getLogger(__name__)

KD_MODULES = "kd_modules.pt"


class Distiller(nn.Module):
    """The student and the loss's trainable parts, trained as one module; ``forward`` is
    the student's, so evaluation and the EMA copy see a plain segmentation network."""

    def __init__(self, student: nn.Module, kd: nn.Module) -> None:
        super().__init__()
        self.student = student
        self.kd = kd

    def forward(self, x: Tensor) -> Tensor:
        return self.student(x)


@dataclass
class LiveTeacher:
    """The frozen teacher, the taps it gives, and what identifies it."""

    net: nn.Module
    taps: tuple[str, ...]
    path: Path
    sha256: str

    @torch.no_grad()
    def __call__(self, images: Tensor) -> tuple[Tensor, list[Tensor]]:
        """(logits, [tap maps in order]) for ``images``, float32, no grad."""
        logits, maps = self.net.forward_taps(images, self.taps)
        return logits.float(), [maps[name].float() for name in self.taps]


def teacher_path(override: Path | None, label_store) -> Path:
    """``--teacher`` if given, else the teacher checkpoint the label store's provenance names."""
    if override is not None:
        return Path(override)
    recorded = label_store.provenance.get("networks", {}).get("teacher", {}).get("path")
    if recorded is None:
        raise ValueError(
            f"the label store {label_store.path} names no teacher in its provenance: pass "
            "--teacher <teacher.pt> for a teacher loss."
        )
    return Path(recorded)


def resolve_taps(text: str | None, net: nn.Module, count: int, who: str) -> tuple[str, ...]:
    """The ``count`` taps ``text`` names (comma-separated), else the network's ``kd_taps``
    (the last ``count`` of them); checked against the network's taps."""
    from pipeline.models.common import check_taps

    name = getattr(net, "model_name", type(net).__name__)
    if not hasattr(net, "forward_taps"):
        raise ValueError(f"the {who} {name!r} has no feature taps (forward_taps).")
    if text:
        taps = tuple(t.strip() for t in text.split(",") if t.strip())
    else:
        taps = tuple(net.kd_taps[-count:])
    if len(taps) != count:
        raise ValueError(
            f"this loss reads {count} tap(s) of the {who}, got {len(taps)} ({', '.join(taps)})."
        )
    check_taps(name, taps, net.taps)
    return taps


def load_teacher(path: Path, text: str | None, count: int, device: torch.device) -> LiveTeacher:
    """The frozen teacher network at ``path`` with its ``count`` taps.

    Raises:
        ValueError: ``path`` is a TorchScript file or imported maps (no taps), or does not
            load, or the taps are not the network's.
    """
    from pipeline.torchscript import build_teacher, teacher_sha256

    net, meta = build_teacher(path, device)
    if meta.get("teacher_kind") != "checkpoint":
        raise ValueError(
            f"the teacher {path} is a {meta.get('teacher_kind')} teacher: a teacher loss reads "
            "named feature taps, which only a plc-kd checkpoint of a registry network has; use "
            "a stored loss (--loss kd, cwd, dkd or dist) or pass --teacher <teacher.pt>."
        )
    net.eval().requires_grad_(False)
    taps = resolve_taps(text, net, count, "teacher")
    return LiveTeacher(net, taps, Path(path), teacher_sha256(path))  # on device: build_teacher


def channels(net: nn.Module, taps: Sequence[str], size: tuple[int, int], device) -> list[int]:
    """Channels of each tap, from one forward of a blank image in ``eval()`` (no statistics
    change; the mode is restored)."""
    was_training = net.training
    net.eval()
    with torch.no_grad():
        _, maps = net.forward_taps(torch.zeros(1, 3, *size, device=device), tuple(taps))
    net.train(was_training)
    return [int(maps[t].shape[1]) for t in taps]


def build_distiller(
    row: KDLoss,
    student: nn.Module,
    student_taps: tuple[str, ...],
    teacher: LiveTeacher,
    classes: int,
    size: tuple[int, int],
    device: torch.device,
) -> Distiller:
    """The student and the loss module of ``row``, sized from the two networks' taps."""
    s_ch = channels(student, student_taps, size, device)
    t_ch = channels(teacher.net, teacher.taps, size, device)
    kd = implementation(row)(s_ch, t_ch, classes).to(device)
    logger.info(
        "%s: student taps %s (%s channels), teacher taps %s (%s); %d trainable parameters",
        row.name, ",".join(student_taps), s_ch, ",".join(teacher.taps), t_ch,
        sum(p.numel() for p in kd.parameters()),
    )  # fmt: skip
    return Distiller(student, kd)


def save_kd_modules(path: Path, kd: nn.Module, meta: dict) -> Path | None:
    """Write the loss module's parameters and buffers (the connector, the head, the memory)
    beside the student, atomically; nothing when the loss has none."""
    import io

    from pipeline.checkpoint import write_atomic

    state = {k: v.detach().cpu() for k, v in kd.state_dict().items()}
    if not state:
        return None
    buffer = io.BytesIO()
    torch.save({"state_dict": state, **meta}, buffer)
    write_atomic(path, buffer.getvalue())
    return path
