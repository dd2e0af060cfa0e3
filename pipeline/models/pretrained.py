"""Initial weights from a file (``--init``): the official TransUNet ``.npz`` or a torch state_dict.

Two formats are read, recognised by content (not by the file name):

* **TransUNet's official R50+ViT-B/16 ``.npz``** (ImageNet-21k; Google's ViT checkpoint
  ``imagenet21k/R50+ViT-B_16.npz``, as the TransUNet release uses it). Keys are mapped as the
  official ``VisionTransformer.load_from`` and ``ResNetV2.load_from`` do: convolution kernels
  HWIO → OIHW, dense kernels (in, out) → (out, in), attention kernels (D, heads, D/heads) /
  (heads, D/heads, D) → (D, D), GroupNorm/LayerNorm ``scale`` → ``weight``. The position
  embedding drops the class token and, when the grid differs (14×14 at 224² in the file), is
  resized bilinearly with ``scipy.ndimage.zoom(order=1)``, the official resize. The decoder and
  the segmentation head keep their random initialisation (the file has none); ``cls``,
  ``head/*`` and ``pre_logits/*`` (the ImageNet classifier) are not used, as in the official
  code. This project's ResNet uses the same weight-standardised convolutions (``StdConv2d``,
  eps 1e-5) and GroupNorm layers as the official one, so the kernels mean the same thing; only
  the parameter-free stem max-pool pads differently (see `pipeline.models.resnet`).
* **A torch state_dict** of this project's network, or a plc checkpoint (its ``state_dict``).

Every missing, unexpected and mis-shaped key is listed in one `InitError`; nothing is copied
into the model unless everything fits.
"""

from __future__ import annotations

import logging
import math
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn

logger = logging.getLogger(__name__)

InitFormat = Literal["transunet-npz", "state-dict", "plc-checkpoint"]

# in the official file, used by no segmentation model (official load_from skips them too)
UNUSED_NPZ_KEYS = ("cls", "head/kernel", "head/bias", "pre_logits/kernel", "pre_logits/bias")
_NPZ_PREFIX = "opt/target/"  # some ViT releases nest every key under it


class InitError(ValueError):
    """An init file that cannot initialise the model; the message lists every problem."""


@dataclass(frozen=True)
class InitReport:
    """What `load_init` did.

    Attributes:
        format: the file's format.
        loaded: model state keys set from the file.
        kept: model state keys left at their initialisation (decoder and head for an npz).
    """

    format: InitFormat
    loaded: tuple[str, ...]
    kept: tuple[str, ...]


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


# --- loading ----------------------------------------------------------------------------


def load_init(model: nn.Module, path: str | Path) -> InitReport:
    """Initialise ``model`` in place from ``path``: an official TransUNet npz or a state_dict.

    Args:
        model: a network built by `pipeline.models.registry.build_model`.
        path: the init file (format recognised by content).

    Returns:
        What was loaded and what kept its initialisation.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        InitError: the file is unreadable or does not fit; the message lists every missing,
            unexpected and mis-shaped key at once. The model is unchanged then.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"init file {path} does not exist; pass TransUNet's official R50+ViT-B_16.npz or a "
            "state_dict (or plc checkpoint) of the same network."
        )
    current = model.state_dict()
    if _is_npz(path):
        fmt: InitFormat = "transunet-npz"
        state = _npz_state(model, path)
    else:
        fmt, state = _torch_state(path)
        _check_fits(path, fmt, model, current, state)
    model.load_state_dict({**current, **state})
    kept = tuple(k for k in current if k not in state)
    logger.info("init %s (%s): %d tensors loaded, %d kept", path, fmt, len(state), len(kept))
    return InitReport(format=fmt, loaded=tuple(state), kept=kept)


def _is_npz(path: Path) -> bool:
    """An npz is a zip of ``.npy`` members; a torch file is a zip with ``data.pkl`` (or not a zip)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return all(name.endswith(".npy") for name in archive.namelist())


def _model_name(model: nn.Module) -> str:
    return getattr(model, "model_name", type(model).__name__)


def _npz_state(model: nn.Module, path: Path) -> dict[str, Tensor]:
    """The model state keys the official file sets, converted; InitError listing all problems."""
    from pipeline.models.transunet import TransUNet

    if not isinstance(model, TransUNet):
        raise InitError(
            f"init file {path} is an .npz (TransUNet's official format), which initialises only "
            f"the transunet models, not {_model_name(model)!r}; pass a state_dict of that network."
        )
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k.removeprefix(_NPZ_PREFIX): npz[k] for k in npz.files}
    current = model.state_dict()
    state: dict[str, Tensor] = {}
    missing, misshaped = [], []
    for ours, (theirs, convert) in official_key_map(model).items():
        target = tuple(current[ours].shape)
        if theirs not in arrays:
            missing.append(f"{theirs} (for {ours}, shape {_official(convert, target)})")
            continue
        value = convert(arrays[theirs], target)
        if value is None or tuple(value.shape) != target:
            misshaped.append(
                f"{theirs} is {tuple(arrays[theirs].shape)}, but {ours} {target} needs "
                f"{_official(convert, target)}"
            )
            continue
        state[ours] = torch.from_numpy(np.ascontiguousarray(value)).to(current[ours].dtype)
    used = {theirs for theirs, _ in official_key_map(model).values()} | set(UNUSED_NPZ_KEYS)
    unexpected = [k for k in arrays if k not in used]
    problems = _listed("missing", missing) + _listed("unexpected", unexpected)
    problems += _listed("mis-shaped", misshaped)
    if problems:
        raise _fit_error(path, "TransUNet's official .npz", model, problems)
    return state


def _official(convert: Convert, target: tuple[int, ...]) -> str:
    shape = _OFFICIAL_SHAPE[convert](target)
    return "(" + ", ".join(map(str, shape)) + ("," if len(shape) == 1 else "") + ")"


def _torch_state(path: Path) -> tuple[InitFormat, dict[str, Tensor]]:
    """The state_dict of a plc checkpoint or a plain state_dict file."""
    from pipeline.checkpoint import FORMAT, load_checkpoint

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a foreign file
        raise InitError(
            f"init file {path} is neither an .npz nor a torch state_dict (torch.load failed: "
            f"{err}); pass TransUNet's official R50+ViT-B_16.npz or a state_dict file."
        ) from err
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        return "plc-checkpoint", load_checkpoint(path)["state_dict"]
    if (
        isinstance(obj, dict)
        and obj
        and all(isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items())
    ):
        return "state-dict", dict(obj)
    raise InitError(
        f"init file {path} holds a {type(obj).__name__} that is not a state_dict (a dict of "
        "name → tensor) nor a plc checkpoint; save one with torch.save(model.state_dict(), path)."
    )


def _check_fits(
    path: Path, fmt: str, model: nn.Module, current: dict[str, Tensor], state: dict[str, Tensor]
) -> None:
    missing = [f"{k} {tuple(v.shape)}" for k, v in current.items() if k not in state]
    unexpected = [f"{k} {tuple(v.shape)}" for k, v in state.items() if k not in current]
    misshaped = [
        f"{k} is {tuple(state[k].shape)} in the file, {tuple(v.shape)} in the model"
        for k, v in current.items()
        if k in state and state[k].shape != v.shape
    ]
    problems = _listed("missing", missing) + _listed("unexpected", unexpected)
    problems += _listed("mis-shaped", misshaped)
    if problems:
        raise _fit_error(path, f"a {fmt}", model, problems)


def _listed(kind: str, items: list[str]) -> list[str]:
    return [f"{kind}: {item}" for item in items]


def _fit_error(path: Path, what: str, model: nn.Module, problems: list[str]) -> InitError:
    classes = getattr(model, "num_classes", "?")
    lines = "\n".join(f"  - {p}" for p in problems)
    return InitError(
        f"init file {path} ({what}) does not fit model {_model_name(model)!r} "
        f"({classes} classes): {len(problems)} problem(s):\n{lines}\n"
        "Use a file made for the same architecture and number of classes."
    )
