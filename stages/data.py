"""Views of a prepared dataset store for the training and inference stages.

``load_split`` holds a split in memory (teacher and assistant training); ``StoreSplit`` reads
it batch by batch (evaluation inside ``distill``, whose memory must stay flat).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from storage_schema import DatasetStore, LabelStore, open_dataset_store, open_label_store
from storage_schema.location import is_url


@dataclass
class SplitData:
    """One split of a dataset store, held in memory.

    Attributes:
        images: (N, 3, H, W) uint8.
        masks: (N, H, W) int64 class ids.
        indices: (N,) positions of these images in the store (manifest order).
        ids: image ids, in the same order.
    """

    images: torch.Tensor
    masks: torch.Tensor
    indices: np.ndarray
    ids: list[str]

    def __len__(self) -> int:
        return len(self.ids)

    def batch(self, idx: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Float images in [0, 1] (B, 3, H, W) and masks (B, H, W) on ``device``."""
        images = self.images[idx].to(device, non_blocking=True).float().div_(255.0)
        return images, self.masks[idx].to(device, non_blocking=True)


class StoreSplit:
    """One split of a dataset store read batch by batch (nothing held in memory).

    The same ``len``/``ids``/``indices``/``batch`` as :class:`SplitData` (no ``images`` or
    ``masks`` tensors), for evaluation passes whose memory must not grow with the split.
    """

    def __init__(
        self, store: DatasetStore, split: str, positions: np.ndarray | None = None
    ) -> None:
        """``positions``: only these positions within the split (e.g. its validation part)."""
        self.store = store
        self.indices = store.indices(split)
        if positions is not None:
            self.indices = self.indices[np.asarray(positions, dtype=np.int64)]
        if len(self.indices) == 0:
            raise ValueError(f"dataset store {store.path} has no images in split '{split}'.")
        ids = store.ids()
        self.ids = [ids[i] for i in self.indices]

    def __len__(self) -> int:
        return len(self.ids)

    def batch(self, idx: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Float images in [0, 1] (B, 3, H, W) and int64 masks (B, H, W) on ``device``."""
        rows = self.indices[np.asarray(idx)]
        images = torch.from_numpy(self.store.read_images(rows)).permute(0, 3, 1, 2)
        masks = torch.from_numpy(self.store.read_masks(rows).astype(np.int64))
        return images.to(device).float().div_(255.0), masks.to(device)


def load_split(store: DatasetStore, split: str) -> SplitData:
    """Read every image of ``split`` from ``store`` into memory."""
    idx = store.indices(split)
    if len(idx) == 0:
        raise ValueError(f"dataset store {store.path} has no images in split '{split}'.")
    images = np.asarray(store.images.get_orthogonal_selection((idx,)))  # (N, H, W, 3)
    masks = np.asarray(store.masks.get_orthogonal_selection((idx,)))  # (N, H, W)
    ids = store.ids()
    return SplitData(
        images=torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),  # (N, 3, H, W)
        masks=torch.from_numpy(masks.astype(np.int64)),
        indices=np.asarray(idx),
        ids=[ids[i] for i in idx],
    )


def first_images(store: DatasetStore, split: str, n: int, device: torch.device) -> torch.Tensor:
    """The first ``n`` images of ``split`` (fewer when it has fewer), as the networks get
    them: (B, 3, H, W) float32 RGB in [0, 1] on ``device``; only those images are read."""
    view = StoreSplit(store, split, np.arange(min(n, len(store.indices(split)))))
    return view.batch(torch.arange(len(view)), device)[0]


def open_store(path: Path, fold: int | None = None) -> DatasetStore:
    """Open a dataset store, naming the command that makes it when it is missing.

    With ``fold``, the store's cross-validation view: ``train`` = the other folds, ``test`` =
    fold ``fold`` (:meth:`~storage_schema.DatasetStore.with_fold`).
    """
    if not is_url(str(path)) and not Path(path).exists():
        raise FileNotFoundError(
            f"dataset store not found at {path}: run `plc prepare --dataset ... --out {path}` first."
        )
    store = open_dataset_store(path)
    if fold is None:
        return store
    folds = store.folds()
    if folds is None:
        raise ValueError(
            f"--fold {fold} needs a dataset store with folds, but {path} has none; prepare it "
            "with `plc prepare ... --folds K`."
        )
    if fold > int(folds.max()):
        raise ValueError(f"--fold {fold} is out of range: {path} has folds 0..{int(folds.max())}.")
    return store.with_fold(fold)


def open_labels_with_data(
    labels: Path, data: Path | None, fold: int | None = None
) -> tuple[DatasetStore, LabelStore]:
    """(dataset store, label store), the label store checked against the dataset's manifest.

    ``data`` defaults to the dataset path recorded in the label store's provenance; ``fold``
    must be the fold the label store was computed for (its provenance's ``fold``).
    """
    if not is_url(str(labels)) and not Path(labels).exists():
        raise FileNotFoundError(f"label store not found at {labels}: run `plc precompute` first.")
    unchecked = open_label_store(labels)  # validates schema and status
    built_for = unchecked.provenance.get("fold")
    if built_for != fold:
        given = "no --fold" if fold is None else f"--fold {fold}"
        want = "no --fold" if built_for is None else f"--fold {built_for}"
        raise ValueError(
            f"label store {labels} was computed for {want}, not {given}; pass {want} or the "
            "label store of that fold."
        )
    store = open_store(data or Path(unchecked.provenance["dataset_path"]), fold)
    return store, open_label_store(labels, manifest_sha256=store.manifest_sha256)


def epoch_batches(
    n: int, batch_size: int, epoch: int, seed: int, shuffle: bool = True, drop_last: bool = False
) -> Iterator[torch.Tensor]:
    """Index batches for one epoch; the order depends only on (seed, epoch)."""
    if shuffle:
        g = torch.Generator().manual_seed(seed * 100_003 + epoch)
        order = torch.randperm(n, generator=g)
    else:
        order = torch.arange(n)
    stop = n - (n % batch_size) if drop_last and n >= batch_size else n
    for start in range(0, stop, batch_size):
        yield order[start : start + batch_size]


def check_same_images(store: DatasetStore, labels: LabelStore, indices: np.ndarray) -> None:
    """Refuse a label store whose images are not the dataset's ``indices`` in the same order."""
    ids = store.ids()
    if list(labels.ids) != [ids[i] for i in indices]:
        raise ValueError(
            f"label store {labels.path} lists other train images than the dataset store "
            f"{store.path}; rerun `plc precompute` for this dataset."
        )


def foreground_pixels(store: DatasetStore, indices: np.ndarray, block: int = 64) -> np.ndarray:
    """(N,) int64 foreground pixels (class id > 0) of the images ``indices``, streamed.

    The masks are read ``block`` images at a time: memory does not grow with the split.
    """
    counts = np.zeros(len(indices), dtype=np.int64)
    for start in range(0, len(indices), block):
        masks = store.read_masks(np.asarray(indices[start : start + block]))  # (b, H, W)
        counts[start : start + len(masks)] = (masks > 0).reshape(len(masks), -1).sum(1)
    return counts
