"""Smoke tests of the benchmark scripts at tiny sizes: they run and print sensible tables.

Timings are never asserted; correctness columns and table shapes are.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))

import _common  # noqa: E402
import bench_encoding  # noqa: E402
import bench_reductions  # noqa: E402
import bench_search  # noqa: E402


def table_rows(text: str) -> list[list[str]]:
    """Body rows of every markdown table in ``text`` (header and rule lines dropped)."""
    lines = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line]
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    return [row for row in cells if row and not row[0].startswith(("Q×N×D", "encoding", "B×C"))]


def test_markdown_table_rejects_ragged_rows() -> None:
    with pytest.raises(ValueError, match="table row has 1 cells, the header 2"):
        _common.markdown_table(["a", "b"], [["x"]])
    assert _common.markdown_table(["a", "b"], [["1", "2"]]).splitlines() == [
        "| a | b |",
        "| --- | --- |",
        "| 1 | 2 |",
    ]


def test_timing_median_and_spread() -> None:
    timing = _common.Timing((1.0, 3.0, 2.0))
    assert timing.median == 2.0
    assert timing.spread == pytest.approx(1.0)


def test_time_helpers_reject_bad_counts() -> None:
    with pytest.raises(ValueError, match="repeats must be >= 1"):
        _common.time_it(lambda: None, 0)
    with pytest.raises(ValueError, match="repeats must be >= 1"):
        _common.time_interleaved({"f": lambda: None}, 0)


def test_parse_size_rejects_bad_text() -> None:
    assert bench_search.parse_size("2x3x4") == (2, 3, 4)
    with pytest.raises(Exception, match="a size must look like 2000x20000x16"):
        bench_search.parse_size("2x3")


def test_brute_force_matches_hand_case() -> None:
    q = np.array([[1.0, 0.0], [0.0, -2.0]])
    db = np.array([[0.0, 1.0], [3.0, 0.1], [0.1, -1.0]])
    idx, best = bench_search.brute_force(q, db)
    assert idx.tolist() == [1, 2]
    assert best[0] == pytest.approx(3.0 / np.hypot(3.0, 0.1))


def test_search_runs_and_every_backend_is_exact(capsys: pytest.CaptureFixture[str]) -> None:
    bench_search.main(
        ["--sizes", "40x300x8", "--kdtree-sizes", "40x300x3", "--repeats", "1", "--warmup", "0"]
    )
    rows = [r for r in table_rows(capsys.readouterr().out) if r[0].startswith("40×300")]
    backends = {(r[0], r[1]) for r in rows}
    assert ("40×300×8", "numpy") in backends and ("40×300×3", "kdtree") in backends
    assert all(r[5] == "1.0000" and r[6] == "1.0000" for r in rows)


def test_encoding_store_row_keeps_argmax(capsys: pytest.CaptureFixture[str]) -> None:
    bench_encoding.main(["--size", "32", "--count", "2", "--repeats", "1", "--warmup", "0"])
    rows = {r[0]: r for r in table_rows(capsys.readouterr().out)}
    store = rows["int8 log-p ×8 (store)"]
    assert store[1] == "2" and store[2] == "4.0×"  # C = 2 int8 codes vs 8 B of float32
    assert store[8].startswith("0 / ")  # no argmax flip
    assert float(rows["float32 log-p"][6]) < 1e-12  # τ = 1 KL of the lossless baseline


def test_soft_map_is_normalised_and_mostly_confident() -> None:
    logp = bench_encoding.soft_map(np.random.default_rng(0), 64, 2)
    assert logp.shape == (2, 64, 64)
    np.testing.assert_allclose(np.exp(logp).sum(0), 1.0, atol=1e-12)
    assert (np.exp(logp.min(0)) < 1e-2).mean() > 0.5


def test_reductions_forms_agree(capsys: pytest.CaptureFixture[str]) -> None:
    bench_reductions.main(["--shapes", "2x2x16x16", "2x3x16x16", "--repeats", "1", "--cpu"])
    rows = [r for r in table_rows(capsys.readouterr().out) if "×16×16" in r[0]]
    assert len(rows) == 4 + 3  # the two-class shortcut only for C = 2
    assert all(r[5] == "yes" for r in rows)


@pytest.mark.slow
def test_epoch_runs_end_to_end(capsys: pytest.CaptureFixture[str]) -> None:
    import bench_epoch

    args = "--size 32 --count 12 --batch-size 4 --team-epochs 0 --pc-batch-size 4"
    bench_epoch.main([*args.split(), "--repeats", "1", "--warmup", "0", "--device", "cpu"])
    out = capsys.readouterr().out
    for needle in ("a: plain (no KD)", "b: KD, stored labels", "c: KD, live team"):
        assert needle in out
    assert "limit ÷ total" in out and "search (nearest_neighbours)" in out


def test_checksum_bench_builds_both_layouts(capsys: pytest.CaptureFixture[str]) -> None:
    import re

    import bench_checksums

    args = ["--count", "8", "--size", "16", "--batch", "4", "--repeats", "1", "--warmup", "0"]
    bench_checksums.main(args)
    out = capsys.readouterr().out
    assert "random batches of 4, read_runs (the readers)" in out
    codec = [line for line in out.splitlines() if line.startswith(("| images |", "| codes |"))]
    assert len(codec) == 2
    plain, crc = (
        int(x.replace(",", "")) for x in re.findall(r"([\d,]+) B", out.split("on disk:")[1])
    )
    # 4 bytes per chunk (8 images x 3 arrays) and per shard index (3), plus the codec names
    # in the three zarr.json files
    assert 4 * 8 * 3 + 4 * 3 <= crc - plain < 1000


@pytest.mark.slow
def test_loader_runs_end_to_end(capsys: pytest.CaptureFixture[str]) -> None:
    import bench_loader

    args = "--size 32 --count 20 --batch-size 4 --steps 2 --workers 0 --rss-counts 10,20"
    bench_loader.main([*args.split(), "--rss-size", "32", "--repeats", "1", "--small-size", "0"])
    out = capsys.readouterr().out
    rows = table_rows(out)
    # old reader, raw, block order, decoded, augmented
    assert sum(r[0] == "0" for r in rows) == 5
    last = out.strip().splitlines()[-1]
    assert last.startswith("loader: ") and "× the old reader" in last and "% of the decode" in last
    assert [r[0] for r in rows if r[0] in ("10", "20")] == ["10", "20"]  # RSS per size
    assert any(r[0].startswith("stored labels") and r[3].endswith("×**") for r in rows)


def test_resume_bench_state_table(tmp_path: Path) -> None:
    """The epoch-end state table: one row per network, a real file size, the file removed."""
    import bench_resume

    lines = bench_resume.state_sizes(tmp_path, [("unet-tiny", 32)])
    rows = [r for r in table_rows("\n".join(lines)) if r[0] != "network"]
    assert [r[0] for r in rows] == ["unet-tiny"]
    assert float(rows[0][3]) > 0  # MB of weights + EMA + optimiser
    assert list(tmp_path.iterdir()) == []
