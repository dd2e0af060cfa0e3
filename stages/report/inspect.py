"""inspect stage: a paper-Fig-4-style panel of one image's soft labels along the cascade."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from pipeline.variants import VARIANTS
from stages.report.config import InspectConfig

logger = logging.getLogger(__name__)
# GT tile colours by class id: background black, class 1 white (binary data), then one
# colour per further lesion type (ids beyond the table share its last colour)
GT_COLOURS = np.array(
    [(0, 0, 0), (255, 255, 255), (255, 160, 0), (0, 170, 255), (220, 0, 220), (0, 200, 0)],
    np.uint8,
)

TITLES = {v.name: v.label for v in VARIANTS}  # the report's row labels


def _label(tile: np.ndarray, text: str) -> np.ndarray:
    import cv2

    bar = np.full((22, tile.shape[1], 3), 255, np.uint8)
    cv2.putText(bar, text, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return np.vstack([bar, tile])


def _heat(prob: np.ndarray, wrong: np.ndarray) -> np.ndarray:
    """Foreground probability as a colour map (RGB) with false pixels drawn in red."""
    import cv2

    heat = cv2.applyColorMap((prob * 255).astype(np.uint8), cv2.COLORMAP_VIRIDIS)[..., ::-1].copy()
    heat[wrong] = (255, 0, 0)
    return heat


def panel(
    image: np.ndarray, mask: np.ndarray, logps: dict[str, np.ndarray], tile: int
) -> np.ndarray:
    """RGB panel: image, GT, then each variant's foreground probability (false pixels red).

    Args:
        image: (H, W, 3) uint8. mask: (H, W) class ids. logps: variant -> (C, H, W) log-probs.
    """
    import cv2

    def fit(a: np.ndarray, interp: int) -> np.ndarray:
        return cv2.resize(a, (tile, tile), interpolation=interp)

    gt = GT_COLOURS[np.minimum(mask, len(GT_COLOURS) - 1)]  # (H, W) ids -> (H, W, 3) RGB
    tiles = [_label(fit(image, cv2.INTER_AREA), "image"), _label(fit(gt, cv2.INTER_NEAREST), "GT")]
    for variant, logp in logps.items():
        prob = np.exp(logp)
        fg = 1.0 - prob[0]  # probability of any foreground class
        wrong = prob.argmax(0) != mask
        n = int(wrong.sum())
        tile_img = _heat(
            fit(fg.astype(np.float32), cv2.INTER_LINEAR),
            fit(wrong.astype(np.uint8), cv2.INTER_NEAREST) > 0,
        )
        tiles.append(_label(tile_img, f"{TITLES.get(variant, variant)}: {n} false"))
    gap = np.full((tiles[0].shape[0], 4, 3), 255, np.uint8)
    row = [t for pair in zip(tiles, [gap] * len(tiles), strict=True) for t in pair][:-1]
    return np.hstack(row)


def run(cfg: InspectConfig) -> Path:
    import cv2

    from stages.data import open_labels_with_data

    store, labels = open_labels_with_data(cfg.labels, cfg.data)
    if cfg.image in labels.ids:
        i = labels.index_of(cfg.image)
    elif cfg.image.isdigit() and int(cfg.image) < len(labels):
        i = int(cfg.image)
    else:
        raise ValueError(
            f"--image '{cfg.image}' is not an id in {cfg.labels} (e.g. {labels.ids[0]}) "
            f"nor an index below {len(labels)}."
        )
    j = store.ids().index(labels.ids[i])
    image, mask = np.asarray(store.images[j]), np.asarray(store.masks[j])
    out = panel(image, mask, {v: labels.read(v, i) for v in labels.variants}, cfg.tile)
    cfg.out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(cfg.out), out[..., ::-1]):
        raise ValueError(
            f"could not write the panel to {cfg.out}: use a .png path in a writable folder."
        )
    logger.info("panel of %s → %s", labels.ids[i], cfg.out)
    return cfg.out
