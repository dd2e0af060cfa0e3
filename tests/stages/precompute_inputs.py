"""Precompute inputs without training: a tiny synthetic dataset and seeded random-init team.

Random tiny UNets make many mistakes; the teacher's head bias is shifted towards the
background so that some images have no correct foreground pixel (SC then needs the
cross-image bank) and the bank path, the in-image path and the one-hot fallback all run.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

EPOCH = "1700000000"  # SOURCE_DATE_EPOCH: pins the stores' creation time
SIZE = 32
COUNT = 24  # 80 % train -> 19 train images: shards of 8 -> 3 shards, the last one short


def make_inputs(root: Path, count: int = COUNT, seed: int = 5) -> dict[str, Path]:
    """Write ``data/g.zarr`` and three checkpoints under ``root``; return their paths."""
    from pipeline.checkpoint import save_checkpoint
    from pipeline.models.registry import build_model

    data = root / "data" / "g.zarr"
    plc("prepare", "--dataset", "synthetic", "--out", str(data), "--size", str(SIZE),
        "--count", str(count), "--seed", str(seed), "--no-progress")  # fmt: skip
    images = _images(data)
    nets = {}
    for i, role in enumerate(("teacher", "assistant_fp", "assistant_bd")):
        torch.manual_seed(100 + i)
        net = build_model("unet-tiny", 2, SIZE).eval()
        _sharpen(net, images, quantile=(0.97, 0.75, 0.9)[i])
        nets[role] = root / "models" / f"{role}.pt"
        save_checkpoint(
            nets[role], net, model_name="unet-tiny", num_classes=2, img_size=SIZE,
            config={"seed": 100 + i},
        )  # fmt: skip
    return {"data": data, **nets}


def _images(data: Path) -> torch.Tensor:
    from stages.data import load_split, open_store

    train = load_split(open_store(data), "train")
    return train.batch(torch.arange(len(train)), torch.device("cpu"))[0]


@torch.no_grad()
def _sharpen(
    net: torch.nn.Module, images: torch.Tensor, quantile: float, gain: float = 1000.0
) -> None:
    """Scale a random net's head so its foreground margin spans a few logits, and shift it so
    that ``1 - quantile`` of the pixels are foreground (random eval-mode nets are near-constant)."""
    margin = net(images)  # (B, 2, H, W)
    margin = (margin[:, 1] - margin[:, 0]).flatten()
    bias = net.head.bias[1] - net.head.bias[0]
    shift = float(torch.quantile(margin - bias, quantile))
    net.head.weight.mul_(gain)
    net.head.bias.copy_(torch.tensor([gain * shift / 2, -gain * shift / 2]))


def plc(*args: object) -> str:
    """Run ``plc ARGS`` in-process; fail with its output unless it exits 0."""
    from typer.testing import CliRunner

    from stages.cli import app

    words = [str(a) for a in args]
    result = CliRunner().invoke(app, words)
    assert result.exit_code == 0, f"plc {' '.join(words)} failed:\n{result.output}"
    return result.output


def precompute_args(inputs: dict[str, Path], out: Path, shard_size: int = 8) -> list[str]:
    """``plc precompute`` arguments for these inputs (shards of 8, batches of 4, CPU)."""
    return [
        "precompute", "--dataset", "g", "--data", str(inputs["data"]),
        "--teacher", str(inputs["teacher"]), "--assistant-fp", str(inputs["assistant_fp"]),
        "--assistant-bd", str(inputs["assistant_bd"]), "--out", str(out),
        "--shard-size", str(shard_size), "--batch-size", "4", "--no-progress", "--device", "cpu",
    ]  # fmt: skip


def content_digest(path: Path, variants: tuple[str, ...] | None = None) -> dict[str, str]:
    """SHA-256 of each stored array's decoded content (int8 codes, float64 stats, ids, done).

    Independent of codecs and metadata layout, so it pins what a reader gets back.
    """
    import zarr

    group = zarr.open_group(path, mode="r")
    attrs = dict(group.attrs)
    keys = ["ids", "done"]
    keys += [f"soft/{v}" for v in (variants or attrs["variants"])]
    keys += [f"stats/{s}" for s in attrs["stat_names"]]
    out = {}
    for key in keys:
        arr = np.asarray(group[key][:])
        data = "\n".join(arr.tolist()).encode() if arr.dtype.kind in "UOT" else arr.tobytes()
        out[key] = hashlib.sha256(data).hexdigest()
    return out


# `python -c` body: `plc`, with each shard write slowed by 0.5 s, so that a test can kill the
# process between two shards (the writes themselves are the real ones).
SLOW_PLC = """
import sys, time
import torch
torch.set_num_threads(1)  # the test kills it between shards: keep it steady on a busy machine
from storage_schema import LabelStoreWriter
from stages.cli import app

original = LabelStoreWriter.write_shard

def slow(self, *args, **kwargs):
    original(self, *args, **kwargs)
    time.sleep(0.5)

LabelStoreWriter.write_shard = slow
app(sys.argv[1:])
"""


def store_files(root: Path) -> dict[str, bytes]:
    """Relative path -> bytes of every file under ``root``."""
    return {
        str(f.relative_to(root)): f.read_bytes() for f in sorted(root.rglob("*")) if f.is_file()
    }


def same_store(a: Path, b: Path) -> list[str]:
    """Files that differ between two label stores, ignoring the recorded output path."""
    import json

    fa, fb = store_files(a), store_files(b)
    differing = sorted(set(fa) ^ set(fb))
    differing += [k for k in fa.keys() & fb.keys() if fa[k] != fb[k] and k != "zarr.json"]
    meta = [json.loads(f["zarr.json"]) for f in (fa, fb)]
    for m in meta:
        m["attributes"]["provenance"]["precompute"].pop("out")
    if meta[0] != meta[1]:
        differing.append("zarr.json")
    return differing
