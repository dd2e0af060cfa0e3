"""TransUNet's official ``R50+ViT-B_16.npz`` key names and layouts, mapped onto `TransUNet`.

The map follows the official ``VisionTransformer.load_from`` / ``ResNetV2.load_from`` of the
TransUNet code: ``conv_root``/``gn_root`` → the ResNet stem, ``block{s}/unit{j}/conv{k}``,
``gn{k}``, ``conv_proj``, ``gn_proj`` → stage s, unit j (1-based there, 0-based here),
``embedding`` → the 1×1 patch projection, ``Transformer/posembed_input`` → the position
embedding, ``Transformer/encoderblock_{i}`` (``LayerNorm_0``, ``LayerNorm_2``,
``MultiHeadDotProductAttention_1/{query,key,value,out}``, ``MlpBlock_3/Dense_{0,1}``) → block
i, ``Transformer/encoder_norm`` → the final LayerNorm. Each conversion returns the array in
torch layout, or None when the array cannot fit the target shape.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from torch import nn

# in the official file, used by no segmentation model (official load_from skips them too)
UNUSED_NPZ_KEYS = ("cls", "head/kernel", "head/bias", "pre_logits/kernel", "pre_logits/bias")
NPZ_PREFIX = "opt/target/"  # some ViT releases nest every key under it

# --- conversions: official array -> torch layout, each with a shape check -------------------

Convert = Callable[[np.ndarray, tuple[int, ...]], np.ndarray | None]
"""``convert(array, target_shape)`` -> the array in torch layout, or None if it cannot fit."""


def _conv(a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray | None:
    """HWIO kernel -> OIHW."""
    cout, cin, kh, kw = shape
    return a.transpose(3, 2, 0, 1) if a.shape == (kh, kw, cin, cout) else None


def _dense(a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray | None:
    """(in, out) kernel -> (out, in)."""
    return a.T if a.shape == shape[::-1] else None


def _attn_in(a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray | None:
    """Query/key/value kernel (D, heads, D/heads) -> (D_out, D_in), as ``.view(D, D).t()``."""
    out, cin = shape
    ok = a.ndim >= 2 and a.shape[0] == cin and a.size == out * cin
    return a.reshape(cin, out).T if ok else None


def _attn_out(a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray | None:
    """Output kernel (heads, D/heads, D) -> (D_out, D_in)."""
    out, cin = shape
    ok = a.ndim >= 2 and a.shape[-1] == out and a.size == out * cin
    return a.reshape(cin, out).T if ok else None


def _vector(a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray | None:
    """A scale or bias: (C,), (1, 1, 1, C) or (heads, D/heads) -> (C,)."""
    return a.reshape(shape) if len(shape) == 1 and a.size == shape[0] else None


def _position(a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray | None:
    """(1, [1 +] g·g, D) -> (1, rows·cols, D): drop the class token, zoom the grid (official)."""
    from scipy import ndimage

    _, tokens, hidden = shape
    if a.ndim != 3 or a.shape[0] != 1 or a.shape[2] != hidden:
        return None
    n = a.shape[1]
    if _is_square(n - 1):  # a class token first (the official file: 1 + 14·14)
        a, n = a[:, 1:], n - 1
    elif not _is_square(n):
        return None
    if n == tokens:
        return a
    old, new = math.isqrt(n), math.isqrt(tokens)
    if new * new != tokens:
        return None
    grid = a[0].reshape(old, old, hidden)
    grid = ndimage.zoom(grid, (new / old, new / old, 1), order=1)  # the official resize
    return grid.reshape(1, tokens, hidden)


def _is_square(n: int) -> bool:
    return n > 0 and math.isqrt(n) ** 2 == n


_OFFICIAL_SHAPE = {
    _conv: lambda s: (s[2], s[3], s[1], s[0]),
    _dense: lambda s: s[::-1],
    _attn_in: lambda s: (s[1], "heads", "D/heads"),
    _attn_out: lambda s: ("heads", "D/heads", s[0]),
    _vector: lambda s: s,
    _position: lambda s: (1, "[1 +] g·g", s[2]),
}


# --- the official key map ---------------------------------------------------------------


def official_key_map(model: nn.Module) -> dict[str, tuple[str, Convert]]:
    """Model state key -> (official npz key, conversion) for a `TransUNet`.

    Covers the ResNet stem and stages and the whole ViT encoder; the decoder, ``conv_more``
    and the head are absent (the official file has no weights for them).
    """
    from pipeline.models.transunet import TransUNet

    if not isinstance(model, TransUNet):
        raise TypeError(f"official_key_map takes a TransUNet, got {type(model).__name__}")
    keys = _resnet_keys(model)
    keys.update(_vit_keys(model))
    return keys


def _norm(ours: str, theirs: str) -> dict[str, tuple[str, Convert]]:
    return {
        f"{ours}.weight": (f"{theirs}/scale", _vector),
        f"{ours}.bias": (f"{theirs}/bias", _vector),
    }


def _resnet_keys(model: nn.Module) -> dict[str, tuple[str, Convert]]:
    keys = {
        "encoder.stem.0.weight": ("conv_root/kernel", _conv),
        **_norm("encoder.stem.1", "gn_root"),
    }
    for s in (1, 2, 3):
        for j, unit in enumerate(getattr(model.encoder, f"stage{s}")):
            ours, theirs = f"encoder.stage{s}.{j}", f"block{s}/unit{j + 1}"
            for k in (1, 2, 3):
                keys[f"{ours}.conv{k}.weight"] = (f"{theirs}/conv{k}/kernel", _conv)
                keys.update(_norm(f"{ours}.gn{k}", f"{theirs}/gn{k}"))
            if unit.downsample is not None:  # (StdConv2d, GroupNorm) = conv_proj, gn_proj
                keys[f"{ours}.downsample.0.weight"] = (f"{theirs}/conv_proj/kernel", _conv)
                keys.update(_norm(f"{ours}.downsample.1", f"{theirs}/gn_proj"))
    return keys


def _dense_keys(ours: str, theirs: str, kernel: Convert) -> dict[str, tuple[str, Convert]]:
    return {
        f"{ours}.weight": (f"{theirs}/kernel", kernel),
        f"{ours}.bias": (f"{theirs}/bias", _vector),
    }


def _vit_keys(model: nn.Module) -> dict[str, tuple[str, Convert]]:
    emb = "transformer.embeddings"
    keys = {
        f"{emb}.proj.weight": ("embedding/kernel", _conv),
        f"{emb}.proj.bias": ("embedding/bias", _vector),
        f"{emb}.position": ("Transformer/posembed_input/pos_embedding", _position),
        **_norm("transformer.norm", "Transformer/encoder_norm"),
    }
    for i in range(len(model.transformer.blocks)):
        ours, theirs = f"transformer.blocks.{i}", f"Transformer/encoderblock_{i}"
        mha = f"{theirs}/MultiHeadDotProductAttention_1"
        keys.update(_norm(f"{ours}.attention_norm", f"{theirs}/LayerNorm_0"))
        keys.update(_norm(f"{ours}.ffn_norm", f"{theirs}/LayerNorm_2"))
        for name in ("query", "key", "value"):
            keys.update(_dense_keys(f"{ours}.attention.{name}", f"{mha}/{name}", _attn_in))
        keys.update(_dense_keys(f"{ours}.attention.out", f"{mha}/out", _attn_out))
        keys.update(_dense_keys(f"{ours}.mlp.0", f"{theirs}/MlpBlock_3/Dense_0", _dense))
        keys.update(_dense_keys(f"{ours}.mlp.3", f"{theirs}/MlpBlock_3/Dense_1", _dense))
    return keys


def official_shape(convert: Convert, target: tuple[int, ...]) -> str:
    """The official layout a target shape needs, as text: "(7, 7, 3, 64)"."""
    shape = _OFFICIAL_SHAPE[convert](target)
    return "(" + ", ".join(map(str, shape)) + ("," if len(shape) == 1 else "") + ")"
