"""Stage `prepare`: a raw dataset folder (or the synthetic generator) → ``data/<ds>.zarr``.

Every file is read and checked before anything is written; all problems are reported in
one :class:`~stages.prepare.readers.DatasetError` (headed by one line saying which option would
pair the files when nothing paired). Images are normalised to RGB uint8 and masks to
class ids ({0, 1}, or through a ``--classes`` map), both resized to ``size × size``; the manifest records each source file's
SHA-256, original size, foreground fraction, split and flags. Rerunning with the same
config is a no-op (the config hash is stored in the store's ``source``).
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from pipeline.synthetic import generate_dataset
from stages.locks import holds_output_lock
from stages.outputs import check_writable, unwritable
from stages.prepare.config import PrepareConfig
from stages.prepare.readers import (
    LAYOUTS,
    ClassMap,
    DatasetError,
    Layout,
    LoadedPair,
    Problem,
    RawPair,
    load_pair,
    parse_classes,
    seeded_split,
)
from stages.prepare.readers.imageio import quiet_opencv
from stages.progress import track
from storage_schema import StoreError, build_manifest, open_dataset_store, write_dataset_store

logger = logging.getLogger(__name__)

_MAX_WORKERS = 8
Prepared = tuple[np.ndarray, np.ndarray, list[dict], int]  # images, masks, records, n official


@holds_output_lock("plc prepare", lambda cfg: Path(cfg.out))  # one writer per output
def run(cfg: PrepareConfig) -> Path:
    """Build the dataset store ``cfg.out``; a no-op when it already holds this config.

    Returns:
        ``cfg.out``.

    Raises:
        DatasetError: listing every bad file or folder (nothing is written).
        FileExistsError: ``out`` exists with another config (or is no store) and
            ``overwrite`` is False.
        OutputError: ``out`` cannot be written (a full disk, a read-only mount, a file
            where a folder should be); no store is published and a previous one is kept.
    """
    if _up_to_date(cfg):
        return cfg.out
    check_writable(cfg.out)  # before minutes of reading files
    layout = LAYOUTS[cfg.dataset]
    logger.info("preparing %s at %d² into %s", cfg.dataset, cfg.size, cfg.out)
    prepared = _from_files(cfg, layout) if layout.needs_root else _synthetic(cfg)
    images, masks, records, n_official = prepared
    if cfg.folds:
        _add_folds(records, cfg)
    source = {
        "layout": cfg.dataset,
        "root": cfg.identity()["root"],
        "config": cfg.identity(),
        "config_sha256": cfg.digest(),
        "split": _split_source(cfg, records, n_official),
    }
    if cfg.folds:
        source["folds"] = {"k": cfg.folds, "seed": cfg.fold_seed_value, "stratified": "empty_mask"}
    existed = cfg.out.exists()
    try:  # the writer removes its temporary sibling on any error; the old store stays
        path = write_dataset_store(
            cfg.out,
            images=images,
            masks=masks,
            manifest=build_manifest(records),
            name=cfg.out.stem,
            classes=list(cfg.class_names()),
            source=source,
            overwrite=cfg.overwrite,
            chunk_images=cfg.chunk_images,
        )
    except OSError as err:
        raise unwritable(err, cfg.out, existed=existed) from err
    logger.info("prepared %d images into %s", len(records), path)
    return path


def _up_to_date(cfg: PrepareConfig) -> bool:
    """True when ``out`` holds a store of this config; refuse a different one unless overwrite."""
    if not cfg.out.exists() or cfg.overwrite:
        return False
    try:
        stored = open_dataset_store(cfg.out).attrs.get("source", {})
    except StoreError as err:
        raise FileExistsError(
            f"{cfg.out} exists but is not a readable dataset store ({err}); "
            "pass overwrite=True (--overwrite) to replace it."
        ) from err
    if stored.get("config_sha256") == cfg.digest():
        logger.info("%s is up to date (same prepare config); nothing to do", cfg.out)
        return True
    old = stored.get("config", {})
    changed = [k for k, v in cfg.identity().items() if old.get(k) != v] or ["unknown"]
    raise FileExistsError(
        f"{cfg.out} was prepared with a different config (changed: {', '.join(changed)}); "
        "pass overwrite=True (--overwrite) to replace it."
    )


def _from_files(cfg: PrepareConfig, layout: Layout) -> Prepared:
    """Scan, read and check every file; raise one DatasetError or return the arrays."""
    assert cfg.root is not None  # checked by PrepareConfig
    listing = layout.scan(cfg.root, cfg.include_negatives, cfg.naming())
    pairs = listing.pairs
    splits = seeded_split(pairs, cfg.split, cfg.seed)
    images = np.zeros((len(pairs), cfg.size, cfg.size, 3), np.uint8)
    masks = np.zeros((len(pairs), cfg.size, cfg.size), np.uint8)
    records: list[dict] = []
    problems = list(listing.problems)
    class_map = parse_classes(cfg.classes) if cfg.classes else None
    for index, (loaded, found) in enumerate(_load_all(pairs, cfg, class_map)):
        problems += found
        if loaded is not None and not problems:  # stop keeping arrays once anything failed
            images[index], masks[index] = loaded.image, loaded.mask
            records.append(_record(pairs[index], loaded, splits[index], cfg.root))
    if problems:
        where = f"dataset '{cfg.dataset}' at {cfg.root}"
        header = (
            f"{where}: {listing.hint}; {len(problems)} problem(s) below, nothing was written:"
            if listing.hint  # nothing paired: say so, and which option pairs them, first
            else f"{where} has {len(problems)} problem(s); fix them and rerun (nothing was "
            "written):"
        )
        raise DatasetError(header, problems)
    return images, masks, records, sum(p.split is not None for p in pairs)


def _load_all(
    pairs: Sequence[RawPair], cfg: PrepareConfig, class_map: ClassMap | None
) -> Iterator[tuple[LoadedPair | None, list[Problem]]]:
    """Load the pairs in order on a few threads (decoding releases the GIL)."""
    workers = max(1, min(_MAX_WORKERS, os.cpu_count() or 1))
    n = len(pairs)
    with quiet_opencv(), ThreadPoolExecutor(max_workers=workers) as pool:
        results = pool.map(load_pair, pairs, [cfg.size] * n, [class_map] * n)
        yield from track(results, "checking files", total=n, enabled=cfg.progress)


def _record(pair: RawPair, loaded: LoadedPair, split: str, root: Path) -> dict:
    """The manifest record of one loaded pair (paths relative to the dataset root)."""
    return {
        "id": pair.id,
        "split": split,
        "image_path": pair.image_path.relative_to(root).as_posix(),
        "mask_path": pair.mask_path.relative_to(root).as_posix() if pair.mask_path else None,
        "orig_height": loaded.orig_height,
        "orig_width": loaded.orig_width,
        "image_sha256": loaded.image_sha256,
        "mask_sha256": loaded.mask_sha256,
        "fg_fraction": loaded.fg_fraction,
        "empty_mask": "empty_mask" in loaded.flags,
        "flags": ",".join(loaded.flags),
    }


def _synthetic(cfg: PrepareConfig) -> Prepared:
    """Generate ``count`` images; empty samples are split as their own stratum."""
    images, masks = generate_dataset(
        cfg.count,
        cfg.size,
        cfg.seed,
        num_classes=cfg.synthetic_classes,
        stripes=cfg.synthetic_stripes,
    )
    ids = [f"synth_{i:05d}" for i in range(cfg.count)]
    empty = ~masks.reshape(cfg.count, -1).any(axis=1)  # (N, H, W) -> (N, H*W) -> (N,)
    strata = [
        RawPair(i, Path("synthetic", i), None, negative=bool(e))
        for i, e in zip(ids, empty, strict=True)
    ]
    splits = seeded_split(strata, cfg.split, cfg.seed)
    records = []
    for index, sample_id in enumerate(ids):
        fg = float(np.count_nonzero(masks[index])) / masks[index].size
        records.append(
            {
                "id": sample_id,
                "split": splits[index],
                "image_path": f"synthetic/{sample_id}/image",
                "mask_path": f"synthetic/{sample_id}/mask",
                "orig_height": cfg.size,
                "orig_width": cfg.size,
                "image_sha256": hashlib.sha256(images[index].tobytes()).hexdigest(),
                "mask_sha256": hashlib.sha256(masks[index].tobytes()).hexdigest(),
                "fg_fraction": fg,
                "empty_mask": fg == 0.0,
                "flags": "empty_mask" if fg == 0.0 else "",
            }
        )
    return images, masks, records, 0


def _add_folds(records: list[dict], cfg: PrepareConfig) -> None:
    """Give every record a ``fold`` (stratified by empty masks, seeded by the fold seed)."""
    from stages.prepare.folds import assign_folds

    folds = assign_folds([r["empty_mask"] for r in records], cfg.folds, cfg.fold_seed_value)
    for record, fold in zip(records, folds, strict=True):
        record["fold"] = fold
    logger.info("assigned %d folds (seed %d)", cfg.folds, cfg.fold_seed_value)


def _split_source(cfg: PrepareConfig, records: list[dict], n_official: int) -> dict:
    """How the split was made, for the store's ``source``."""
    counts = {s: sum(r["split"] == s for r in records) for s in ("train", "val", "test")}
    return {
        "official": n_official,
        "seeded": len(records) - n_official,
        "train_fraction": cfg.split,
        "seed": cfg.seed,
        "counts": counts,
    }
