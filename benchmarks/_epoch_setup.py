"""Fixtures of bench_epoch: a synthetic dataset store, a briefly trained team, a label store."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from stages.precompute.stage import PrecomputeConfig

logger = logging.getLogger(__name__)

ROLES = ("teacher", "assistant_fp", "assistant_bd")


@dataclass(frozen=True)
class Fixture:
    """Paths of the built artifacts.

    Attributes:
        data: the prepared synthetic dataset store.
        nets: role -> checkpoint path (teacher, assistant_fp, assistant_bd).
    """

    data: Path
    nets: dict[str, Path]


def build_fixture(
    root: Path, size: int, count: int, model: str, epochs: int, batch: int
) -> Fixture:
    """Prepare ``count`` synthetic images at ``size``² and train a team of ``model`` nets.

    Each network gets ``epochs`` epochs of L_Seg on the train split (seeds 0, 1, 2): the
    weights only need to be trained-ish so that the cascade and SC see a realistic share of
    false pixels. 0 epochs keeps them untrained.
    """
    from pipeline.checkpoint import save_checkpoint
    from pipeline.models.registry import build_model
    from pipeline.train import TrainConfig
    from stages.data import load_split, open_store
    from stages.prepare.stage import PrepareConfig
    from stages.prepare.stage import run as prepare
    from stages.train.common import train_segmenter

    data = prepare(
        PrepareConfig(
            dataset="synthetic", out=root / "bench.zarr", size=size, count=count, progress=False
        )
    )
    train = load_split(open_store(data), "train")
    nets = {}
    for seed, role in enumerate(ROLES):
        torch.manual_seed(seed)
        net = build_model(model, num_classes=2, img_size=size)
        if epochs > 0:
            cfg = TrainConfig(epochs=epochs, lr=3e-3, seed=seed, progress=False, device="auto")
            train_segmenter(net, train, train_cfg=cfg, batch_size=batch, transform=None, desc=role)
        nets[role] = root / f"{role}.pt"
        save_checkpoint(
            nets[role],
            net.cpu(),
            model_name=model,
            num_classes=2,
            img_size=size,
            config={"bench": True},
        )
    return Fixture(data=data, nets=nets)


def precompute_config(fixture: Fixture, out: Path, batch: int, backend: str) -> PrecomputeConfig:
    """The PrecomputeConfig of the benchmark (forced, no progress bar)."""
    return PrecomputeConfig(
        dataset="bench",
        data=fixture.data,
        teacher=fixture.nets["teacher"],
        assistant_fp=fixture.nets["assistant_fp"],
        assistant_bd=fixture.nets["assistant_bd"],
        out=out,
        batch_size=batch,
        search_backend=backend,
        force=True,
        progress=False,
    )
