"""Class-axis argmax of (B, C, H, W) maps: ``torch.argmax(dim=1)`` against equivalent forms.

The cascade, SC, the per-image stats and the bank sampling all take ``argmax`` over the class
axis of (B, C, H, W) probability maps (precompute calls it ~500 times per 50 images at 64²).
This prints how long each equivalent form takes at the shapes precompute and distill use,
and whether it returns exactly ``torch.argmax``'s indices (first index on ties):

- ``torch.argmax(dim=1)``: what the code calls;
- ``max(dim=1).indices``: same indices, first maximal value on ties (documented);
- ``numpy argmax(axis=1)``: on the CPU tensor's numpy view;
- ``p[:, 1] > p[:, 0]``: the two-class shortcut (C = 2 only).

Usage::

    python benchmarks/bench_reductions.py
    python benchmarks/bench_reductions.py --shapes 32x2x224x224 --repeats 10
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable

import torch
from _common import fmt_seconds, markdown_table, print_header, set_threads, time_interleaved

logger = logging.getLogger(__name__)

DEFAULT_SHAPES = ("16x2x64x64", "16x2x224x224", "8x4x224x224")


def parse_shape(text: str) -> tuple[int, int, int, int]:
    """'BxCxHxW' -> (B, C, H, W)."""
    parts = text.lower().split("x")
    if len(parts) != 4 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(f"a shape must look like 16x2x224x224, got {text!r}.")
    b, c, h, w = (int(p) for p in parts)
    return b, c, h, w


def forms(p: torch.Tensor) -> dict[str, Callable[[], torch.Tensor]]:
    """Equivalent class-axis argmax forms of p (B, C, H, W) -> (B, H, W) int64."""
    out = {
        "torch.argmax(dim=1)": lambda: p.argmax(dim=1),
        "max(dim=1).indices": lambda: p.max(dim=1).indices,
    }
    if p.device.type == "cpu":
        out["numpy argmax(axis=1)"] = lambda: torch.from_numpy(p.numpy().argmax(axis=1))
    if p.shape[1] == 2:
        out["p[:, 1] > p[:, 0]"] = lambda: (p[:, 1] > p[:, 0]).long()
    return out


def rows_for(shape: tuple[int, int, int, int], args: argparse.Namespace) -> list[list[str]]:
    """Table rows of every form at one shape (ties included: values quantised to 1/64)."""
    gen = torch.Generator().manual_seed(args.seed)
    logits = (torch.randn(shape, generator=gen) * 64).round() / 64  # (B, C, H, W) with ties
    device = "cuda" if torch.cuda.is_available() and not args.cpu else "cpu"
    p = logits.softmax(dim=1).to(device)
    work = forms(p)
    timings = time_interleaved(work, args.repeats, args.warmup)
    ref = p.argmax(dim=1)
    base = timings["torch.argmax(dim=1)"].median
    label = "×".join(str(s) for s in shape) + f" ({device})"
    return [
        [
            label,
            name,
            fmt_seconds(t.median),
            f"{t.spread:.0%}",
            f"{base / t.median:.1f}×",
            "yes" if torch.equal(work[name]().to(ref.device), ref) else "NO",
        ]
        for name, t in timings.items()
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", type=parse_shape, nargs="+", help="BxCxHxW shapes")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--cpu", action="store_true", help="stay on the CPU even with CUDA")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    set_threads(args.threads)
    shapes = args.shapes or [parse_shape(s) for s in DEFAULT_SHAPES]
    print_header("Class-axis argmax of (B, C, H, W) maps")
    rows = [row for shape in shapes for row in rows_for(shape, args)]
    headers = ["B×C×H×W", "form", "median", "spread", "speed-up vs argmax", "same indices"]
    print(markdown_table(headers, rows))
    print(f"\nmedian of {args.repeats} interleaved runs after {args.warmup} warm-up.")


if __name__ == "__main__":
    main()
