"""FIG with an imported teacher: T's argmax on the augmented batch is its augmented map's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from stages.data import SplitData
from stages.train.assistant import FalsePixelBatches
from stages.train.config import AssistantConfig


def _fig(tmp_path: Path, flip: bool, augment: bool) -> FalsePixelBatches:
    """FIG over 6 synthetic 16² images whose imported maps are one-hot GT (``flip``: of the
    other class, so every pixel is false)."""
    from pipeline.imported import ImportedTeacher, open_imported, write_imported

    g = torch.Generator().manual_seed(0)
    masks = (torch.rand(6, 16, 16, generator=g) > 0.6).long()
    images = (torch.rand(6, 3, 16, 16, generator=g) * 255).to(torch.uint8)
    ids = [f"i{k}" for k in range(6)]
    onehot = torch.nn.functional.one_hot(1 - masks if flip else masks, 2).permute(0, 3, 1, 2)
    write_imported(tmp_path / "t", onehot.float().numpy(), ids, {"classes": ["bg", "fg"],
                   "size": [16, 16]})  # fmt: skip
    data = SplitData(images, masks, np.arange(6), ids)
    cfg = AssistantConfig(dataset="g", kind="false-pixel", batch_size=3, augment=augment,
                          fig_queue_len=64, fig_pixels_per_image=8, fig_fill_passes=2)  # fmt: skip
    teacher = ImportedTeacher(open_imported(tmp_path / "t"))
    return FalsePixelBatches(cfg, teacher, data, 2, torch.device("cpu"))


@pytest.mark.parametrize("augment", [False, True])
def test_a_teacher_equal_to_the_gt_makes_no_false_pixel(tmp_path: Path, augment: bool) -> None:
    """Augmented jointly, the map's argmax stays the augmented mask at every pixel
    (``pipeline.augment`` keeps an all-correct label all-correct): FIG finds nothing."""
    fig = _fig(tmp_path, flip=False, augment=augment)
    with pytest.raises(ValueError, match="the teacher made no false pixels of some class"):
        fig.fill()


def test_a_teacher_wrong_everywhere_fills_both_queues(tmp_path: Path) -> None:
    fig = _fig(tmp_path, flip=True, augment=True)
    fig.fill()
    assert fig.sampler.ready
    images, masks = next(iter(fig(0)))
    assert images.shape == (3, 3, 16, 16) and masks.shape == (3, 16, 16)
