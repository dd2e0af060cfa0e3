"""Student batches streamed from the dataset store and the label store by a torch DataLoader.

Three parts, each with one job:

- :class:`StoreBatches` (a ``Dataset``) runs in the worker processes. It holds only paths:
  each worker opens its own store handles on the first batch it reads (nothing zarr is
  pickled). One item is one whole batch: the sorted unique indices of the batch are read
  with one checked read per array (``read_images``/``read_masks``/``read_codes`` of
  ``storage_schema``; a slice when they are contiguous) and put back in the sampler's order.
  It returns raw bytes: uint8 images and masks, int8 label codes. A small split can be
  preloaded instead (``StoreSource.preload``): read once per process, then served from
  memory, since at 64² zarr's per-chunk work costs as much as a small student's step.
- :class:`BatchPlan` (a ``Sampler``) yields the index batches of the current epoch from any
  ``plan(epoch) -> list of index arrays`` (``stages.data.epoch_batches``,
  ``pipeline.sampling.step_batches``, ...).
- :class:`StudentStream` runs in the training process: it moves each raw batch to the
  training device (pinned memory on CUDA), decodes the codes there and applies the joint
  augmentation there, with a generator seeded by ``(seed, epoch)`` only. The batch order and
  the augmentation draws therefore depend on the seed alone, never on the variant or on the
  number of workers: every variant of a seed sees the same images in the same order with
  the same geometry (the paired design).

A ``StoreError`` raised in a worker (a corrupt chunk, a changed store) comes back as a value
and is raised again in the training process with its original one-sentence message.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from storage_schema import LOGP_SCALE, StoreError, open_dataset_store, open_label_store

logger = logging.getLogger(__name__)

Plan = Callable[[int], Sequence[np.ndarray]]  # epoch -> index batches (positions in the split)
LiveFn = Callable[[Tensor, Tensor, Tensor], Tensor]  # (positions, images, masks) -> log-probs


@dataclass(frozen=True)
class StoreSource:
    """What a worker reads: plain paths and indices, never open handles.

    Attributes:
        data: the dataset store (path or URL string).
        indices: (N,) store positions of the split's images; batch position ``i`` reads
            store image ``indices[i]`` and label-store image ``i``.
        labels: the label store (path or URL string), or None for images and masks only.
        variant: the label variant read from ``labels``.
        manifest_sha256: the dataset manifest hash the label store must have been built for.
        preload: read the whole source once per process (one checked read per array) and
            serve every batch from memory; for splits small enough to hold (distill's
            ``--preload-mb``). The batches are the same bytes either way.
    """

    data: str
    indices: np.ndarray
    labels: str | None = None
    variant: str | None = None
    manifest_sha256: str | None = None
    preload: bool = False

    def __post_init__(self) -> None:
        if (self.labels is None) != (self.variant is None):
            raise ValueError("StoreSource needs both labels and variant, or neither.")


class RawBatch(NamedTuple):
    """One batch as read from the stores (CPU tensors, sampler order).

    Attributes:
        positions: (B,) int64 positions in the split.
        images: (B, H, W, 3) uint8.
        masks: (B, H, W) uint8 class ids.
        codes: (B, C, H, W) int8 log-probability codes, or None without labels.
    """

    positions: Tensor
    images: Tensor
    masks: Tensor
    codes: Tensor | None


class ReadFailure(NamedTuple):
    """A ``StoreError`` raised while reading a batch, carried back as its message."""

    message: str


MAX_GAP = 2  # images read and dropped inside one read rather than starting another read


def runs(index: np.ndarray, max_gap: int = MAX_GAP) -> list[tuple[int, int]]:
    """Sorted unique ``index`` as ``[start, stop)`` runs, one read each: consecutive
    positions join a run, and so do positions at most ``max_gap`` apart (the few images
    between are read and dropped: one contiguous read costs less than two)."""
    if len(index) == 0:
        return []
    cuts = np.flatnonzero(np.diff(index) > max_gap + 1) + 1
    return [(int(part[0]), int(part[-1]) + 1) for part in np.split(index, cuts)]


def read_runs(read: Callable[[slice], np.ndarray], index: np.ndarray) -> np.ndarray:
    """``read(index)`` in ``index``'s order (any order, repeats allowed) as one slice read per
    run of its sorted unique values (:func:`runs`), each run's rows gathered straight into
    the result (one copy after decoding)."""
    out = None
    for start, stop in runs(np.unique(index)):
        block = read(slice(start, stop))
        if out is None:
            out = np.empty((len(index), *block.shape[1:]), dtype=block.dtype)
        hit = (index >= start) & (index < stop)
        out[hit] = block[index[hit] - start]
    return out


class StoreBatches(Dataset):
    """Map-style dataset whose items are whole batches: ``dataset[positions] -> RawBatch``."""

    def __init__(self, source: StoreSource) -> None:
        self.source = source
        self._stores: tuple[Any, Any] | None = None  # opened lazily, once per process
        self._held: RawBatch | None = None  # the whole source, when ``source.preload``

    def __len__(self) -> int:
        return len(self.source.indices)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_stores"] = state["_held"] = None  # a worker opens (and preloads) its own
        return state

    def _open(self) -> tuple[Any, Any]:
        if self._stores is None:
            src = self.source
            data = open_dataset_store(src.data)
            labels = (
                None
                if src.labels is None
                else open_label_store(src.labels, manifest_sha256=src.manifest_sha256)
            )
            self._stores = (data, labels)
        return self._stores

    def __getitem__(
        self, positions: np.ndarray | list[np.ndarray]
    ) -> RawBatch | list[RawBatch] | ReadFailure:
        """One batch, or (a list of batches: a window of the block order) each of them,
        read together."""
        try:
            if isinstance(positions, list):
                return self._read_group([np.asarray(p, dtype=np.int64) for p in positions])
            return self._read(np.asarray(positions, dtype=np.int64))
        except StoreError as err:
            return ReadFailure(str(err))

    def _read_group(self, batches: list[np.ndarray]) -> list[RawBatch]:
        whole = self._read(np.concatenate(batches))
        bounds = np.cumsum([0, *map(len, batches)])
        return [
            RawBatch(*(None if t is None else t[a:b] for t in whole))
            for a, b in itertools.pairwise(bounds)
        ]

    def _read(self, positions: np.ndarray) -> RawBatch:
        if positions.ndim != 1 or positions.min() < 0 or positions.max() >= len(self):
            raise IndexError(f"batch positions must be in [0, {len(self)}), got {positions}")
        if self.source.preload:
            held = self._held = self._held or self._read_rows(np.arange(len(self)))
            codes = None if held.codes is None else held.codes[positions]
            return RawBatch(
                torch.from_numpy(positions), held.images[positions], held.masks[positions], codes
            )
        return self._read_rows(positions)

    def _read_rows(self, positions: np.ndarray) -> RawBatch:
        """Split positions ``positions`` in that order (repeats allowed): one checked slice
        read per run and array (:func:`read_runs`)."""
        data, labels = self._open()
        rows = self.source.indices[positions]  # store rows: a split's indices are sorted
        codes = None
        if labels is not None:
            variant = self.source.variant
            read = lambda s: labels.read_codes(variant, s)  # noqa: E731
            codes = torch.from_numpy(read_runs(read, positions))
        return RawBatch(
            torch.from_numpy(positions),
            torch.from_numpy(read_runs(data.read_images, rows)),  # (n, H, W, 3)
            torch.from_numpy(read_runs(data.read_masks, rows)),  # (n, H, W)
            codes,  # (n, C, H, W) int8
        )


class BatchPlan(Sampler):
    """Yields the index batches ``plan(epoch)`` of the epoch last set with :meth:`set_epoch`,
    one at a time, or ``group`` consecutive batches as one list (read together)."""

    def __init__(self, plan: Plan, group: int = 1) -> None:
        if group < 1:
            raise ValueError(f"group must be >= 1, got {group}.")
        self.plan = plan
        self.group = group
        self.epoch = 0
        self._batches: Sequence[np.ndarray] | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self._batches = None

    def batches(self) -> Sequence[np.ndarray]:
        if self._batches is None:
            self._batches = [np.asarray(b, dtype=np.int64) for b in self.plan(self.epoch)]
        return self._batches

    def __iter__(self) -> Iterator[np.ndarray | list[np.ndarray]]:
        batches = self.batches()
        if self.group == 1:
            return iter(batches)
        return (list(batches[i : i + self.group]) for i in range(0, len(batches), self.group))

    def __len__(self) -> int:
        """Items (batches, or groups of them) per epoch."""
        return -(-len(self.batches()) // self.group)


def _fresh_handles(worker_id: int) -> None:
    """``worker_init_fn``: a worker never reuses handles it inherited by fork."""
    info = torch.utils.data.get_worker_info()
    if info is not None:
        info.dataset._stores = info.dataset._held = None


def _keep(batch: Any) -> Any:
    """The DataLoader's collate function: a dataset item already is a batch."""
    return batch


def make_loader(
    source: StoreSource,
    plan: Plan,
    *,
    num_workers: int,
    pin_memory: bool,
    prefetch_factor: int = 2,
    group: int = 1,
) -> DataLoader:
    """A DataLoader of :class:`RawBatch` over ``source`` in the order of ``plan``.

    Args:
        source: what to read.
        plan: epoch -> index batches (positions in the split); choose the epoch with
            ``loader.sampler.set_epoch(epoch)`` before iterating.
        num_workers: worker processes (0 reads in the calling process).
        pin_memory: page-locked batches for asynchronous host-to-GPU copies.
        prefetch_factor: items each worker reads ahead (ignored without workers).
        group: consecutive batches read as one item (a list of RawBatch): a window of the
            block-shuffled order is then a few contiguous reads.
    """
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}.")
    extra = {"prefetch_factor": prefetch_factor, "persistent_workers": True} if num_workers else {}
    return DataLoader(
        StoreBatches(source),
        batch_size=None,  # items are whole batches already
        sampler=BatchPlan(plan, group),
        collate_fn=_keep,
        num_workers=num_workers,
        worker_init_fn=_fresh_handles,
        pin_memory=pin_memory,
        **extra,
    )


def decode_codes(codes: Tensor) -> Tensor:
    """Decode int8 codes (B, C, H, W) to float32 log-probabilities on their device.

    The torch twin of ``storage_schema.decode_logprobs`` (``log_softmax(code / 8)`` over
    the class axis), so decoding runs on the training device; tests check they agree.
    """
    return torch.log_softmax(codes.float() / LOGP_SCALE, dim=1)


def epoch_seed(seed: int, epoch: int) -> int:
    """The augmentation seed of ``(seed, epoch)``: independent streams per epoch."""
    return int(np.random.SeedSequence([seed, epoch, 0xA06]).generate_state(1)[0])


class StudentStream:
    """``stream(epoch)`` yields training batches on ``device``: (images, masks[, logp]).

    images (B, 3, H, W) float in [0, 1]; masks (B, H, W) int64; logp (B, C, H, W) float32
    log-probabilities (stored codes decoded on ``device``, or ``live`` labels computed on
    the un-augmented batch), all augmented with one set of draws when ``augment`` is set.
    """

    def __init__(
        self,
        loader: DataLoader,
        device: torch.device,
        seed: int,
        augment: Any | None = None,
        live: LiveFn | None = None,
    ) -> None:
        self.loader: DataLoader | None = loader
        self.device, self.seed = device, seed
        self.augment, self.live = augment, live

    def __call__(self, epoch: int) -> Iterator[tuple[Tensor, ...]]:
        if self.loader is None:
            raise RuntimeError("this StudentStream is closed.")
        self.loader.sampler.set_epoch(epoch)
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, epoch))
        failure = None
        for item in self.loader:
            if isinstance(item, ReadFailure):
                failure = item
                break
            for raw in item if isinstance(item, list) else [item]:
                yield self.prepare(raw, generator)
        if failure is not None:
            self.close()
            raise StoreError(failure.message)

    def __len__(self) -> int:
        """Batches per epoch."""
        return len(self.loader.sampler.batches())

    def close(self) -> None:
        """Stop the worker processes now (dropping the last reference to the DataLoader)."""
        self.loader = None

    def prepare(self, raw: RawBatch, generator: torch.Generator) -> tuple:
        """Raw batch -> device tensors, decoded and augmented."""
        dev = self.device
        images = raw.images.to(dev, non_blocking=True).permute(0, 3, 1, 2).float().div_(255.0)
        masks = raw.masks.to(dev, non_blocking=True).long()  # (B, H, W)
        logp = None
        if raw.codes is not None:
            logp = decode_codes(raw.codes.to(dev, non_blocking=True))
        elif self.live is not None:
            logp = self.live(raw.positions, images, masks).to(dev, non_blocking=True)
        if self.augment is not None:
            images, masks, logp = augment_logp(images, masks, logp, self.augment, generator)
        return (images, masks) if logp is None else (images, masks, logp)


def augment_logp(
    images: Tensor, masks: Tensor, logp: Tensor | None, cfg: Any, generator: torch.Generator
) -> tuple[Tensor, Tensor, Tensor | None]:
    """``pipeline.augment.augment_batch`` on log-probabilities (probabilities in between)."""
    from pipeline.augment import augment_batch

    soft = None if logp is None else logp.exp()
    images, masks, soft = augment_batch(images, masks, soft, cfg, generator)
    return images, masks, (None if soft is None else torch.log(soft.clamp_min(1e-12)))
