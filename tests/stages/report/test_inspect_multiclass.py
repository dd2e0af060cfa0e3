"""The inspect panel on three classes: each lesion type has its own GT colour."""

from __future__ import annotations

import numpy as np

from stages.report.inspect import GT_COLOURS, panel


def test_gt_tile_colours_each_class() -> None:
    mask = np.zeros((16, 16), np.uint8)
    mask[2:6, 2:6], mask[10:14, 10:14] = 1, 2
    image = np.zeros((16, 16, 3), np.uint8)
    logp = np.log(np.full((3, 16, 16), 1 / 3, np.float32))
    out = panel(image, mask, {"plc": logp}, tile=16)  # (22 + 16, tiles + gaps, 3)
    gt = out[22:, 16 + 4 : 32 + 4]  # the second tile, under its title bar
    assert tuple(gt[3, 3]) == (255, 255, 255) and tuple(gt[12, 12]) == tuple(GT_COLOURS[2])
    assert tuple(gt[0, 0]) == (0, 0, 0) and tuple(GT_COLOURS[2]) != (255, 255, 255)
