"""The training-failure check: a trained network that learned nothing stops the chain.

After training, a teacher, assistant or student is run (eval mode, no augmentation) over
the split it trained on. It fails when

- its mean per-image Dice there is below ``TRAIN_DICE_FLOOR`` (0.25; not for an assistant
  trained on transformed images only, which never saw a real one: see
  ``train_assistant._dice_floor``), or
- it predicts one class at every pixel of every image (e.g. background everywhere),

because a network that cannot segment its own training images gives soft labels (or test
scores) that mean nothing: distilling from it only wastes the rest of the chain. The stage
then raises :class:`WeakModelError` (exit 1, one message: what happened, what to try)
before writing anything; ``--allow-weak-teacher`` logs a warning and goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch import nn

from stages.data import SplitData, StoreSplit

logger = logging.getLogger(__name__)

TRAIN_DICE_FLOOR = 0.25  # mean per-image Dice on the training split (foreground classes)


class WeakModelError(ValueError):
    """A trained network failed the training check (a user error: exit 1, one message)."""


def saw_real_images(kind: str | None, fig_real_fraction: float = 0.0) -> bool:
    """Whether a network trained on real images: not an assistant trained on transformed
    images only (TA_b always; TA_f with ``--fig-real-fraction 0``, the paper's setting).
    ``kind`` is the assistant's ``--kind`` (None for a teacher or a student)."""
    if kind is None:
        return True
    return kind == "false-pixel" and fig_real_fraction > 0.0


def check_training(
    model: nn.Module,
    data: SplitData | StoreSplit,
    class_names: Sequence[str],
    role: str,
    *,
    batch_size: int,
    device: torch.device,
    allow_weak: bool = False,
    floor: float = TRAIN_DICE_FLOOR,
) -> dict:
    """Score ``model`` on its training split; raise when it learned nothing.

    Args:
        model: the trained network.
        data: the images it was trained on (the train split, or its non-validation part): a
            ``SplitData`` or a ``StoreSplit`` (read batch by batch).
        class_names: the store's class names, background first (K of them).
        role: what the network is, for the message ("teacher (unet-tiny)").
        batch_size: inference batch size.
        device: inference device.
        allow_weak: warn instead of raising.
        floor: the Dice floor (default ``TRAIN_DICE_FLOOR``).

    Returns:
        ``{"train_dice": float, "predicted_classes": [names], "passed": bool}``.

    Raises:
        WeakModelError: the check failed and ``allow_weak`` is False.
    """
    from pipeline.metrics import dice_iou, mean_std
    from stages.data import epoch_batches

    model.to(device).eval()
    dice, present = [], set()
    with torch.inference_mode():  # batch by batch: a split streamed from the store stays there
        for idx in epoch_batches(len(data), batch_size, 0, 0, shuffle=False):
            images, masks = data.batch(idx, device)
            pred = model(images).argmax(1)
            dice.append(dice_iou(pred, masks, len(class_names))[0].cpu())
            present.update(torch.unique(pred).tolist())
    train_dice = mean_std(torch.cat(dice))[0]
    names = [class_names[c] for c in sorted(present)]
    result = {"train_dice": train_dice, "predicted_classes": names, "passed": True}
    problem = _problem(train_dice, names, len(data), floor)
    if problem is None:
        logger.info("%s passed the training check (train-split Dice %.3f)", role, train_dice)
        return result
    result["passed"] = False
    message = (
        f"{role} failed the training check: {problem}; nothing downstream can learn from it. "
        "Try more optimizer steps (--epochs, --steps-per-epoch), a lower --lr, or a larger "
        "image size (the --size given to prepare); --allow-weak-teacher goes on anyway."
    )
    if not allow_weak:
        raise WeakModelError(message)
    logger.warning("%s (going on: --allow-weak-teacher)", message)
    return result


def _problem(train_dice: float, names: list[str], n: int, floor: float) -> str | None:
    if len(names) == 1:
        return (
            f"it predicts '{names[0]}' at every pixel of the {n} training images "
            f"(train-split Dice {train_dice:.3f})"
        )
    if not train_dice >= floor:  # NaN fails too
        return f"its Dice on the {n} training images is {train_dice:.3f}, below the floor {floor}"
    return None
