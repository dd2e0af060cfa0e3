"""The premise sweep at tiny sizes: every cell and arm trained once, the report lists every
run (collapsed ones marked, never averaged), a rerun computes nothing, masked jobs are named."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import kd_regimes  # noqa: E402
import study  # noqa: E402


@pytest.mark.slow
def test_sweep_dry_run_reports_every_cell_and_resumes(tmp_path: Path) -> None:
    work, report = tmp_path / "work", tmp_path / "kd.md"
    args = ["--params", str(ROOT / "params-study.yaml"), "--dry-run", "--workdir", str(work),
            "--report", str(report)]  # fmt: skip
    assert kd_regimes.main(args) == 0
    text = report.read_text()
    for cell in ("unet-nano-st4-f1-t1", "unet-nano-st4-f0.5-t1"):
        assert f"| {cell} | unet-nano | 4 |" in text
    runs = sorted(p.parent.relative_to(work / "regimes").as_posix()
                  for p in (work / "regimes").glob("*/*/*/metrics.json"))  # fmt: skip
    assert runs == [
        f"fold0/unet-nano-st4-f{f}-t1/{arm}-s0" for f in ("0.5", "1") for arm in ("none", "teacher")
    ]
    for run in runs:  # the half-share cell trained on the nested, stratified subset
        cfg = json.loads((work / "regimes" / run / "metrics.json").read_text())["config"]
        assert cfg["train_fraction"] == (0.5 if "f0.5" in run else 1.0)
        assert cfg["epochs"] == 2 and cfg["student"] == "unet-nano"
    for line in text.splitlines():
        if line.startswith("| unet-nano-st4") and "(collapsed)" in line:
            assert "| – | – |" in line  # a collapsed run gives no Δ
    n = len((work / "timings.jsonl").read_text().splitlines())
    assert kd_regimes.main(args) == 0  # rerun: nothing computed
    assert len((work / "timings.jsonl").read_text().splitlines()) == n


def test_matrix_entries_name_masked_jobs() -> None:
    job = study.Job.of(0, "teacher+masked", 1, 1.0, 4.0)
    assert (job.variant, job.kd_pixels, job.name()) == (
        "teacher",
        "correct",
        "teacher-masked-l1-t4-s1",
    )
    assert study.Job.of(0, "plc", 1, 1.0, 1.0).kd_pixels == "all"
