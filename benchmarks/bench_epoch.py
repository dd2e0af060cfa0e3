"""What the label store buys: student epochs without KD, with stored labels, with the live team.

One run builds, in a temporary folder, a synthetic dataset store, a briefly trained team of
three networks and a label store (``stages.precompute.stage.run``), then times, interleaved over
``--repeats`` rounds, one epoch of the same student on the same data and batch size:

- (a) plain supervised (``variant='none'``: L_Seg only);
- (b) KD from stored labels (the store's DataLoader: read, decode + joint augmentation on
  the device, KD loss);
- (c) KD with the live team (``LiveLabels``: 3 forwards + cascade + SC at every step);

through the functions ``plc distill`` uses (``_stream``, ``_step``, ``pipeline.train.fit``).
A step-level ceiling (3 team forwards + one student step vs one student step, on a batch
already in memory) is printed beside c/b. Then precompute itself: total time vs the
three-forward limit (the team alone over the same images and batch size) and a breakdown
of one precompute run (forwards, cascade + SC, SC, search, bank, writes).

Usage::

    python benchmarks/bench_epoch.py                       # unet-tiny at 64², transunet-tiny team
    python benchmarks/bench_epoch.py --student unet --size 224 --team-model transunet
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from pathlib import Path

import torch
from _common import (
    fmt_seconds,
    markdown_table,
    print_header,
    set_threads,
    synchronize,
    time_interleaved,
)
from _epoch_setup import Fixture, build_fixture, precompute_config
from _precompute_bench import precompute_section

from stages.distill.stage import DistillConfig

logger = logging.getLogger(__name__)

MODES = ("a: plain (no KD)", "b: KD, stored labels", "c: KD, live team")


def distill_config(args: argparse.Namespace, labels: Path, variant: str) -> DistillConfig:
    """The distill config of one mode (``variant='none'`` for plain supervised)."""
    return DistillConfig(
        labels=labels,
        out=labels.parent / "run",
        variant=variant,
        student=args.student,
        batch_size=args.batch_size,
        steps_per_epoch=0,  # one pass over the train split per epoch
        num_workers=args.num_workers,
        augment=not args.no_augment,
        progress=False,
        device=args.device,
    )


def build_modes(args: argparse.Namespace, fixture: Fixture, labels: Path) -> dict[str, tuple]:
    """mode -> (DistillConfig, its StudentStream, the train split in memory)."""
    from pipeline.train import resolve_device
    from stages.data import load_split, open_store
    from stages.distill.live import LiveLabels
    from stages.distill.stage import _stream, _val_split
    from storage_schema import open_label_store

    store = open_store(fixture.data)
    train = load_split(store, "train")
    label_store = open_label_store(labels, manifest_sha256=store.manifest_sha256)
    device = resolve_device(args.device)
    kd = distill_config(args, labels, args.variant)
    plain = distill_config(args, labels, "none")
    live = LiveLabels(label_store, args.variant, train, device)
    keep, _ = _val_split(kd, store)  # every train image (the configs hold out none)
    return {
        MODES[0]: (plain, _stream(plain, store, label_store, keep, device), train),
        MODES[1]: (kd, _stream(kd, store, label_store, keep, device), train),
        MODES[2]: (kd, _stream(kd, store, label_store, keep, device, live), train),
    }


def time_epochs(args: argparse.Namespace, modes: dict[str, tuple]) -> dict[str, list[float]]:
    """Seconds of each timed epoch per mode; modes interleaved round by round, one warm-up."""
    from pipeline.models.registry import build_model
    from pipeline.train import TrainConfig, fit, resolve_device
    from stages.distill.stage import _step

    device = resolve_device(args.device)
    models = {m: build_model(args.student, 2, args.size).to(device) for m in modes}
    seconds: dict[str, list[float]] = {m: [] for m in modes}
    for rnd in range(args.warmup + args.repeats):
        for mode, (cfg, stream, _) in modes.items():
            train_cfg = TrainConfig(epochs=1, seed=rnd, progress=False, device=args.device)
            synchronize()
            start = time.perf_counter()
            fit(models[mode], stream, _step(cfg), train_cfg, steps_per_epoch=len(stream))
            synchronize()
            if rnd >= args.warmup:
                seconds[mode].append(time.perf_counter() - start)
    return seconds


def time_batches_alone(args: argparse.Namespace, modes: dict[str, tuple]) -> dict[str, float]:
    """Median seconds to iterate one epoch of batches (labels + augmentation), no training."""
    work = {}
    for mode, (_, stream, _) in modes.items():
        work[mode] = lambda s=stream: list(s(0))
    timings = time_interleaved(work, args.repeats, args.warmup)
    return {mode: t.median for mode, t in timings.items()}


def step_times(args: argparse.Namespace, modes: dict[str, tuple]) -> dict[str, float]:
    """Median seconds of one step's parts on one batch already in memory (no data loading)."""
    from pipeline.models.registry import build_model
    from pipeline.train import resolve_device
    from stages.distill.loader import decode_codes
    from stages.distill.stage import _step

    device = resolve_device(args.device)
    cfg, stored, train = modes[MODES[1]]
    live = modes[MODES[2]][1].live
    batch = next(iter(stored(0)))  # (images, masks, logp)
    idx = torch.arange(cfg.batch_size)
    reader = stored.loader.dataset  # the workers' reader, here in this process
    images, masks = train.batch(idx, device)
    net = build_model(args.student, 2, args.size).to(device).train()
    optim = torch.optim.AdamW(net.parameters(), lr=1e-3)
    step = _step(cfg)

    def student(parts: tuple[torch.Tensor, ...]) -> None:
        optim.zero_grad(set_to_none=True)
        step(net, parts)["loss"].backward()
        optim.step()

    work = {
        "student step, no KD": lambda: student(batch[:2]),
        "student step, KD (stored-label step)": lambda: student(batch),
        "stored labels for the batch (read + decode)": lambda: decode_codes(
            reader[idx.numpy()].codes.to(device)
        ),
        "3 team forwards": lambda: live.team(images),
        "live labels (3 forwards + cascade + SC, all variants)": lambda: live(idx, images, masks),
    }
    timings = time_interleaved(work, args.repeats * 3, 2)
    return {name: t.median for name, t in timings.items()}


def step_table(times: dict[str, float]) -> tuple[str, float, float]:
    """The step table, the forwards ceiling and the full live-step ratio."""
    kd = times["student step, KD (stored-label step)"]
    ceiling = (times["3 team forwards"] + kd) / kd
    full = (times["live labels (3 forwards + cascade + SC, all variants)"] + kd) / kd
    rows = [[name, fmt_seconds(t), f"{t / kd:.2f}×"] for name, t in times.items()]
    rows.append(
        ["live step, forwards only (3 forwards + KD step): ceiling", "", f"**{ceiling:.2f}×**"]
    )
    rows.append(["live step as distill --live runs it (live labels + KD step)", "", f"{full:.2f}×"])
    return markdown_table(["one batch in memory", "median", "× KD step"], rows), ceiling, full


def epoch_table(seconds: dict[str, list[float]], alone: dict[str, float]) -> str:
    """Epoch medians, spreads, data-only times and ratios to plain."""
    plain = statistics.median(seconds[MODES[0]])
    rows = []
    for mode, runs in seconds.items():
        med = statistics.median(runs)
        spread = (max(runs) - min(runs)) / med
        rows.append(
            [
                mode,
                fmt_seconds(med),
                f"{spread:.0%}",
                fmt_seconds(alone[mode]),
                f"{med / plain:.2f}×",
            ]
        )
    return markdown_table(["mode", "epoch (median)", "spread", "batches alone", "× plain"], rows)


def setup_line(args: argparse.Namespace, labels: Path, n_train: int) -> str:
    """What the team got wrong: the SC workload of this label store."""
    from storage_schema import open_label_store

    store = open_label_store(labels)
    pixels = args.size * args.size
    parts = []
    for v in ("teacher", "teacher_fa_ba", "plc"):
        frac = store.stat(f"false_pixels_{v}").mean() / pixels
        parts.append(f"{v} {frac:.1%}")
    banked = (store.stat("sc_bank_plc") + store.stat("sc_bank_teacher_sc") > 0).sum()
    steps = n_train // args.batch_size
    return (
        f"student {args.student} at {args.size}², batch {args.batch_size}, {n_train} train images "
        f"({steps} steps/epoch), augmentation {'off' if args.no_augment else 'on'}; team "
        f"{args.team_model} × 3 trained {args.team_epochs} epochs; false pixels per image: "
        + ", ".join(parts)
        + f"; images whose SC used the cross-image bank: {banked} of {n_train}"
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--student", default="unet-tiny", help="registry name (e.g. unet)")
    parser.add_argument("--size", type=int, default=64, help="image side (multiple of 16)")
    parser.add_argument("--count", type=int, default=64, help="synthetic images (80 %% train)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--team-model", default="transunet-tiny", help="e.g. transunet")
    parser.add_argument("--team-epochs", type=int, default=3, help="L_Seg epochs per team net")
    parser.add_argument("--variant", default="plc", help="label variant distilled")
    parser.add_argument("--no-augment", action="store_true")
    parser.add_argument("--pc-batch-size", type=int, default=16, help="precompute batch size")
    parser.add_argument("--search-backend", default="auto")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--num-workers", type=int, default=2, help="distill's DataLoader workers")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument(
        "--what-if-argmax",
        action="store_true",
        help="also time precompute with Tensor.argmax(dim) answered by max(dim).indices",
    )
    parser.add_argument("--workdir", type=Path, default=None, help="keep artifacts here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    from stages.precompute.stage import run as precompute

    args = parse_args(argv)
    set_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="bench_epoch_") as tmp:
        root = args.workdir or Path(tmp)
        fixture = build_fixture(
            root, args.size, args.count, args.team_model, args.team_epochs, args.batch_size
        )
        labels = precompute(
            precompute_config(
                fixture, root / "labels.zarr", args.pc_batch_size, args.search_backend
            )
        )
        modes = build_modes(args, fixture, labels)
        print_header("Student epoch: plain vs stored-label KD vs live-team KD")
        print(setup_line(args, labels, len(modes[MODES[0]][2])) + "\n")
        seconds = time_epochs(args, modes)
        alone = time_batches_alone(args, modes)
        print(epoch_table(seconds, alone))
        a, b, c = (statistics.median(seconds[m]) for m in MODES)
        table, ceiling, full = step_table(step_times(args, modes))
        print(
            f"\n- b/a (stored ÷ plain epoch, target ≤ 1.05): **{b / a:.2f}**\n"
            f"- c/b (live ÷ stored epoch): **{c / b:.2f}**; ÷ forwards ceiling {ceiling:.2f} = "
            f"**{c / b / ceiling:.0%}** (target ≥ 95 %); ÷ full live step {full:.2f} = "
            f"{c / b / full:.0%}\n"
        )
        print(table)
        pc_cfg = precompute_config(
            fixture, root / "labels_t.zarr", args.pc_batch_size, args.search_backend
        )
        precompute_section(
            fixture, pc_cfg, args.repeats, len(modes[MODES[0]][2]), args.what_if_argmax
        )
        print(
            f"\nmedian of {args.repeats} after {args.warmup} warm-up; epochs of the three modes "
            "interleaved round by round; spread = (max − min) / median."
        )


if __name__ == "__main__":
    main()
