"""What a stage records about how it ran: its config as JSON, and whether an output it
finds was made by the same config (a rerun is then a no-op). Torch-free, imported by every
stage and by :mod:`stages.evaluate`.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any


def config_dict(cfg: Any) -> dict:
    """The JSON-able content of a stage config, without runtime-only fields."""
    from stages.options import is_runtime

    out = {}
    for f in dataclasses.fields(cfg):
        if is_runtime(f):
            continue
        value = getattr(cfg, f.name)
        out[f.name] = str(value) if isinstance(value, Path) else value
    return json.loads(json.dumps(out, default=str))


def checkpoint_is_current(
    path: Path, cfg: Any, force: bool, init_sha256: str | None = None
) -> bool:
    """True when ``path`` holds a checkpoint made by the same stage config (rerun = no-op)
    and, with ``--init``, from an init file of the same content (``init_sha256``)."""
    if force or not Path(path).exists():
        return False
    from pipeline.checkpoint import load_checkpoint

    try:
        meta = load_checkpoint(path)
    except Exception:
        return False
    config = meta.get("config", {})
    return config.get("stage") == config_dict(cfg) and config.get("init_sha256") == init_sha256


def init_sha256(path: Path | None) -> str | None:
    """SHA-256 of the ``--init`` file, None without one; a missing file is a clear error."""
    if path is None:
        return None
    if not Path(path).is_file():
        raise FileNotFoundError(
            f"--init {path} does not exist; pass TransUNet's official R50+ViT-B_16.npz "
            "(docs/commands.md: Pretrained teachers) or a state_dict / plc-kd checkpoint of the same network."
        )
    from pipeline.checkpoint import file_sha256

    return file_sha256(path)
