"""Folders of teacher maps as users hand them over, written the way their tools write them.

nnU-Net v2: ``export_prediction_from_logits`` with ``save_probabilities=True`` writes
``np.savez_compressed(output_file_truncated + '.npz', probabilities=probabilities_final)``
and ``save_pickle(properties_dict, output_file_truncated + '.pkl')`` beside the segmentation
(``<case>.png`` for 2-D natural images) and ``dataset.json``/``plans.json`` in the folder;
for 2-D data the probabilities are (C, 1, H, W).
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import cv2
import numpy as np


def noisy_maps(masks: np.ndarray, seed: int = 0, wrong: float = 0.1) -> np.ndarray:
    """(N, 2, H, W) float32 probabilities from (N, H, W) binary masks: confident on the
    mask, with a ``wrong`` share of pixels (seeded) on the other side, both directions."""
    rng = np.random.default_rng(seed)
    p_fg = np.where(masks > 0, 0.8, 0.2) + rng.uniform(-0.15, 0.15, masks.shape)
    flip = rng.random(masks.shape) < wrong
    p_fg = np.where(flip, 1.0 - p_fg, p_fg)  # (N, H, W)
    return np.stack([1.0 - p_fg, p_fg], axis=1).astype(np.float32)  # (N, 2, H, W)


def write_nnunet(folder: Path, ids: list[str], probs: np.ndarray) -> None:
    """nnU-Net v2's ``--save_probabilities`` output for 2-D images: float16 (C, 1, H, W)."""
    folder.mkdir(parents=True, exist_ok=True)
    for case, p in zip(ids, probs, strict=True):
        _, h, w = p.shape
        out = str(folder / case)
        np.savez_compressed(out + ".npz", probabilities=p.astype(np.float16)[:, None])
        properties = {
            "spacing": [999.0, 1.0, 1.0],
            "shape_before_cropping": (1, h, w),
            "bbox_used_for_cropping": [[0, 1], [0, h], [0, w]],
            "shape_after_cropping_and_before_resampling": (1, h, w),
        }
        with open(out + ".pkl", "wb") as f:
            pickle.dump(properties, f)
        cv2.imwrite(out + ".png", p.argmax(0).astype(np.uint8))  # the segmentation beside
    (folder / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "lesion": 1}}))
    (folder / "plans.json").write_text("{}")


def write_arrays(folder: Path, ids: list[str], maps: np.ndarray, ext: str = ".npy") -> None:
    """``<id>.npy`` or ``<id>.npz`` (one array), (C, H, W) each."""
    folder.mkdir(parents=True, exist_ok=True)
    for key, m in zip(ids, maps, strict=True):
        if ext == ".npy":
            np.save(folder / f"{key}.npy", m)
        else:
            np.savez_compressed(folder / f"{key}.npz", m)


def write_pngs(folder: Path, ids: list[str], probs: np.ndarray, bits: int = 8) -> np.ndarray:
    """Single-channel PNGs of p(foreground); returns the p(foreground) they hold (N, H, W)."""
    folder.mkdir(parents=True, exist_ok=True)
    top = 2**bits - 1
    codes = np.rint(probs[:, 1] * top).astype(np.uint8 if bits == 8 else np.uint16)
    for key, code in zip(ids, codes, strict=True):
        assert cv2.imwrite(str(folder / f"{key}.png"), code)
    return codes / top
