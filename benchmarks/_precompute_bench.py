"""Precompute part of bench_epoch: total vs the three-forward limit, and a timed breakdown.

:func:`instrument` wraps named functions with wall-clock accumulators so that one precompute
run can be broken down into forwards, cascade, SC, search, stats and writes.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from _common import (
    Timing,
    fmt_seconds,
    markdown_table,
    synchronize,
    time_interleaved,
    time_it,
)
from _epoch_setup import Fixture

from stages.precompute.stage import PrecomputeConfig

logger = logging.getLogger(__name__)


@dataclass
class Probe:
    """Accumulated wall-clock seconds and call count of one wrapped function.

    Attributes:
        seconds: total time inside the function (CUDA-synchronised on exit).
        calls: number of calls.
        rows: total of ``len(args[0])`` and ``len(args[1])`` (search: queries and database rows).
    """

    seconds: float = 0.0
    calls: int = 0
    rows: list[int] = field(default_factory=lambda: [0, 0])


def _wrap(fn: Callable[..., Any], probe: Probe) -> Callable[..., Any]:
    @functools.wraps(fn)
    def timed(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            synchronize()
            probe.seconds += time.perf_counter() - start
            probe.calls += 1
            for i, arg in enumerate(args[:2]):
                if isinstance(arg, torch.Tensor) and arg.ndim == 2:
                    probe.rows[i] += len(arg)

    return timed


@contextlib.contextmanager
def instrument(targets: dict[str, tuple[object, str]]) -> Iterator[dict[str, Probe]]:
    """Wrap ``getattr(owner, attr)`` for each named target; restore them on exit.

    The code under test must look the attribute up at call time (module attributes read by
    name, or function-local imports), which is how precompute reaches all of the targets.
    """
    probes = {name: Probe() for name in targets}
    saved = [(owner, attr, getattr(owner, attr)) for owner, attr in targets.values()]
    try:
        for (name, (owner, attr)), (_, _, original) in zip(targets.items(), saved, strict=True):
            setattr(owner, attr, _wrap(original, probes[name]))
        yield probes
    finally:
        for owner, attr, original in saved:
            setattr(owner, attr, original)


# name -> (owner module path or class, attribute, depth): depth 0 parts do not overlap;
# "bg" parts run on the write queue's thread, overlapped with the main thread's work.
_TARGETS: tuple[tuple[str, str, str, int | str], ...] = (
    ("shard tasks (PrecomputeWorker.run)", "stages.precompute.shard:PrecomputeWorker", "run", 0),
    ("team forwards (3 nets)", "stages.precompute.team:Team", "__call__", 1),
    ("cascade before SC (pipeline.cascade.cascade)", "pipeline.cascade", "cascade", 1),
    ("needs_bank", "pipeline.cascade", "needs_bank", 1),
    ("bank samples", "stages.precompute.shard", "bank_samples", 1),
    ("finish: SC + controls (pipeline.cascade.finish)", "pipeline.cascade", "finish", 1),
    ("SC (similarity_correct)", "pipeline.cascade", "similarity_correct", 2),
    ("search (nearest_neighbours)", "pipeline.corrections", "nearest_neighbours", 3),
    ("per-image stats (batch_stats)", "stages.precompute.shard", "batch_stats", 1),
    ("waiting for the write queue (submit)", "stages.precompute.writeback:WriteQueue", "submit", 1),
    ("encode int8 (write-queue thread)", "stages.precompute.shard", "_encode_batch", "bg"),
    (
        "write shard (zarr, write-queue thread)",
        "storage_schema:LabelStoreWriter",
        "write_shard",
        "bg",
    ),
    ("drain the write queue (close)", "stages.precompute.writeback:WriteQueue", "close", 0),
    ("provenance (hash + load checkpoints)", "stages.precompute.stage", "_provenance", 0),
    ("create label store", "storage_schema", "create_label_store", 0),
    ("publish", "storage_schema:LabelStoreWriter", "publish", 0),
)


def _owner(spec: str) -> object:
    """'pkg.module' or 'pkg.module:Class' -> the module or class."""
    import importlib

    module, _, cls = spec.partition(":")
    owner = importlib.import_module(module)
    return getattr(owner, cls) if cls else owner


def precompute_targets() -> dict[str, tuple[object, str]]:
    """Name -> (owner, attribute) of the precompute parts that are timed."""
    return {name: (_owner(spec), attr) for name, spec, attr, _ in _TARGETS}


def _per_call(name: str, p: Probe) -> str:
    if not p.calls:
        return ""
    text = fmt_seconds(p.seconds / p.calls)
    if name.startswith("search"):
        text += f"; mean Q {p.rows[0] / p.calls:.0f}, N {p.rows[1] / p.calls:.0f}"
    return text


def breakdown_table(probes: dict[str, Probe], whole: float) -> str:
    """Rows indented by nesting depth, plus what no probe covered."""
    rows = []
    for name, _, _, depth in _TARGETS:
        p = probes[name]
        indent = 1 if depth == "bg" else depth
        label = "&nbsp;&nbsp;" * indent + ("↳ " if indent else "") + name
        rows.append(
            [
                label,
                str(p.calls),
                fmt_seconds(p.seconds),
                f"{p.seconds / whole:.1%}",
                _per_call(name, p),
            ]
        )
    covered = sum(probes[name].seconds for name, _, _, depth in _TARGETS if depth == 0)  # not bg
    rest = whole - covered
    rows.append(["rest (open stores, run loop)", "", fmt_seconds(rest), f"{rest / whole:.1%}", ""])
    return markdown_table(["part", "calls", "time", "share of precompute", "per call"], rows)


def three_forward_limit(fixture: Fixture, batch_size: int, repeats: int) -> Timing:
    """The team alone over the train split, in precompute's batch size and order."""
    from pipeline.train import resolve_device
    from stages.data import epoch_batches, load_split, open_store
    from stages.precompute.team import Team

    train = load_split(open_store(fixture.data), "train")
    device = resolve_device("auto")
    nets = fixture.nets
    team = Team.load(nets["teacher"], nets["assistant_fp"], nets["assistant_bd"], device)

    def forwards() -> None:
        for idx in epoch_batches(len(train), batch_size, 0, 0, shuffle=False):
            team(train.batch(idx, device)[0])

    return time_it(forwards, repeats, 1)


@contextlib.contextmanager
def argmax_via_max() -> Iterator[None]:
    """What-if: ``Tensor.argmax(dim=d)`` answered by ``max(dim=d).indices`` (same indices,
    first maximum on ties), restored on exit. Only for the optional what-if row."""
    original = torch.Tensor.argmax

    def argmax(self: torch.Tensor, dim: int | None = None, keepdim: bool = False) -> torch.Tensor:
        return original(self) if dim is None else self.max(dim=dim, keepdim=keepdim).indices

    torch.Tensor.argmax = argmax  # type: ignore[method-assign]
    try:
        yield
    finally:
        torch.Tensor.argmax = original  # type: ignore[method-assign]


def precompute_section(
    fixture: Fixture, cfg: PrecomputeConfig, repeats: int, n_train: int, what_if: bool = False
) -> None:
    """Print precompute total vs the three-forward limit, and one instrumented run's breakdown."""
    from stages.precompute.stage import run as precompute

    if what_if:
        work = {"as is": lambda: precompute(cfg), "what-if": lambda: _what_if(precompute, cfg)}
        both = time_interleaved(work, repeats, 1)
        total, what_if_total = both["as is"], both["what-if"]
    else:
        total = time_it(lambda: precompute(cfg), repeats, 1)
    limit = three_forward_limit(fixture, cfg.batch_size, repeats)
    with instrument(precompute_targets()) as probes:
        whole = time_it(lambda: precompute(cfg), 1, 0).median
    n_batches = -(-n_train // cfg.batch_size)
    n_shards = -(-n_train // cfg.shard_size)
    print(
        f"\n### Precompute: {n_train} train images, batch {cfg.batch_size}, shard "
        f"{cfg.shard_size}, search backend {cfg.search_backend}\n"
    )
    rows = [
        [
            "precompute total (`stages.precompute.stage.run`)",
            fmt_seconds(total.median),
            f"{total.spread:.0%}",
        ],
        [
            "three-forward limit (team alone, same images)",
            fmt_seconds(limit.median),
            f"{limit.spread:.0%}",
        ],
        ["**limit ÷ total** (target ≥ 80 %)", f"**{limit.median / total.median:.0%}**", ""],
    ]
    if what_if:
        rows.append(
            [
                "what-if: precompute with `argmax(dim)` → `max(dim).indices` (not the code)",
                fmt_seconds(what_if_total.median),
                f"{what_if_total.spread:.0%}",
            ]
        )
    print(markdown_table(["", "time (median)", "spread"], rows))
    print(
        f"\nBreakdown of one instrumented run ({fmt_seconds(whole)}); one pass is {n_shards} "
        f"shard task(s) and {n_batches} team batches; more calls mean shards recomputed in pass 2 "
        "(cross-image bank); write-queue rows overlap the main thread:\n"
    )
    print(breakdown_table(probes, whole))


def _what_if(precompute: Callable[[PrecomputeConfig], object], cfg: PrecomputeConfig) -> None:
    with argmax_via_max():
        precompute(cfg)
