"""The paired design, recorded and checked: every variant of a (fold, seed) pair starts from
the same initial weights and sees the same batch order.

``plc distill`` writes :func:`weights_sha256` of the student's initial weights and
:func:`plan_sha256` of its batch plan into ``metrics.json``; ``plc report`` refuses to pair
runs whose digests differ (:func:`pairing_problems`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np


def weights_sha256(model: Any) -> str:
    """SHA-256 of a module's state (names, dtypes, shapes, values), device-independent."""
    import torch

    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous().reshape(-1)  # (numel,)
        h.update(f"{name}|{t.dtype}|{tuple(tensor.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())  # raw bytes, bf16 included
    return h.hexdigest()


def plan_sha256(plan: Callable[[int], Iterable[Any]], epochs: int) -> str:
    """SHA-256 of the index batches ``plan(epoch)`` yields for epochs ``0..epochs-1``."""
    h = hashlib.sha256()
    for epoch in range(epochs):
        for batch in plan(epoch):
            arr = np.asarray(batch, dtype=np.int64)  # (B,) positions in the train split
            h.update(f"{epoch}:{len(arr)}|".encode())
            h.update(arr.tobytes())
    return h.hexdigest()


def pairing_problems(runs: list[dict]) -> list[str]:
    """Every (fold, seed) whose runs do not share initial weights and batch order.

    Runs without the digests (written before they were recorded) are not checked.
    """
    groups: dict[tuple, dict[str, set[str]]] = {}
    for r in runs:
        cfg = r.get("config", {})
        key = (cfg.get("fold"), cfg.get("seed"))
        for field in ("init_sha256", "batches_sha256"):
            if field in r:
                groups.setdefault(key, {}).setdefault(field, set()).add(r[field])
    out = []
    for (fold, seed), fields in sorted(groups.items(), key=str):
        for field, values in fields.items():
            if len(values) > 1:
                what = "initial weights" if field == "init_sha256" else "batch order"
                out.append(
                    f"fold {fold}, seed {seed}: the variants do not share their {what} "
                    f"({len(values)} different {field}); rerun them with the same student, "
                    "epochs, batch size and data."
                )
    return out
