"""Synthetic lesion images that are hard the way medical images are hard.

Each sample is a textured, vignetted tissue-like background with one irregular lesion whose
colour differs only slightly from the background and fades into it over a blurred, wobbly
band around the ground-truth boundary (so the boundary is genuinely ambiguous), plus
look-alike distractor blobs that are background, specular highlights and sensor noise.
A few samples are empty (distractors only). numpy + OpenCV only; about a millisecond per
224² image. The same generator and arguments always give identical arrays.

Stripes (``stripes`` K ≥ 2, binary only): the capacity cue of the default run. The lesion and
one or two look-alikes as large as lesions share one colour and carry stripes; the lesion's
stripes run at one of K orientations and the look-alikes' at the K orientations between them.
Only the orientation tells them apart, which takes oriented features at full resolution, so a
narrow network separates them later and less well than a wide one.

Multi-class (``num_classes`` C > 2): each non-empty sample holds lesions of one or more of
the C − 1 types, non-overlapping, mask value = class id. Each type has its own colour
direction (e.g. type 1 darker and browner, type 2 bluer) and surface texture, so types
are distinguishable yet each is still low-contrast with a blurred edge; distractors take a
present type's colour. C = 2 draws exactly what it always drew.
"""

from __future__ import annotations

import logging

import cv2
import numpy as np

logger = logging.getLogger(__name__)

MIN_AREA, MAX_AREA = 0.01, 0.40  # lesion area as a fraction of the image
_MIN_SIZE = 16
MAX_CLASSES = 6  # background + up to five lesion types
MAX_STRIPES = 8  # lesion orientations of the stripes cue
# colour direction (R, G, B offset) of lesion types 1..5 in the multi-class generator
_TYPE_DIRECTIONS = np.array(
    [
        [-0.80, -0.55, -0.25],  # darker, browner
        [-0.35, -0.30, 0.90],  # bluer
        [0.70, -0.60, 0.40],  # redder, less green
        [0.10, 0.85, 0.50],  # paler green-blue
        [-0.20, 0.60, -0.75],  # yellower
    ],
    np.float32,
)
_TYPE_TEXTURE_CELLS = (12, 28, 6, 20, 40)  # bumps per side of each type's surface texture


def generate_sample(
    rng: np.random.Generator,
    size: int,
    empty: bool = False,
    num_classes: int = 2,
    stripes: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one synthetic image and its lesion mask.

    Args:
        rng: the random generator; the sample is a pure function of its state.
        size: side of the square image in pixels (>= 16).
        empty: draw no lesion (the mask is all zero; distractors are still drawn).
        num_classes: C, background included, in 2..6: C > 2 draws lesions of C − 1 types.
        stripes: K in 2..8 (binary only) draws the stripes cue (see the module docstring);
            0 draws what the generator always drew.

    Returns:
        ``(image, mask)``: image ``(H, W, 3)`` uint8 RGB, mask ``(H, W)`` uint8 class ids
        in ``[0, C)``, with ``H = W = size``.
    """
    if size < _MIN_SIZE:
        raise ValueError(f"size must be at least {_MIN_SIZE} pixels, got {size}.")
    _check_classes(num_classes)
    _check_stripes(stripes, num_classes)
    scale = size / 224.0
    base = _tissue_colour(rng)
    image = _background(rng, size, base)  # (3, H, W) float32: channel-first is fast here
    if stripes:
        delta = _lesion_delta(rng) * np.float32(1.2)  # shared by the lesion and look-alikes
        mask, _ = _stripe_cue(rng, image, delta, scale, stripes, empty)
    elif num_classes > 2:
        mask, delta = _typed_lesions(rng, image, base, scale, num_classes, empty)
    else:
        delta = _lesion_delta(rng)
        mask = np.zeros((size, size), np.uint8)
        if not empty:
            mask = _lesion_mask(rng, size)
            _paint_lesion(rng, image, mask, delta, base, scale, 12)
    lesion = (mask > 0).astype(np.uint8)  # (H, W) any type
    for _ in range(0 if stripes else int(rng.integers(1, 4))):  # stripes: the look-alikes
        _add_distractor(rng, image, lesion, delta, scale)
    _add_speculars(rng, image, lesion, scale)
    sigma = float(rng.uniform(0.5, 1.2)) * max(scale, 0.5)
    image = cv2.GaussianBlur(image.transpose(1, 2, 0), (0, 0), sigma)  # (H, W, 3)
    # sensor noise: a sum of two uniforms is close enough to Gaussian and 3x cheaper to draw
    noise = rng.random((2, *image.shape), dtype=np.float32)  # (2, H, W, 3)
    image += np.float32(rng.uniform(3.0, 8.0) * np.sqrt(6.0)) * (noise[0] - noise[1])
    return np.clip(image + 0.5, 0, 255).astype(np.uint8), mask


def generate_dataset(
    n: int,
    size: int,
    seed: int,
    empty_fraction: float = 0.05,
    num_classes: int = 2,
    stripes: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Generate ``n`` samples; exactly ``round(empty_fraction * n)`` of them are empty.

    Sample ``i`` is drawn from its own child of ``SeedSequence(seed)``, so the arrays depend
    only on the arguments.

    Args:
        n: number of samples (>= 1).
        size: side of each square image in pixels (>= 16).
        seed: the seed; the same seed gives identical arrays.
        empty_fraction: fraction of samples without a lesion, in [0, 1].
        num_classes: C, background included, in 2..6 (C > 2: several lesion types).
        stripes: K in 2..8: the stripes cue (binary only); 0: none.

    Returns:
        ``(images, masks)``: images ``(N, H, W, 3)`` uint8 RGB, masks ``(N, H, W)`` uint8
        class ids in ``[0, C)``.
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}.")
    if not 0.0 <= empty_fraction <= 1.0:
        raise ValueError(f"empty_fraction must be in [0, 1], got {empty_fraction}.")
    _check_classes(num_classes)
    _check_stripes(stripes, num_classes)
    seq = np.random.SeedSequence(seed)
    order_seq, *sample_seqs = seq.spawn(n + 1)
    n_empty = round(empty_fraction * n)
    empty = np.zeros(n, bool)
    empty[np.random.default_rng(order_seq).permutation(n)[:n_empty]] = True
    images = np.empty((n, size, size, 3), np.uint8)
    masks = np.empty((n, size, size), np.uint8)
    for i, child in enumerate(sample_seqs):
        rng = np.random.default_rng(child)
        images[i], masks[i] = generate_sample(rng, size, bool(empty[i]), num_classes, stripes)
    logger.debug("generated %d synthetic samples of %d² (%d empty)", n, size, n_empty)
    return images, masks


def _check_classes(num_classes: int) -> None:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int):
        raise ValueError(f"num_classes must be an integer, got {num_classes!r}.")
    if not 2 <= num_classes <= MAX_CLASSES:
        raise ValueError(f"num_classes must be in 2..{MAX_CLASSES}, got {num_classes}.")


def _check_stripes(stripes: int, num_classes: int) -> None:
    if isinstance(stripes, bool) or not isinstance(stripes, int):
        raise ValueError(f"stripes must be an integer, got {stripes!r}.")
    if stripes != 0 and not 2 <= stripes <= MAX_STRIPES:
        raise ValueError(f"stripes must be 0 or in 2..{MAX_STRIPES}, got {stripes}.")
    if stripes and num_classes != 2:
        raise ValueError(f"stripes needs num_classes = 2, got {num_classes}.")


def stripe_angle(rng: np.random.Generator, orientations: int, lesion: bool) -> float:
    """The stripes' wave-vector angle in [0, π) radians: of a lesion or of a look-alike.

    Half a turn is cut into 2K equal sectors; a lesion takes the middle half of an even
    sector, a look-alike of an odd one, so the two differ by at least half a sector.
    """
    sector = 2 * int(rng.integers(orientations)) + (0 if lesion else 1)
    return float((sector + 0.5 + rng.uniform(-0.25, 0.25)) * np.pi / (2 * orientations))


def _stripe_cue(
    rng: np.random.Generator,
    image: np.ndarray,
    delta: np.ndarray,
    scale: float,
    orientations: int,
    empty: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """Paint (in place) a striped lesion and one or two striped look-alikes of its colour.

    Returns:
        ``(mask, lookalikes)``: ``(H, W)`` uint8 {0, 1} each, the lesion's and the
        look-alikes' ground-truth blobs (the lesion's is all zero when ``empty``).
    """
    size = image.shape[1]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    amplitude = np.float32(rng.uniform(14.0, 22.0))  # grey levels, about the colour offset's
    masks = [np.zeros((size, size), np.uint8) for _ in range(2)]  # lesion, look-alikes
    taken = np.zeros((size, size), np.uint8)
    for i in range(int(rng.integers(2, 4))):
        blob = _lesion_mask(rng, size, 2 * MIN_AREA, MAX_AREA / 3) * (1 - taken)
        if blob.mean() < MIN_AREA:
            continue  # no room left
        lesion = i == 0 and not empty
        angle = stripe_angle(rng, orientations, lesion)
        period = np.float32(rng.uniform(4.5, 6.5) * max(size / 64.0, 1.0))
        wave = (np.cos(angle) * xx + np.sin(angle) * yy) * np.float32(2 * np.pi) / period
        stripes = np.cos(wave + np.float32(rng.uniform(0, 2 * np.pi)))  # (H, W)
        alpha = _soft_alpha(rng, blob, scale)
        image += alpha[None] * (delta + amplitude * stripes[None])
        masks[0 if lesion else 1] |= blob
        taken = cv2.dilate(np.maximum(taken, blob), np.ones((9, 9), np.uint8))
    return masks[0], masks[1]


def _paint_lesion(
    rng: np.random.Generator,
    image: np.ndarray,
    mask: np.ndarray,
    delta: np.ndarray,
    base: np.ndarray,
    scale: float,
    cells: int,
) -> None:
    """Blend (in place) a lesion of colour offset ``delta`` over ``mask`` (H, W) {0, 1}."""
    alpha = _soft_alpha(rng, mask, scale)
    texture = _noise(rng, mask.shape[0], cells)[None]  # (1, H, W): the lesion's own texture
    image += alpha[None] * (delta + (0.3 * delta + 0.05 * base) * texture)


def _typed_lesions(
    rng: np.random.Generator,
    image: np.ndarray,
    base: np.ndarray,
    scale: float,
    num_classes: int,
    empty: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """Paint lesions of one or more types; ``(mask (H, W) ids, a present type's delta)``.

    Each present type gets one lesion, smaller when several share the image, kept apart
    from the others by a few pixels (a type that finds no room is left out).
    """
    size = image.shape[1]
    mask = np.zeros((size, size), np.uint8)
    types = 1 + rng.permutation(num_classes - 1)[: int(rng.integers(1, num_classes))]
    deltas = {int(c): _type_delta(rng, int(c)) for c in types}
    if empty:
        return mask, deltas[int(types[0])]
    gap = np.ones((5, 5), np.uint8)
    for c in types:
        taken = cv2.dilate((mask > 0).astype(np.uint8), gap)
        lesion = _lesion_mask(rng, size, MIN_AREA, MAX_AREA / len(types)) * (1 - taken)
        if lesion.mean() < MIN_AREA / 2:
            continue  # no room left for this type
        mask[lesion > 0] = c
        cells = _TYPE_TEXTURE_CELLS[int(c) - 1]
        _paint_lesion(rng, image, lesion, deltas[int(c)], base, scale, cells)
    return mask, deltas[int(types[0])]


def _type_delta(rng: np.random.Generator, class_id: int) -> np.ndarray:
    """Colour offset ``(3, 1, 1)`` of lesion type ``class_id``: its direction, jittered."""
    direction = _TYPE_DIRECTIONS[class_id - 1] + rng.normal(0, 0.12, 3).astype(np.float32)
    direction /= np.linalg.norm(direction) + 1e-6
    return (direction * rng.uniform(24.0, 44.0)).astype(np.float32).reshape(3, 1, 1)


def _noise(rng: np.random.Generator, size: int | tuple[int, int], cells: int) -> np.ndarray:
    """Smooth noise ``(H, W)`` float32, unit-ish amplitude, ``cells`` bumps per side."""
    height, width = (size, size) if isinstance(size, int) else size
    grid = rng.standard_normal((cells, cells), dtype=np.float32)
    # bicubic to a quarter size, then bilinear: smooth, and 5x cheaper than bicubic alone
    small = (max(width // 4, cells), max(height // 4, cells))
    grid = cv2.resize(grid, small, interpolation=cv2.INTER_CUBIC)
    return cv2.resize(grid, (width, height), interpolation=cv2.INTER_LINEAR)


def _tissue_colour(rng: np.random.Generator) -> np.ndarray:
    """A mucosa/skin-like RGB base colour ``(3, 1, 1)`` float32."""
    red = rng.uniform(150, 215)
    rgb = [red, red * rng.uniform(0.40, 0.65), red * rng.uniform(0.30, 0.55)]
    return np.array(rgb, np.float32).reshape(3, 1, 1)  # (3,) -> (3, 1, 1)


def _background(rng: np.random.Generator, size: int, base: np.ndarray) -> np.ndarray:
    """Textured, vignetted background ``(3, H, W)`` float32 in 0..255 units."""
    low, mid = _noise(rng, size, 4), _noise(rng, size, 16)
    shade = (
        1.0 + np.float32(rng.uniform(0.08, 0.15)) * low + np.float32(rng.uniform(0.03, 0.06)) * mid
    )
    axis = np.arange(size, dtype=np.float32) / np.float32(size / 2.0)
    cy, cx = rng.uniform(0.7, 1.3, 2).astype(np.float32)
    radius2 = ((axis[:, None] - cy) ** 2 + (axis[None, :] - cx) ** 2) / 2  # ≈ 1 in the corners
    shade *= 1.0 - np.float32(rng.uniform(0.25, 0.55)) * radius2  # vignetting
    tint = 0.04 * rng.standard_normal((3, 1, 1), dtype=np.float32) * _noise(rng, size, 3)[None]
    return shade[None] * (base * (1.0 + tint))


def _lesion_delta(rng: np.random.Generator) -> np.ndarray:
    """The lesion's colour offset ``(3, 1, 1)`` from the background: small (low contrast)."""
    direction = np.array([rng.uniform(-1, 1), rng.uniform(-1, 0.3), rng.uniform(-0.6, 0.6)])
    direction /= np.linalg.norm(direction) + 1e-6
    return (direction * rng.uniform(16.0, 40.0)).astype(np.float32).reshape(3, 1, 1)


def _blob(rng: np.random.Generator, size: int, centre: np.ndarray, radius: float) -> np.ndarray:
    """An irregular filled blob ``(H, W)`` uint8 in {0, 1} of about ``π radius²`` pixels."""
    mask = np.zeros((size, size), np.uint8)
    if rng.random() < 0.5:  # smoothed random radii
        theta = np.linspace(0, 2 * np.pi, 96, endpoint=False)
        r = np.ones_like(theta)
        for k in range(2, 7):
            r += rng.uniform(0, 0.4) / k * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
        r = radius * np.maximum(r, 0.35)
        pts = np.stack([centre[0] + r * np.cos(theta), centre[1] + r * np.sin(theta)], 1)
        cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 1)
        return mask
    for _ in range(int(rng.integers(2, 5))):  # a union of ellipses
        offset = rng.normal(0, radius * 0.35, 2)
        axes = radius * rng.uniform(0.45, 0.95, 2)
        cx, cy = np.round(centre + offset).astype(int)
        ax = tuple(int(a) for a in np.maximum(np.round(axes), 1))
        cv2.ellipse(mask, (int(cx), int(cy)), ax, float(rng.uniform(0, 180)), 0, 360, 1, -1)
    return mask


def _lesion_mask(
    rng: np.random.Generator, size: int, min_area: float = MIN_AREA, max_area: float = MAX_AREA
) -> np.ndarray:
    """A ground-truth lesion ``(H, W)`` uint8 {0, 1} covering 1 %–40 % of the image."""
    for _ in range(20):
        target = float(np.exp(rng.uniform(np.log(min_area * 1.3), np.log(max_area * 0.85))))
        radius = np.sqrt(target * size * size / np.pi)
        centre = rng.uniform(radius * 0.8, size - radius * 0.8, 2)
        mask = _blob(rng, size, centre, radius)
        if min_area <= mask.mean() <= max_area:
            return mask
    mask = np.zeros((size, size), np.uint8)  # fallback: a centred ellipse of ~10 % area
    axis = round(float(np.sqrt(0.1 * size * size / np.pi)))
    cv2.ellipse(mask, (size // 2, size // 2), (axis, axis), 0.0, 0, 360, 1, -1)
    return mask


def _signed_distance(mask: np.ndarray) -> np.ndarray:
    """Signed distance ``(H, W)`` float32 to the boundary: positive inside ``mask``."""
    inside = cv2.distanceTransform(mask, cv2.DIST_L2, 3)
    outside = cv2.distanceTransform(1 - mask, cv2.DIST_L2, 3)
    return inside - outside


def _soft_alpha(rng: np.random.Generator, mask: np.ndarray, scale: float) -> np.ndarray:
    """Visibility ``(H, W)`` float32 in [0, 1]: a blurred, wobbling, shifted edge.

    The visible edge is a sigmoid of the signed distance with a random width, a random
    inward/outward shift and a smooth wobble, so the colour blends into the background
    over several pixels and the 0.5 level does not follow the ground-truth boundary.
    """
    width = np.float32(rng.uniform(1.5, 4.0) * scale)
    shift = np.float32(rng.uniform(-1.0, 1.0)) * width
    cells = max(2, round(10 * max(mask.shape) / (224 * scale)))  # ~10 bumps per 224 px
    wobble = np.float32(rng.uniform(0.5, 1.5)) * width * _noise(rng, mask.shape, cells)
    z = (_signed_distance(mask) + wobble - shift) / (2 * width)
    return 0.5 + 0.5 * np.tanh(z)  # the logistic sigmoid of 2z, without overflow


def _add_distractor(
    rng: np.random.Generator, image: np.ndarray, mask: np.ndarray, delta: np.ndarray, scale: float
) -> None:
    """Paint (in place) a lesion-like background blob outside the lesion."""
    size = mask.shape[0]
    keep_out = cv2.dilate(mask, np.ones((9, 9), np.uint8)) if mask.any() else mask
    radius = np.sqrt(rng.uniform(0.004, 0.04) * size * size / np.pi)
    centre = rng.uniform(radius, size - radius, 2)
    blob = _blob(rng, size, centre, radius) * (1 - keep_out)
    if not blob.any():
        return
    x, y, w, h = cv2.boundingRect(blob)
    pad = int(np.ceil(12 * scale)) + 2  # the soft edge dies out well within this margin
    y0, y1 = max(y - pad, 0), min(y + h + pad, size)
    x0, x1 = max(x - pad, 0), min(x + w + pad, size)
    jitter = rng.normal(0, 3.0, (3, 1, 1)).astype(np.float32)
    alpha = _soft_alpha(rng, blob[y0:y1, x0:x1], scale) * (1 - keep_out[y0:y1, x0:x1])
    colour = delta * np.float32(rng.uniform(0.6, 1.1)) + jitter  # (3, 1, 1)
    image[:, y0:y1, x0:x1] += alpha[None] * colour


def _add_speculars(
    rng: np.random.Generator, image: np.ndarray, mask: np.ndarray, scale: float
) -> None:
    """Add (in place) a few small saturated white highlights, some on the lesion."""
    size = mask.shape[0]
    spots = np.zeros((size, size), np.float32)
    lesion = np.argwhere(mask > 0)
    for _ in range(int(rng.integers(0, 6))):
        if lesion.size and rng.random() < 0.5:
            cy, cx = lesion[rng.integers(len(lesion))]
        else:
            cy, cx = rng.integers(0, size, 2)
        axes = tuple(int(max(1, round(a))) for a in rng.uniform(1, 5, 2) * scale)
        cv2.ellipse(spots, (int(cx), int(cy)), axes, float(rng.uniform(0, 180)), 0, 360, 1.0, -1)
    if spots.any():
        spots = cv2.GaussianBlur(spots, (0, 0), max(0.8 * scale, 0.5))
        image += spots[None] * np.float32(rng.uniform(120, 220))
