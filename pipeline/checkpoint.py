"""Self-describing model checkpoints: weights + model name, sizes, resolved config, extras.

A checkpoint is one ``torch.save`` file holding::

    {"format": "plc-kd/checkpoint", "version": 1, "model_name", "num_classes", "img_size",
     "config", "extra", "state_dict"}

It is byte-reproducible: the same weights and metadata always give the same bytes (the
archive is serialised in memory, so the file name never enters it; tensors are moved to
the CPU; nothing time-dependent is added). Writes are atomic (temporary file, then
``os.replace``). Loading uses ``weights_only=True``: only tensors and plain data are read.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import tempfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

logger = logging.getLogger(__name__)

FORMAT = "plc-kd/checkpoint"
VERSION = 1
_KEYS = ("format", "version", "model_name", "num_classes", "img_size", "config", "extra")
_PLAIN = (str, int, float, bool, type(None), Tensor)


class NotACheckpointError(ValueError):
    """A file that is no plc-kd checkpoint at all (``reason`` says why), as opposed to one of
    another version or a damaged one."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path} is not a plc-kd checkpoint ({reason}).")
        self.reason = reason


def file_sha256(path: str | Path) -> str:
    """SHA-256 hex digest of the bytes of ``path``."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    *,
    model_name: str,
    num_classes: int,
    img_size: int,
    config: dict,
    extra: dict | None = None,
) -> str:
    """Write ``model``'s weights and metadata to ``path`` atomically; return the file's SHA-256.

    Args:
        path: destination file; its folder is created.
        model: the network whose ``state_dict`` is saved (on the CPU).
        model_name: registry name, as ``pipeline.models.registry.build_model`` takes it.
        num_classes: output classes of the network.
        img_size: input side length the network was built for.
        config: the resolved config that made the model; must be JSON-able.
        extra: anything else (hashes, history); plain data and tensors only.

    Returns:
        The SHA-256 hex digest of the written bytes (equal to ``file_sha256(path)``).
    """
    _check_jsonable(config, "config")
    extra = {} if extra is None else extra
    _check_plain(extra, "extra")
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "model_name": model_name,
        "num_classes": int(num_classes),
        "img_size": int(img_size),
        "config": config,
        "extra": extra,
        "state_dict": _cpu_state_dict(model),
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    data = buffer.getvalue()
    write_atomic(Path(path), data)
    logger.info("saved checkpoint %s (%s, %d bytes)", path, model_name, len(data))
    return hashlib.sha256(data).hexdigest()


def _cpu_state_dict(model: nn.Module) -> OrderedDict[str, Tensor]:
    """``model.state_dict()`` on the CPU, keeping its ``_metadata`` (module versions)."""
    state = model.state_dict()
    out = OrderedDict((k, v.detach().cpu()) for k, v in state.items())
    out._metadata = getattr(state, "_metadata", None)  # type: ignore[attr-defined]
    return out


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in its folder, fsync, rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _check_jsonable(value: Any, name: str) -> None:
    try:
        json.dumps(value, allow_nan=True)
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"checkpoint {name} must be JSON-able (convert paths and dataclasses first): {err}."
        ) from err


def _check_plain(value: Any, name: str) -> None:
    """Allow only what ``torch.load(weights_only=True)`` reads back: plain data and tensors."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str | int):
                raise ValueError(f"checkpoint {name} keys must be str or int, got {key!r}.")
            _check_plain(item, f"{name}[{key!r}]")
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _check_plain(item, f"{name}[{i}]")
    elif not isinstance(value, _PLAIN):
        raise ValueError(
            f"checkpoint {name} must hold plain data or tensors, got {type(value).__name__}."
        )


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict:
    """Read and validate a checkpoint written by ``save_checkpoint``.

    Args:
        path: the checkpoint file.
        map_location: where tensors go, as for ``torch.load``.

    Returns:
        The checkpoint dict (see the module docstring), ``state_dict`` included.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        NotACheckpointError: the file is not a plc-kd checkpoint (a ``ValueError``).
        ValueError: a checkpoint of another version, or a damaged one.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"checkpoint {path} does not exist; train it first or fix the path."
        )
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises many types for a foreign file
        raise NotACheckpointError(path, f"torch.load failed: {err}") from err
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        found = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise NotACheckpointError(path, f"format {found!r}, want {FORMAT!r}")
    if ckpt.get("version") != VERSION:
        raise ValueError(
            f"checkpoint {path} has version {ckpt.get('version')!r} but this code reads version "
            f"{VERSION}; retrain it or use a matching plc-kd release."
        )
    missing = [k for k in (*_KEYS, "state_dict") if k not in ckpt]
    if missing:
        raise ValueError(f"checkpoint {path} lacks {missing}; it is damaged, retrain it.")
    return ckpt


def build_from_checkpoint(path: str | Path, map_location: Any = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild the network a checkpoint describes and load its weights, in ``eval()`` mode.

    Args:
        path: the checkpoint file.
        map_location: where the weights are loaded and the model is moved (a device name).

    Returns:
        ``(model, meta)``: the model on ``map_location`` and the checkpoint dict without
        ``state_dict``.
    """
    # Imported here: the registry pulls in every architecture, which loading alone never needs.
    from pipeline.models.registry import build_model

    ckpt = load_checkpoint(path, map_location=map_location)
    state_dict = ckpt.pop("state_dict")
    model = build_model(ckpt["model_name"], ckpt["num_classes"], ckpt["img_size"])
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as err:
        raise ValueError(
            f"checkpoint {path} does not fit model {ckpt['model_name']!r} "
            f"(num_classes={ckpt['num_classes']}, img_size={ckpt['img_size']}): {err}"
        ) from err
    if isinstance(map_location, str | torch.device):
        model.to(map_location)
    return model.eval(), ckpt
