"""The student data path: loader throughput, peak RSS of distill vs dataset size, epoch cost.

One run builds, in a temporary folder, synthetic dataset stores (``plc prepare --dataset
synthetic``) and label stores holding one all-correct variant (``plc``: smooth soft labels
made from the masks, encoded like precompute's), then prints three tables side by side:

1. the loader alone (``stages.distill.loader``: DataLoader over the stores, one batch per item,
   sorted reads), images + masks + one variant at ``--size``², for each ``--workers``
   count: raw batches, then batches on the training device (decoded), then decoded and
   augmented (the augmentation runs on the training device: here the CPU);
2. peak RSS of ``distill`` (run in a subprocess, ``ru_maxrss`` of the process and of its
   loader workers) for each ``--rss-counts`` dataset size, same steps;
3. one epoch of the same student with stored labels (``variant plc``, KD) vs plain
   (``variant none``), interleaved over ``--repeats`` rounds, through ``pipeline.train.fit``.

Usage::

    python benchmarks/bench_loader.py                      # 224², defaults below
    python benchmarks/bench_loader.py --size 64 --count 64 --rss-counts 40,80  # quick
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _common import ROOT, fmt_seconds, markdown_table, print_header, set_threads, time_interleaved

logger = logging.getLogger(__name__)

VARIANT = "plc"
BLOCK, WINDOW = 16, 4  # --shuffle block's defaults (plc distill)


def build_stores(root: Path, size: int, count: int) -> tuple[Path, Path]:
    """A synthetic dataset store of ``count`` images and its one-variant label store."""
    from scipy.ndimage import uniform_filter

    from stages.prepare.stage import PrepareConfig
    from stages.prepare.stage import run as prepare
    from storage_schema import create_label_store, open_dataset_store

    if (root / f"labels{size}_{count}.zarr").exists():  # built earlier in this run
        return root / f"data{size}_{count}.zarr", root / f"labels{size}_{count}.zarr"

    data = prepare(
        PrepareConfig(
            dataset="synthetic",
            out=root / f"data{size}_{count}.zarr",
            size=size,
            count=count,
            progress=False,
        )
    )
    store = open_dataset_store(data)
    train = store.indices("train")
    ids = store.ids()
    writer = create_label_store(
        root / f"labels{size}_{count}.zarr",
        ids=[ids[i] for i in train],
        variants=(VARIANT,),
        classes=store.classes,
        height=size,
        width=size,
        dataset_name=store.name,
        manifest_sha256=store.manifest_sha256,
        provenance={"dataset_path": str(data)},
    )
    for a, b in writer.shard_bounds():
        masks = np.asarray(store.masks.oindex[train[a:b]]).astype(np.float32)  # (n, H, W)
        near = uniform_filter(masks, size=(1, 7, 7))  # local foreground share
        conf = 0.55 + 0.44 * np.abs(2 * near - 1)  # > 1/2: argmax == mask everywhere
        p_fg = np.where(masks > 0, conf, 1 - conf)
        logp = np.log(np.stack([1 - p_fg, p_fg], axis=1))  # (n, 2, H, W)
        writer.write_shard(a, {VARIANT: logp.astype(np.float32)})
    return data, writer.publish()


def old_read_rows(self, positions: np.ndarray):
    """The reader before issue 19, kept for the comparison (bound to a StoreBatches in place
    of its ``_read_rows``): the batch's sorted unique positions read with one zarr read per
    array (a slice when contiguous, else zarr's integer-array read), no direct reads, then
    put back in the batch's order."""
    from stages.distill.loader import RawBatch

    uniq, inverse = np.unique(positions, return_inverse=True)

    def selection(index: np.ndarray):
        if len(index) and index[-1] - index[0] + 1 == len(index):
            return slice(int(index[0]), int(index[-1]) + 1)
        return index

    data, labels = self._open()
    for store in (data, labels):  # zarr only: no DirectArray for any array
        store._direct.update(dict.fromkeys(("images", "masks", f"soft/{VARIANT}")))
    rows = selection(self.source.indices[uniq])
    codes = torch.from_numpy(labels.read_codes(VARIANT, selection(uniq)))
    images, masks = (
        torch.from_numpy(data.read_images(rows)),
        torch.from_numpy(data.read_masks(rows)),
    )
    return RawBatch(torch.from_numpy(positions), images[inverse], masks[inverse], codes[inverse])


def stream(
    data: Path,
    labels: Path | None,
    batch: int,
    workers: int,
    augment: bool,
    steps: int = 0,
    seed: int = 0,
    order: str = "full",
    old: bool = False,
    device: str = "cpu",
):
    """The StudentStream distill builds over ``data`` (+ ``labels``), on the CPU.

    ``steps`` batches per epoch drawn by ``pipeline.sampling.step_batches``; 0: one pass.
    ``order`` "block": ``block_batches`` (blocks of 16, windows of 4), read window by window.
    ``old``: the reader before issue 19 (:func:`old_read_rows`).
    """
    from pipeline.augment import AugmentConfig
    from pipeline.sampling import block_batches, step_batches
    from stages.data import epoch_batches
    from stages.distill.loader import StoreSource, StudentStream, make_loader
    from storage_schema import open_dataset_store

    store = open_dataset_store(data)
    idx = store.indices("train")
    source = StoreSource(
        data=str(data),
        indices=idx,
        labels=None if labels is None else str(labels),
        variant=None if labels is None else VARIANT,
        manifest_sha256=store.manifest_sha256,
    )

    def plan(epoch: int) -> list[np.ndarray]:
        if order == "block":
            n_steps = steps or len(idx) // batch
            return block_batches(len(idx), batch, n_steps, epoch, seed, BLOCK, WINDOW)
        if steps:
            return step_batches(len(idx), batch, steps, epoch, seed)
        return [b.numpy() for b in epoch_batches(len(idx), batch, epoch, seed, drop_last=True)]

    group = max(1, BLOCK * WINDOW // batch) if order == "block" else 1
    dev = torch.device(device)
    loader = make_loader(
        source, plan, num_workers=workers, pin_memory=dev.type == "cuda", group=group
    )
    if old:
        loader.dataset._read_rows = old_read_rows.__get__(loader.dataset)
    return StudentStream(loader, dev, seed, AugmentConfig() if augment else None)


class DeviceHeld:
    """The plain baseline without a loader: the train images and masks held on the device,
    batches sliced there in ``plan``'s order and augmented as the stream augments them."""

    def __init__(self, data: Path, batch: int, steps: int, device: str, seed: int = 0) -> None:
        from pipeline.augment import AugmentConfig
        from pipeline.sampling import step_batches
        from storage_schema import open_dataset_store

        store = open_dataset_store(data)
        idx = store.indices("train")
        dev = torch.device(device)
        self.images = torch.from_numpy(store.read_images(idx)).to(dev).permute(0, 3, 1, 2)
        self.masks = torch.from_numpy(store.read_masks(idx)).to(dev).long()
        self.plan = lambda epoch: step_batches(len(idx), batch, steps, epoch, seed)
        self.steps, self.seed, self.augment = steps, seed, AugmentConfig()

    def __len__(self) -> int:
        return self.steps

    def __call__(self, epoch: int):
        from stages.distill.loader import augment_logp, epoch_seed

        generator = torch.Generator().manual_seed(epoch_seed(self.seed, epoch))
        for b in self.plan(epoch):
            t = torch.from_numpy(b).to(self.images.device)
            images = self.images[t].float().div_(255.0)
            images, masks, _ = augment_logp(images, self.masks[t], None, self.augment, generator)
            yield images, masks


def chunk_table(root: Path, labels: Path, sizes: tuple[int, ...], repeats: int) -> str:
    """ms per image of one variant's codes, for 1, 4, 8, 16 images per inner chunk: a run of
    32 images through zarr and through the direct reader, and one image read alone (what a
    fully shuffled order pays per image), the same codes re-written in each layout."""
    import cv2
    import zarr

    from storage_schema.direct import DirectArray
    from storage_schema.integrity import codecs

    codes = zarr.open_array(str(labels / "soft" / VARIANT), mode="r")[:]  # (N, C, S, S)
    n = len(codes)
    run = min(32, n)  # images per run read
    rows = []
    rng = np.random.default_rng(0)
    for size in sizes:
        held = codes[:n]
        if size != held.shape[-1]:
            held = np.stack([np.stack([cv2.resize(c, (size, size), interpolation=cv2.INTER_NEAREST)
                                       for c in img]) for img in held])  # fmt: skip
        for k in (1, 4, 8, 16):
            path = root / f"chunks{size}_{k}.zarr"
            arr = zarr.create_array(str(path), shape=held.shape, dtype="int8",
                                    chunks=(k, *held.shape[1:]), shards=(64, *held.shape[1:]),
                                    compressors=codecs(), fill_value=0, overwrite=True)  # fmt: skip
            arr[:] = held
            reader = DirectArray.of(arr, path)
            lone = rng.integers(0, n, 32)
            work = {
                "zarr": lambda a=arr: a[n - run : n],
                "direct": lambda r=reader: r.read(n - run, n),
                "alone": lambda r=reader, ix=lone: [r.read(int(i), int(i) + 1) for i in ix],
            }
            t = time_interleaved(work, repeats, warmup=1)
            per = {"zarr": run, "direct": run, "alone": 32}
            rows.append([f"{size}²", str(k), *(f"{1e3 * t[m].median / per[m]:.3f}" for m in work)])
    return markdown_table(
        [
            "size",
            "images per chunk",
            "zarr, run of 32",
            "direct, run of 32",
            "direct, one image alone",
        ],
        rows,
    )


def decode_limit(data: Path, labels: Path) -> float:
    """Seconds per train image to crc32c-check and zstd-decompress its image, mask and codes
    chunks in a tight loop (the bytes already in memory): the work a reader cannot avoid."""
    import google_crc32c
    import numcodecs.zstd
    import zarr

    from storage_schema import open_dataset_store

    train = open_dataset_store(data).indices("train")
    blobs = []
    for root, key, rows in ((data, "images", train), (data, "masks", train),
                            (labels, f"soft/{VARIANT}", np.arange(len(train)))):  # fmt: skip
        arr = zarr.open_array(str(root / key), mode="r")
        per_shard = int(arr.shards[0])
        for shard in sorted({int(r) // per_shard for r in rows}):
            raw = root / key / arr.metadata.encode_chunk_key((shard, *[0] * (arr.ndim - 1)))
            body = raw.read_bytes()
            n_chunks = per_shard // int(arr.chunks[0])
            index = np.frombuffer(body[-(16 * n_chunks + 4) : -4], dtype="<u8").reshape(-1, 2)
            blobs += [body[int(o) : int(o + n)] for o, n in index if o != 2**64 - 1]
    start = time.perf_counter()
    for blob in blobs:
        google_crc32c.value(blob[:-4])
        numcodecs.zstd.decompress(blob[:-4])
    return (time.perf_counter() - start) / len(train)


def loader_table(args: argparse.Namespace, data: Path, labels: Path) -> tuple[str, str]:
    """img/s of raw batches (old reader, new reader in both orders), device batches and
    augmented device batches, per worker count; the decode limit and the summary line."""
    n = 0
    work = {}
    for workers in args.workers:
        old = stream(data, labels, args.batch_size, workers, augment=False, old=True)
        plain = stream(data, labels, args.batch_size, workers, augment=False, device=args.device)
        block = stream(data, labels, args.batch_size, workers, augment=False, order="block")
        aug = stream(data, labels, args.batch_size, workers, augment=True, device=args.device)
        n = len(plain) * args.batch_size
        work[(workers, "raw batches, old reader (before issue 19)")] = lambda s=old: list(s.loader)
        work[(workers, "raw batches")] = lambda s=plain: list(s.loader)
        work[(workers, "raw batches, --shuffle block")] = lambda s=block: list(s.loader)
        work[(workers, "on the device, decoded")] = lambda s=plain: list(s(0))
        work[(workers, "decoded + augmented on the device")] = lambda s=aug: list(s(0))
    timings = time_interleaved(work, args.repeats, warmup=1)
    rows = [
        [str(w), what, fmt_seconds(t.median), f"**{n / t.median:,.0f}**", f"{t.spread:.0%}"]
        for (w, what), t in timings.items()
    ]
    table = markdown_table(
        ["workers", "what is delivered", "epoch (median)", "img/s", "spread"], rows
    )
    limit = decode_limit(data, labels)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    w = max(args.workers)
    best = max(
        ("raw batches", "raw batches, --shuffle block"), key=lambda k: n / timings[(w, k)].median
    )
    rate = n / timings[(w, best)].median
    old_rate = n / timings[(w, "raw batches, old reader (before issue 19)")].median
    ceiling = min(max(w, 1), cores or 1) / limit  # the decode limit on the cores the readers use
    return (
        f"{table}\n\nDecode limit: {1e6 * limit:.0f} µs per train image (image + mask + codes "
        f"chunks, crc32c + zstd in a tight loop) = {1 / limit:,.0f} img/s per core, "
        f"{ceiling:,.0f} img/s on {min(max(w, 1), cores or 1)} core(s).",
        f"loader: {rate:,.0f} img/s = {rate / old_rate:.1f}× the old reader, "
        f"{100 * rate / ceiling:.0f} % of the decode limit ({w} workers, {best}, "
        f"{args.size}²)",
    )


RSS_CHILD = """
import json, resource, sys
from pathlib import Path
sys.path.insert(0, {root!r})
from stages.distill.stage import DistillConfig, run
run(DistillConfig(labels=Path({labels!r}), data=Path({data!r}), out=Path({out!r}),
    variant={variant!r}, student={student!r}, epochs=1, batch_size={batch},
    steps_per_epoch={steps}, progress=False, device="cpu", num_workers={workers},
    allow_weak_teacher=True))  # a few steps: memory is measured, not the student
self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
child_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({{"self_kb": self_kb, "workers_kb": child_kb}}))
"""


def distill_rss(args: argparse.Namespace, data: Path, labels: Path, out: Path) -> dict:
    """Peak RSS (KiB) of one ``distill`` run in a fresh process, and its seconds."""
    code = RSS_CHILD.format(
        root=str(ROOT),
        labels=str(labels),
        data=str(data),
        out=str(out),
        variant=VARIANT,
        student=args.student,
        batch=args.batch_size,
        steps=args.steps,
        workers=args.rss_workers,
    )
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"distill subprocess failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return {**result, "seconds": time.perf_counter() - start}


def rss_table(args: argparse.Namespace, root: Path) -> str:
    rows = []
    first = None
    for count in args.rss_counts:
        data, labels = build_stores(root, args.rss_size, count)
        r = distill_rss(args, data, labels, root / f"run{count}")
        first = first or r["self_kb"]
        rows.append(
            [
                str(count),
                f"{r['self_kb'] / 1024:,.0f} MiB",
                f"{r['self_kb'] / first:.2f}×",
                f"{r['workers_kb'] / 1024:,.0f} MiB",
                f"{r['seconds']:.0f} s",
            ]
        )
    return markdown_table(
        ["images in the store", "peak RSS, distill", "× smallest", "peak RSS, a worker", "wall"],
        rows,
    )


def epoch_table(args: argparse.Namespace, data: Path, labels: Path) -> str:
    """One student epoch: stored-label KD vs plain, interleaved."""
    from pipeline.models.registry import build_model
    from pipeline.train import TrainConfig, fit
    from stages.distill.config import DistillConfig
    from stages.distill.stage import _step

    block = f"stored labels, --shuffle block (variant {VARIANT}, KD)"
    modes = {
        "plain (variant none)": (None, "none"),
        f"stored labels (variant {VARIANT}, KD)": (labels, VARIANT),
        block: (labels, VARIANT),
        "plain, images held on the device (no loader)": (None, "none"),
    }
    streams = {
        m: stream(
            data,
            lab,
            args.batch_size,
            args.epoch_workers,
            True,
            args.steps,
            device=args.device,
            order="block" if m == block else "full",
        )
        for m, (lab, _) in list(modes.items())[:3]
    }
    streams["plain, images held on the device (no loader)"] = DeviceHeld(
        data, args.batch_size, args.steps, args.device
    )
    steps = {
        m: _step(DistillConfig(labels=labels, out=Path("x"), variant=v))
        for m, (_, v) in modes.items()
    }
    seconds: dict[str, list[float]] = {m: [] for m in modes}
    for rnd in range(1 + args.repeats):
        for m in modes:
            torch.manual_seed(0)
            net = build_model(args.student, 2, args.size)
            cfg = TrainConfig(epochs=1, seed=rnd, progress=False, device=args.device)
            start = time.perf_counter()
            fit(net, streams[m], steps[m], cfg, steps_per_epoch=len(streams[m]))
            if rnd:
                seconds[m].append(time.perf_counter() - start)
    plain = statistics.median(seconds[next(iter(modes))])
    rows = []
    for m, runs in seconds.items():
        med = statistics.median(runs)
        rows.append(
            [m, fmt_seconds(med), f"{(max(runs) - min(runs)) / med:.0%}", f"**{med / plain:.3f}×**"]
        )
    return markdown_table(["epoch of the same student", "median", "spread", "× plain"], rows)


def int_list(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=224, help="image side of tables 1 and 3")
    parser.add_argument("--count", type=int, default=320, help="images (80 %% train), table 1/3")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int_list, default=[0, 1, 2], help="e.g. 0,1,2")
    parser.add_argument("--student", default="unet-tiny")
    parser.add_argument("--rss-counts", type=int_list, default=[200, 2000])
    parser.add_argument("--rss-size", type=int, default=224)
    parser.add_argument("--rss-workers", type=int, default=2)
    parser.add_argument("--epoch-workers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=8, help="steps per epoch, tables 2 and 3")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--skip", default="", help="tables to skip: loader,chunks,rss,epoch")
    parser.add_argument("--workdir", type=Path, default=None, help="keep artifacts here")
    parser.add_argument("--small-size", type=int, default=64, help="table 1b's size; 0: none")
    parser.add_argument("--device", default="cpu", help="training device: cpu or cuda")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a few minutes: 160 images, 2 workers, 2 repeats, no RSS table",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.count, args.workers, args.repeats = 160, [2], 2
        args.skip = ",".join(filter(None, [args.skip, "rss"]))
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    set_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    skip = set(args.skip.split(","))
    with tempfile.TemporaryDirectory(prefix="bench_loader_") as tmp:
        root = args.workdir or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        data, labels = build_stores(root, args.size, args.count)
        print_header("Student data path: loader, distill peak RSS, stored-label epoch")
        print(
            f"{args.count} synthetic images at {args.size}² ({len(stream(data, None, args.batch_size, 0, False)) * args.batch_size} "
            f"train images per epoch), batch {args.batch_size}, variant {VARIANT}, "
            f"student {args.student}\n"
        )
        summary = None
        if "loader" not in skip:
            print("### 1. Loader alone (images + masks + one variant)\n")
            text, summary = loader_table(args, data, labels)
            print(text + "\n")
            if args.small_size:
                small = argparse.Namespace(**{**vars(args), "size": args.small_size})
                sdata, slabels = build_stores(root, args.small_size, args.count)
                print(f"### 1b. The same at {args.small_size}² (the study's size)\n")
                stext, ssummary = loader_table(small, sdata, slabels)
                print(f"{stext}\n\n{ssummary}\n")
        if "chunks" not in skip:
            print("### 1c. Images per inner chunk: ms per image of one variant's codes\n")
            sizes = (args.size, args.small_size) if args.small_size else (args.size,)
            print(chunk_table(root, labels, sizes, args.repeats) + "\n")
        if "rss" not in skip:
            print(
                f"### 2. Peak RSS of distill (1 epoch of {args.steps} steps, {args.student}, "
                f"{args.rss_size}², {args.rss_workers} workers, then the test split)\n"
            )
            print(rss_table(args, root) + "\n")
        if "epoch" not in skip:
            print(
                f"### 3. Stored-label epoch vs plain epoch ({args.steps} steps, "
                f"{args.epoch_workers} workers)\n"
            )
            print(epoch_table(args, data, labels) + "\n")
        if summary is not None:
            print(summary)  # the last line: the figure the target is stated in


if __name__ == "__main__":
    main()
