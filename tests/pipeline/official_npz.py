"""Generate a TransUNet ``R50+ViT-B_16.npz`` in the official key names and layouts, any size.

Written from the official file's naming (Google ViT / TransUNet ``load_from``), not from the
project's mapping: HWIO convolution kernels, (in, out) dense kernels, attention kernels
(D, heads, D/heads) and (heads, D/heads, D), biases (heads, D/heads), a position embedding
(1, 1 + g·g, D) with the class token first, plus the classifier keys the segmentation model
does not use. Every array holds distinct seeded random values, so a tensor in the model can
be traced back to the one key it came from.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.models.transunet import TransUNetConfig


def official_shapes(
    cfg: TransUNetConfig, grid: int = 14, cls_token: bool = True, gn_4d: bool = False
) -> dict[str, tuple[int, ...]]:
    """Official key -> shape for a TransUNet config (the real file is ``TransUNetConfig()``).

    Args:
        cfg: the model config the file is for (width, block_units, hidden, ...).
        grid: side g of the position-embedding grid in the file (14 at 224²).
        cls_token: whether the position embedding starts with the class token.
        gn_4d: write ResNet GroupNorm scales/biases as (1, 1, 1, C) (BiT style) not (C,).
    """
    w, d, h = cfg.width, cfg.hidden, cfg.heads
    gn = (lambda c: (1, 1, 1, c)) if gn_4d else (lambda c: (c,))
    s: dict[str, tuple[int, ...]] = {
        "conv_root/kernel": (7, 7, 3, w),
        "gn_root/scale": gn(w),
        "gn_root/bias": gn(w),
    }
    stages = ((w, 4 * w, w), (4 * w, 8 * w, 2 * w), (8 * w, 16 * w, 4 * w))
    for b, ((cin, cout, cmid), units) in enumerate(zip(stages, cfg.block_units, strict=True)):
        for u in range(units):
            p = f"block{b + 1}/unit{u + 1}"
            s[f"{p}/conv1/kernel"] = (1, 1, cin if u == 0 else cout, cmid)
            s[f"{p}/conv2/kernel"] = (3, 3, cmid, cmid)
            s[f"{p}/conv3/kernel"] = (1, 1, cmid, cout)
            for k, c in (("gn1", cmid), ("gn2", cmid), ("gn3", cout)):
                s[f"{p}/{k}/scale"], s[f"{p}/{k}/bias"] = gn(c), gn(c)
            if u == 0:
                s[f"{p}/conv_proj/kernel"] = (1, 1, cin, cout)
                s[f"{p}/gn_proj/scale"], s[f"{p}/gn_proj/bias"] = gn(cout), gn(cout)
    s["embedding/kernel"] = (1, 1, 16 * w, d)
    s["embedding/bias"] = (d,)
    s["cls"] = (1, 1, d)
    s["Transformer/posembed_input/pos_embedding"] = (1, grid * grid + int(cls_token), d)
    s["Transformer/encoder_norm/scale"] = s["Transformer/encoder_norm/bias"] = (d,)
    for i in range(cfg.layers):
        p = f"Transformer/encoderblock_{i}"
        for ln in ("LayerNorm_0", "LayerNorm_2"):
            s[f"{p}/{ln}/scale"] = s[f"{p}/{ln}/bias"] = (d,)
        for name in ("query", "key", "value"):
            s[f"{p}/MultiHeadDotProductAttention_1/{name}/kernel"] = (d, h, d // h)
            s[f"{p}/MultiHeadDotProductAttention_1/{name}/bias"] = (h, d // h)
        s[f"{p}/MultiHeadDotProductAttention_1/out/kernel"] = (h, d // h, d)
        s[f"{p}/MultiHeadDotProductAttention_1/out/bias"] = (d,)
        s[f"{p}/MlpBlock_3/Dense_0/kernel"] = (d, cfg.mlp_dim)
        s[f"{p}/MlpBlock_3/Dense_0/bias"] = (cfg.mlp_dim,)
        s[f"{p}/MlpBlock_3/Dense_1/kernel"] = (cfg.mlp_dim, d)
        s[f"{p}/MlpBlock_3/Dense_1/bias"] = (d,)
    s["pre_logits/kernel"], s["pre_logits/bias"] = (d, d), (d,)
    s["head/kernel"], s["head/bias"] = (d, 5), (5,)  # 21843 ImageNet-21k classes in the real file
    return s


def official_arrays(cfg: TransUNetConfig, seed: int = 0, **kwargs) -> dict[str, np.ndarray]:
    """Seeded random float32 arrays of `official_shapes` (same keyword arguments)."""
    rng = np.random.default_rng(seed)
    return {
        k: rng.standard_normal(shape).astype(np.float32)
        for k, shape in official_shapes(cfg, **kwargs).items()
    }


def write_official_npz(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    """Save ``arrays`` as an uncompressed npz (as the official release is) and return ``path``."""
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    return path
