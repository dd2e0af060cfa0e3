"""Exact cosine 1-NN: every available search backend side by side, plus correctness.

For each Q×N×D the same random queries and database go through
``pipeline.search.nearest_neighbours`` with each backend (normalisation included, as SC
calls it). Columns: median time, spread of the repeats, ratio to the fastest backend of that
size, and agreement with a float64 brute force: the fraction of identical indices, and the
fraction whose chosen row is within 1e-6 cosine of the best (agreement up to ties).
The kdtree backend answers only D <= 3, so it has its own row set at D = 3. The smallest
default size is what one SC call searches in bench_epoch's precompute (Q ≈ 240, N ≈ 1,200 to
2,000, D = 16): per-call overhead, not arithmetic, decides it.

Usage::

    python benchmarks/bench_search.py                 # defaults, < 2 min on 2 CPU cores
    python benchmarks/bench_search.py --reference     # DESIGN.md sizes (5000×60000×64)
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable

import numpy as np
import torch
from _common import (
    Timing,
    fmt_seconds,
    markdown_table,
    print_header,
    set_threads,
    time_interleaved,
    time_it,
)

from pipeline.search import nearest_neighbours

logger = logging.getLogger(__name__)

DEFAULT_SIZES = ("250x2000x16", "2000x20000x16")  # one SC call (64² precompute); a big one
DEFAULT_KDTREE_SIZES = ("2000x20000x3",)
REFERENCE_SIZES = ("5000x60000x64",)
REFERENCE_KDTREE_SIZES = ("5000x60000x3",)
TIE_TOLERANCE = 1e-6


def parse_size(text: str) -> tuple[int, int, int]:
    """'QxNxD' -> (Q, N, D)."""
    parts = text.lower().split("x")
    if len(parts) != 3 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(f"a size must look like 2000x20000x16, got {text!r}.")
    q, n, d = (int(p) for p in parts)
    return q, n, d


def available_backends(dim: int) -> list[tuple[str, str]]:
    """(label, backend) pairs usable here; the torch backend also on CUDA when present."""
    from pipeline.search import KDTREE_MAX_DIM, faiss_gpu_available, resolve_backend

    rows = []
    for name in ("faiss-gpu", "faiss-cpu", "torch", "numpy", "kdtree"):
        if name == "kdtree" and dim > KDTREE_MAX_DIM:
            continue
        if name == "faiss-gpu" and not faiss_gpu_available():
            continue
        try:
            resolve_backend(name)
        except ValueError as err:
            logger.info("skipping %s: %s", name, err)
            continue
        rows.append((f"{name} (cpu)" if name == "torch" else name, name))
    if torch.cuda.is_available():
        rows.append(("torch (cuda)", "torch"))
    return rows


def brute_force(q: np.ndarray, db: np.ndarray, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """float64 exact cosine 1-NN of (Q, D) queries in (N, D): (indices (Q,), best cosine (Q,))."""
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)  # (Q, D)
    dbn = db / np.linalg.norm(db, axis=1, keepdims=True)  # (N, D)
    idx, best = [], []
    for i in range(0, len(qn), chunk):
        sim = qn[i : i + chunk] @ dbn.T  # (chunk, N)
        j = sim.argmax(axis=1)
        idx.append(j)
        best.append(sim[np.arange(len(j)), j])
    return np.concatenate(idx), np.concatenate(best)


def agreement(
    got: np.ndarray, q: np.ndarray, db: np.ndarray, ref: tuple[np.ndarray, np.ndarray]
) -> tuple[float, float]:
    """(fraction of identical indices, fraction within TIE_TOLERANCE of the best cosine)."""
    ref_idx, ref_best = ref
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)  # (Q, D)
    dbn = db / np.linalg.norm(db, axis=1, keepdims=True)  # (N, D)
    sim = np.einsum("qd,qd->q", qn, dbn[got])  # (Q,) float64 cosine of the chosen rows
    return float((got == ref_idx).mean()), float((sim >= ref_best - TIE_TOLERANCE).mean())


def _calls_per_run(work: dict[str, Callable[[], object]], target: float = 0.1) -> int:
    """Calls per timed run so that the fastest backend's run lasts about ``target`` seconds."""
    fastest = min(time_it(fn, 1, 1).median for fn in work.values())
    return max(1, int(target / max(fastest, 1e-6)))


def _looped(work: dict[str, Callable[[], object]], inner: int) -> dict[str, Callable[[], None]]:
    def loop(fn: Callable[[], object]) -> None:
        for _ in range(inner):
            fn()

    return {label: (lambda fn=fn: loop(fn)) for label, fn in work.items()}


def _per_call(timing: Timing, inner: int) -> Timing:
    return Timing(tuple(r / inner for r in timing.runs))


def bench_size(size: tuple[int, int, int], args: argparse.Namespace) -> list[list[str]]:
    """Table rows of every backend at one size."""
    q_n, n_n, dim = size
    rng = np.random.default_rng(args.seed)
    q = rng.standard_normal((q_n, dim))  # (Q, D) float64
    db = rng.standard_normal((n_n, dim))  # (N, D) float64
    ref = brute_force(q, db)
    work = {}
    for label, backend in available_backends(dim):
        device = "cuda" if label.endswith("(cuda)") else "cpu"
        qt = torch.from_numpy(q).float().to(device)  # SC feeds float32 features
        dbt = torch.from_numpy(db).float().to(device)
        work[label] = lambda qt=qt, dbt=dbt, backend=backend: nearest_neighbours(qt, dbt, backend)
    inner = _calls_per_run(work)
    timings = time_interleaved(_looped(work, inner), args.repeats, args.warmup)
    results = [
        (label, _per_call(timings[label], inner), agreement(fn().cpu().numpy(), q, db, ref))
        for label, fn in work.items()
    ]
    fastest = min(t.median for _, t, _ in results)
    return [
        [
            f"{q_n}×{n_n}×{dim}",
            label,
            fmt_seconds(t.median),
            f"{t.spread:.0%}",
            f"{t.median / fastest:.2f}×",
            f"{exact:.4f}",
            f"{tie:.4f}",
        ]
        for label, t, (exact, tie) in results
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=parse_size, nargs="+", help="QxNxD sizes (D > 3)")
    parser.add_argument("--kdtree-sizes", type=parse_size, nargs="+", help="QxNxD, D <= 3")
    parser.add_argument("--reference", action="store_true", help="DESIGN.md's reference sizes")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    set_threads(args.threads)
    sizes = args.sizes or [
        parse_size(s) for s in (REFERENCE_SIZES if args.reference else DEFAULT_SIZES)
    ]
    kd_default = REFERENCE_KDTREE_SIZES if args.reference else DEFAULT_KDTREE_SIZES
    kd_sizes = args.kdtree_sizes or [parse_size(s) for s in kd_default]
    print_header("Exact cosine 1-NN search backends (pipeline.search.nearest_neighbours)")
    headers = ["Q×N×D", "backend", "median", "spread", "× fastest", "same index", "same up to ties"]
    rows = [row for size in (*sizes, *kd_sizes) for row in bench_size(size, args)]
    print(markdown_table(headers, rows))
    print(
        f"\nmedian of {args.repeats} runs (backends interleaved; small sizes loop the call so a run "
        f"lasts ≥ 0.1 s) after {args.warmup} warm-up; spread = (max − min) / "
        f"median; agreement vs a float64 brute force (ties: within {TIE_TOLERANCE} cosine)."
    )


if __name__ == "__main__":
    main()
