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
  the parameter-free stem max-pool pads differently (see `pipeline.models.resnet`). The key
  map lives in `pipeline.models.transunet_npz`.
* **A torch state_dict** of this project's network, or a plc-kd checkpoint (its ``state_dict``).

Every missing, unexpected and mis-shaped key is listed in one `InitError`; nothing is copied
into the model unless everything fits.
"""

from __future__ import annotations

import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn

from pipeline.models.transunet_npz import (
    NPZ_PREFIX,
    UNUSED_NPZ_KEYS,
    official_key_map,
    official_shape,
)

logger = logging.getLogger(__name__)

InitFormat = Literal["transunet-npz", "state-dict", "plc-checkpoint"]


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
            "state_dict (or plc-kd checkpoint) of the same network."
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
        arrays = {k.removeprefix(NPZ_PREFIX): npz[k] for k in npz.files}
    current = model.state_dict()
    state: dict[str, Tensor] = {}
    missing, misshaped = [], []
    for ours, (theirs, convert) in official_key_map(model).items():
        target = tuple(current[ours].shape)
        if theirs not in arrays:
            missing.append(f"{theirs} (for {ours}, shape {official_shape(convert, target)})")
            continue
        value = convert(arrays[theirs], target)
        if value is None or tuple(value.shape) != target:
            misshaped.append(
                f"{theirs} is {tuple(arrays[theirs].shape)}, but {ours} {target} needs "
                f"{official_shape(convert, target)}"
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


def _torch_state(path: Path) -> tuple[InitFormat, dict[str, Tensor]]:
    """The state_dict of a plc-kd checkpoint or a plain state_dict file."""
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
        "name → tensor) nor a plc-kd checkpoint; save one with torch.save(model.state_dict(), path)."
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
