"""Shared helpers of the benchmark scripts: machine header, timing, markdown tables.

Benchmarks print tables; they never assert on timings. Every timing is the median of
``repeats`` runs after ``warmup`` untimed runs, with ``time.perf_counter`` and a CUDA
synchronise around each run when a GPU is in use.
"""

from __future__ import annotations

import datetime
import logging
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as `python benchmarks/bench_x.py` from anywhere
    sys.path.insert(0, str(ROOT))


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (``platform.processor()`` elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_lines() -> list[str]:
    """Header lines: machine, libraries, command, date."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cuda = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    return [
        f"- machine: {cpu_model()}, {cores} cores usable, load average {load}",
        f"- torch {torch.__version__}, {torch.get_num_threads()} threads; CUDA device: {cuda}",
        f"- python {platform.python_version()}, {platform.system()} {platform.release()}",
        f"- command: `python {shlex.join(sys.argv)}`",
        f"- date: {datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
    ]


def print_header(title: str) -> None:
    """Print the benchmark title and the machine lines."""
    print(f"## {title}\n")
    print("\n".join(machine_lines()))
    print()


def synchronize() -> None:
    """Wait for queued CUDA work (no-op without a GPU)."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()


@dataclass(frozen=True)
class Timing:
    """Seconds of each timed repeat.

    Attributes:
        runs: one wall-clock duration per repeat, in seconds.
    """

    runs: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.runs)

    @property
    def spread(self) -> float:
        """(max - min) / median of the repeats: a noise indicator."""
        return (max(self.runs) - min(self.runs)) / self.median if self.median > 0 else 0.0


def time_it(fn: Callable[[], object], repeats: int, warmup: int = 1) -> Timing:
    """Run ``fn`` ``warmup`` times untimed, then ``repeats`` times timed.

    Args:
        fn: the work; its result is discarded.
        repeats: timed runs (>= 1).
        warmup: untimed runs first (>= 0).
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, got {repeats} and {warmup}.")
    for _ in range(warmup):
        fn()
    synchronize()
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronize()
        runs.append(time.perf_counter() - start)
    return Timing(tuple(runs))


def time_interleaved(
    fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 1
) -> dict[str, Timing]:
    """Like :func:`time_it` for several functions, run round-robin so that load drift on a
    shared machine hits all of them alike."""
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, got {repeats} and {warmup}.")
    runs: dict[str, list[float]] = {name: [] for name in fns}
    for rnd in range(warmup + repeats):
        for name, fn in fns.items():
            synchronize()
            start = time.perf_counter()
            fn()
            synchronize()
            if rnd >= warmup:
                runs[name].append(time.perf_counter() - start)
    return {name: Timing(tuple(r)) for name, r in runs.items()}


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub markdown table; numbers must already be formatted as strings."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(" --- " for _ in headers) + "|"]
    for row in rows:
        if len(row) != len(headers):
            raise ValueError(f"table row has {len(row)} cells, the header {len(headers)}.")
        lines.append("| " + " | ".join(str(c) for c in row) + " |")
    return "\n".join(lines)


def fmt_seconds(seconds: float) -> str:
    """Seconds in a readable unit (s, ms or µs), 3 significant digits."""
    if seconds >= 1.0:
        return f"{seconds:.3g} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.3g} ms"
    return f"{seconds * 1e6:.3g} µs"


def set_threads(threads: int | None) -> None:
    """Pin torch's intra-op threads (None keeps torch's default)."""
    if threads is not None:
        if threads < 1:
            raise ValueError(f"--threads must be >= 1, got {threads}.")
        torch.set_num_threads(threads)
