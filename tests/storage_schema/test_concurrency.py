"""Many readers at once, and readers while the store is republished (real processes)."""

from __future__ import annotations

import multiprocessing as mp
import pickle
import time
from pathlib import Path

import pytest
from concurrency_helpers import digest, expected_codes, read_while_republished, republish
from label_helpers import soft_maps, write_all

from storage_schema import StoreError, open_label_store
from storage_schema import _common as common

TIMEOUT_S = 120


def test_four_reader_processes_get_identical_bytes(tmp_path: Path) -> None:
    path = write_all(tmp_path / "l.zarr", soft_maps())
    store = open_label_store(path)
    want = digest(store, seed=0)
    ctx = mp.get_context("spawn")
    with ctx.Pool(4) as pool:
        # two workers open the path themselves, two get the pickled store (own handles)
        jobs = [pool.apply_async(digest, (str(path), s)) for s in (1, 2)]
        jobs += [pool.apply_async(digest, (store, s)) for s in (3, 4)]
        got = [j.get(timeout=TIMEOUT_S) for j in jobs]
    assert got == [want] * 4


def test_pickled_store_refuses_after_republish(tmp_path: Path) -> None:
    path = write_all(tmp_path / "l.zarr", soft_maps())
    store = open_label_store(path)
    blob = pickle.dumps(store)
    assert pickle.loads(blob).read_codes("plc", 0).tobytes() == store.read_codes("plc", 0).tobytes()
    republish(str(path), 1)
    with pytest.raises(StoreError, match=r"was replaced \(republished\) since it was first opened"):
        pickle.loads(blob)
    with pytest.raises(StoreError, match=r"was replaced \(republished\) while it was open; reopen"):
        store.read_codes("plc", 0)
    assert open_label_store(path).provenance == {"generation": 1}


@pytest.mark.slow
@pytest.mark.parametrize("atomic", [True, False], ids=["exchange", "two-renames"])
def test_reader_during_republish_sees_one_whole_store(tmp_path: Path, atomic: bool) -> None:
    """Publisher process republishes 25 times; this process opens and reads meanwhile.

    Every complete read must equal one generation's labels exactly (with the pin disabled,
    the same loop saw 16 mixed reads out of 315); refusals name the republish. ``atomic=False``
    is the fallback where the filesystem cannot exchange two directories (the path is then
    briefly absent, and a reader may be told so).
    """
    generations = 25
    path = write_all(tmp_path / "l.zarr", soft_maps(0))
    expected = expected_codes(generations)
    ctx = mp.get_context("spawn")
    publisher = ctx.Process(target=_publish, args=(str(path), generations, atomic))
    publisher.start()
    try:
        counts = {"complete": 0, "refused": 0, "mixed": 0}
        allowed = ("replaced (republished)",) + (() if atomic else ("does not exist",))
        deadline = time.monotonic() + TIMEOUT_S
        while publisher.is_alive() and time.monotonic() < deadline:
            got = read_while_republished(str(path), expected, time.monotonic() + 0.5, allowed)
            counts = {k: counts[k] + got[k] for k in counts}
        publisher.join(timeout=TIMEOUT_S)
        assert publisher.exitcode == 0
    finally:
        if publisher.is_alive():
            publisher.kill()
        publisher.join(timeout=10)
    assert counts["mixed"] == 0, counts
    assert counts["complete"] >= 5, counts
    assert open_label_store(path).provenance == {"generation": generations}
    print(f"reads while republishing ({'exchange' if atomic else 'two renames'}): {counts}")


def _publish(path: str, generations: int, atomic: bool) -> None:
    """Runs in the publisher process (spawned)."""
    if not atomic:
        common.exchange = lambda a, b: False  # type: ignore[assignment]
    republish(path, generations)
