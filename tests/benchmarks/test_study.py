"""The study machinery at tiny sizes: the GPU script's dry run (2 folds, 2 concurrent students,
the same code path as the study), a resumed rerun that computes nothing, and the pilot."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import study  # noqa: E402


def _timings(work: Path) -> list[dict]:
    return [json.loads(line) for line in (work / "timings.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    out, work = tmp_path_factory.mktemp("out"), tmp_path_factory.mktemp("work")
    env = os.environ | {"OUT": str(out), "STUDY_DIR": str(work)}
    result = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_study.sh"), "--dry-run"],
        env=env, capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out, work, result.stdout


@pytest.mark.slow
def test_gpu_study_dry_run_writes_the_report_into_out(dry_run: tuple[Path, Path, str]) -> None:
    out, work, stdout = dry_run
    report = (out / "gpu-study-dry-run.md").read_text()
    assert "gpu_study: team students in" in stdout
    for section in ("## Teacher vs student alone", "## Results", "## Paired ΔDice",
                    "## Label quality on the train split (2 label store(s))",
                    "## Machine and wall time"):  # fmt: skip
        assert section in report
    assert "folds 0, 1 × seeds 0" in report
    assert (out / "gpu-study-dry-run_forest.png").exists()
    assert (out / "gpu-study-dry-run-timings.jsonl").exists()
    # the matrix plus the fold-0 ablation: 3 + 1 runs on fold 0, 3 on fold 1, each once
    runs = sorted(p.parent.relative_to(work / "runs").as_posix()
                  for p in (work / "runs").glob("*/*/metrics.json"))  # fmt: skip
    assert runs == [
        "fold0/gt_smooth-l1-t1-s0", "fold0/none-l1-t1-s0", "fold0/plc-l1-t1-s0",
        "fold0/teacher-l1-t1-s0", "fold1/none-l1-t1-s0", "fold1/plc-l1-t1-s0",
        "fold1/teacher-l1-t1-s0",
    ]  # fmt: skip
    distills = [t for t in _timings(work) if t["stage"] == "distill"]
    assert len(distills) == 7 and all(t.get("concurrent") == 2 for t in distills)
    for fold in (0, 1):
        assert (work / "models" / "polyp" / f"fold{fold}" / "teacher.metrics.json").exists()
        assert (work / "labels" / f"polyp-fold{fold}.zarr").is_dir()


@pytest.mark.slow
def test_a_rerun_resumes_and_computes_nothing(dry_run: tuple[Path, Path, str]) -> None:
    out, work, _ = dry_run
    params = study.load_params(ROOT / "params-gpu-study.yaml", dry_run=True)
    params["jobs"] = 1  # in-process: every stage call is timed and marked computed or not
    before = len(_timings(work))
    s = study.Study(params, work, out / "again.md")
    s.run("all")
    again = _timings(work)[before:]
    assert {t["stage"] for t in again} >= {"prepare", "train_teacher", "precompute", "distill"}
    assert not [t for t in again if t["computed"]], again


def test_plan_covers_matrix_ablation_and_sensitivity_once() -> None:
    params = study.load_params(ROOT / "params-study.yaml", dry_run=True)
    plan0 = study.Study.plan(_PlanOnly(params), 0)
    names = [j.name() for j in plan0]
    assert len(names) == len(set(names))
    assert names[:3] == ["none-l1-t1-s0", "teacher-l1-t1-s0", "plc-l1-t1-s0"]
    assert "gt_smooth-l1-t1-s0" in names  # the ablation of fold 0
    assert {"teacher-l0.1-t1-s0", "plc-l0.1-t1-s0"} <= set(names)  # λ × τ on fold 0
    names1 = [j.name() for j in study.Study.plan(_PlanOnly(params), 1)]
    assert names1 == ["none-l1-t1-s0", "teacher-l1-t1-s0", "plc-l1-t1-s0"]


class _PlanOnly:
    def __init__(self, params: dict) -> None:
        self.p = params


def test_dry_run_section_overrides_only_its_keys() -> None:
    full = study.load_params(ROOT / "params-study.yaml")
    dry = study.load_params(ROOT / "params-study.yaml", dry_run=True)
    assert full["prepare"]["size"] == 64 and dry["prepare"]["size"] == 32
    assert dry["team"]["lr"] == full["team"]["lr"]  # kept
    assert dry["name"] == "study-dry-run"


def test_build_maps_flags_and_refuses_unknown_keys(tmp_path: Path) -> None:
    from stages.distill.config import DistillConfig

    (tmp_path / "l.zarr").mkdir()
    wiring = {"labels": tmp_path / "l.zarr", "out": tmp_path / "r"}
    cfg = study.build(DistillConfig, {"lambda": 0.3, "tau": 4}, **wiring)
    assert cfg.lam == 0.3 and cfg.tau == 4
    with pytest.raises(ValueError, match="'lamda' is not an option of DistillConfig"):
        study.build(DistillConfig, {"lamda": 0.3}, **wiring)


@pytest.mark.slow
def test_pilot_tables_the_gap_per_candidate(tmp_path: Path) -> None:
    params = study.load_params(ROOT / "params-study.yaml", dry_run=True)
    out = study.pilot(study.Study(params, tmp_path / "work", tmp_path / "s.md"))
    text = out.read_text()
    assert out.name == "s-pilot.md"
    row = next(line for line in text.splitlines() if line.startswith("| tiny |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    team, student, gap = float(cells[5]), float(cells[6]), float(cells[7])
    assert gap == pytest.approx(team - student, abs=0.011)
    teacher = json.loads(
        (tmp_path / "work/pilot/32px-transunet-tiny/fold0/teacher.metrics.json").read_text()
    )
    assert team == pytest.approx(100 * teacher["dice"], abs=0.006)
