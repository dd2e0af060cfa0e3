"""The cross-validated study, in one resumable command: folds × variants × seeds, then the report.

    python benchmarks/study.py --params params-study.yaml            # the study
    python benchmarks/study.py --params params-study.yaml --pilot    # teacher–student gaps first
    python benchmarks/study.py --params params-study.yaml --dry-run  # tiny sizes, same code path

Every step is a ``plc`` stage function (the tested code) called with a config built from the
params file's sections (keys are the command's option names, as in ``--params``); the
conventional fold paths live under ``studies/<name>/``. A rerun skips what is done: each stage
is a no-op when its output holds the same config (killed mid-run, a study resumes at the first
unfinished artifact). Wall time of every stage call goes to ``studies/<name>/timings.jsonl`` as
it happens; the report (``reports/<name>.md`` + PNGs) is rewritten after every fold and ends
with the machine and the wall time per stage. ``jobs`` > 1 trains that many students at once
in worker processes (one GPU holds several small students).

The pilot trains, per candidate setting and pilot fold, the team network and the student alone
(both with ``plc train-teacher``: the same L_Seg recipe) and tables their test-fold Dice gap,
so a setting whose teacher beats the student alone by >= 3 Dice can be chosen before the study.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

logger = logging.getLogger("study")
ROOT = Path(__file__).resolve().parents[1]


def load_params(path: Path, dry_run: bool = False) -> dict:
    """The params file; with ``dry_run``, its ``dry_run`` section merged over the rest."""
    params = yaml.safe_load(Path(path).read_text())
    if dry_run:
        for section, values in (params.get("dry_run") or {}).items():
            if isinstance(values, dict) and isinstance(params.get(section), dict):
                params[section] = {**params[section], **values}
            else:
                params[section] = values
    return params


def build(config: type, section: dict | None, **wiring: Any) -> Any:
    """``config`` from a params section (keys: option names or flags) plus wiring values."""
    from stages.options import _field_by_key

    by_key = _field_by_key(config)
    values = {}
    for key, value in (section or {}).items():
        if key not in by_key:
            raise ValueError(f"params: {key!r} is not an option of {config.__name__}.")
        values[by_key[key].name] = value
    return config(**(values | wiring))


MASKED = "+masked"  # a matrix entry "teacher+masked": that variant with --kd-pixels correct


@dataclass(frozen=True)
class Job:
    """One student run: fold, variant, seed, λ, τ, and the pixels that carry the KD term."""

    fold: int
    variant: str
    seed: int
    lam: float
    tau: float
    kd_pixels: str = "all"

    @classmethod
    def of(cls, fold: int, entry: str, seed: int, lam: float, tau: float) -> Job:
        """A job from a matrix entry: a variant name, or ``<variant>+masked``."""
        if entry.endswith(MASKED):
            return cls(fold, entry.removesuffix(MASKED), seed, lam, tau, "correct")
        return cls(fold, entry, seed, lam, tau)

    def name(self) -> str:
        masked = "-masked" if self.kd_pixels == "correct" else ""
        return f"{self.variant}{masked}-l{self.lam:g}-t{self.tau:g}-s{self.seed}"


class Study:
    """Paths, timings and the stage calls of one study (``studies/<name>/``)."""

    def __init__(self, params: dict, workdir: Path | None = None, report: Path | None = None):
        self.p = params
        self.name = params["name"]
        self.root = Path(workdir or ROOT / "studies" / self.name)
        self.report = Path(report or ROOT / "reports" / f"{self.name}.md")
        self.ds = params.get("dataset_name", "study")
        # a second study over the same data and teams (e.g. the correction comparison) keeps
        # its own label stores, runs and timings under the same workdir
        self.labels_root = self.root / params.get("labels_dir", "labels")
        self.runs_root = self.root / params.get("runs_dir", "runs")
        self.timings = self.root / params.get("timings", "timings.jsonl")
        self.root.mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------------ paths
    @property
    def data(self) -> Path:
        return self.root / "data" / f"{self.ds}.zarr"

    def team(self, fold: int, role: str) -> Path:
        return self.root / "models" / self.ds / f"fold{fold}" / f"{role}.pt"

    def labels(self, fold: int) -> Path:
        return self.labels_root / f"{self.ds}-fold{fold}.zarr"

    def run_dir(self, job: Job) -> Path:
        return self.runs_root / f"fold{job.fold}" / job.name()

    # ------------------------------------------------------------------ timing
    def timed(self, stage: str, label: str, out: Path, fn, *args) -> Any:
        """Run ``fn(*args)``; append its wall time (and whether it computed) to timings.jsonl."""
        before = out.stat().st_mtime_ns if out.exists() else None
        start = time.perf_counter()
        result = fn(*args)
        seconds = time.perf_counter() - start
        computed = not out.exists() or out.stat().st_mtime_ns != before
        self.log({"stage": stage, "label": label, "seconds": seconds, "computed": computed})
        return result

    def log(self, record: dict) -> None:
        with open(self.timings, "a") as f:
            f.write(json.dumps(record | {"time": time.strftime("%Y-%m-%dT%H:%M:%S")}) + "\n")

    # ------------------------------------------------------------------ stages
    def prepare(self, size: int | None = None, out: Path | None = None) -> Path:
        from stages.prepare import stage as prepare
        from stages.prepare.config import PrepareConfig

        section = dict(self.p["prepare"])
        layout = section.pop("layout")
        if section.get("root") is not None:
            section["root"] = str((ROOT / section["root"]).resolve())
        if size is not None:
            section["size"] = size
        out = out or self.data
        cfg = build(PrepareConfig, section, dataset=layout, out=out, progress=False)
        return self.timed("prepare", out.name, out, prepare.run, cfg)

    def train_team(self, fold: int) -> None:
        from stages.train import assistant as train_assistant
        from stages.train import teacher as train_teacher
        from stages.train.config import AssistantConfig, TeacherConfig

        common = {"dataset": self.ds, "data": self.data, "fold": fold, "progress": False}
        teacher = self.team(fold, "teacher")
        cfg = build(TeacherConfig, self.p["team"], out=teacher, **common)
        self.timed("train_teacher", f"fold{fold}", teacher, train_teacher.run, cfg)
        for kind, role in (("false-pixel", "assistant_fp"), ("boundary", "assistant_bd")):
            out = self.team(fold, role)
            section = {**self.p["team"], **self.p.get("assistant", {})}
            cfg = build(AssistantConfig, section, kind=kind, teacher=teacher, out=out, **common)
            self.timed(f"train_assistant ({kind})", f"fold{fold}", out, train_assistant.run, cfg)

    def precompute(self, fold: int) -> None:
        from stages.precompute import stage as precompute
        from stages.precompute.config import PrecomputeConfig

        nets = {r: self.team(fold, r) for r in ("teacher", "assistant_fp", "assistant_bd")}
        out = self.labels(fold)
        cfg = build(PrecomputeConfig, self.p.get("precompute"), dataset=self.ds, data=self.data,
                    fold=fold, out=out, progress=False, **nets)  # fmt: skip
        self.timed("precompute", f"fold{fold}", out, precompute.run, cfg)

    def distill_config(self, job: Job) -> Any:
        from stages.distill.config import DistillConfig

        return build(DistillConfig, self.p["distill"], labels=self.labels(job.fold),
                     out=self.run_dir(job), data=self.data, fold=job.fold, variant=job.variant,
                     seed=job.seed, lam=job.lam, tau=job.tau, kd_pixels=job.kd_pixels,
                     progress=False)  # fmt: skip

    def students(self, jobs: list[Job]) -> None:
        """Every job's student (``jobs`` of them at once in worker processes when > 1)."""
        n = int(self.p.get("jobs", 1))
        configs = [self.distill_config(j) for j in jobs]
        if n <= 1:
            for job, cfg in zip(jobs, configs, strict=True):
                self.timed("distill", job.name(), self.run_dir(job) / "metrics.json", _distill, cfg)
            return
        import multiprocessing as mp

        start = time.perf_counter()
        threads = max(1, (os.cpu_count() or 1) // n)  # n students share the cores
        with ProcessPoolExecutor(n, mp_context=mp.get_context("spawn"), initializer=_threads,
                                 initargs=(threads,)) as pool:  # fmt: skip
            for job, seconds in zip(jobs, pool.map(_timed_distill, configs), strict=True):
                self.log({"stage": "distill", "label": job.name(), "seconds": seconds,
                          "computed": True, "concurrent": n})  # fmt: skip
        self.log({"stage": "distill (wall, concurrent)", "label": f"{len(jobs)} runs",
                  "seconds": time.perf_counter() - start, "computed": True})  # fmt: skip

    # ------------------------------------------------------------------ plan
    def plan(self, fold: int) -> list[Job]:
        """The student runs of ``fold``: the matrix, the ablation, the λ × τ grid (deduplicated)."""
        d = self.p["distill"]
        lam, tau = float(d.get("lambda", d.get("lam", 1.0))), float(d.get("tau", 1.0))
        m = self.p["matrix"]
        jobs = [Job.of(fold, v, s, lam, tau) for v in m["variants"] for s in m["seeds"]]
        if (a := self.p.get("ablation")) and fold in a.get("folds", []):
            jobs += [Job.of(fold, v, s, lam, tau) for v in a["variants"] for s in m["seeds"]]
        if (g := self.p.get("sensitivity")) and fold in g.get("folds", []):
            jobs += [Job(fold, v, s, float(la), float(t)) for v in ("teacher", "plc")
                     for s in g.get("seeds", m["seeds"]) for la in g["lambdas"] for t in g["taus"]]  # fmt: skip
        return list(dict.fromkeys(jobs))

    def run(self, part: str = "all") -> Path:
        """The study; ``part`` "prepare" writes only the dataset store, "team" stops after
        every fold's team and label store, "students" expects them (a device call each)."""
        start = time.perf_counter()
        folds = self.p["matrix"]["folds"]
        if part == "prepare" or (part in ("all", "team") and self._raw_data_here()):
            self.prepare()
        if part == "prepare":
            return self.data
        for fold in folds:
            if part in ("all", "team"):
                self.train_team(fold)
                self.precompute(fold)
            if part in ("all", "students"):
                self.students(self.plan(fold))
                self.write_report(time.perf_counter() - start)
        return self.report if part != "team" else self.root

    def _raw_data_here(self) -> bool:
        """False on a machine that has the prepared store carried but not the raw folder."""
        root = self.p["prepare"].get("root")
        if root is None or (ROOT / root).is_dir() or not self.data.exists():
            return True
        logger.info("raw folder %s absent: using the prepared store %s", root, self.data)
        return False

    def write_report(self, elapsed: float) -> Path:
        from stages.report import stage as report
        from stages.report.config import ReportConfig

        cfg = ReportConfig(runs=self.runs_root, out=self.report, labels=self.labels_root,
                           teacher_metrics=self.root / "models",
                           bootstrap=int(self.p.get("bootstrap", 2000)))  # fmt: skip
        report.run(cfg)
        with open(self.report, "a") as f:
            f.write("\n" + "\n".join(self.timing_lines(elapsed)) + "\n")
        return self.report

    def timing_lines(self, elapsed: float) -> list[str]:
        records = [json.loads(line) for line in self.timings.read_text().splitlines()]
        stages: dict[str, list[float]] = {}
        for r in records:
            if r["computed"]:
                stages.setdefault(r["stage"], []).append(r["seconds"])
        lines = [
            "## Machine and wall time",
            "",
            f"{machine()}; study `{self.name}` ({self.p.get('description', '').strip()}); "
            f"this invocation {elapsed / 60:.1f} min; {time.strftime('%Y-%m-%d')}.",
            "",
            "| Stage | calls that computed | total (s) | mean (s) |",
            "|---|---|---|---|",
        ]
        for stage, secs in stages.items():
            lines.append(
                f"| {stage} | {len(secs)} | {sum(secs):.1f} | {sum(secs) / len(secs):.1f} |"
            )
        return lines


def _threads(n: int) -> None:
    import torch

    torch.set_num_threads(n)


def _distill(cfg: Any) -> Path:
    from stages.distill import stage as distill

    return distill.run(cfg)


def _timed_distill(cfg: Any) -> float:
    start = time.perf_counter()
    _distill(cfg)
    return time.perf_counter() - start


def machine() -> str:
    """CPU model and cores, and the GPU when there is one."""
    import torch

    cpu = platform.processor() or "cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ", no GPU"
    return f"{cpu}, {os.cpu_count()} cores{gpu}, torch {torch.__version__}"


# --------------------------------------------------------------------------- pilot


def pilot(study: Study) -> Path:
    """Teacher vs student alone for each candidate setting on the pilot folds (a table).

    A candidate names ``size``, ``team`` and ``student`` models; optional ``teacher_options`` /
    ``student_options`` override recipe keys (epochs, steps_per_epoch, ...) of that network.
    """
    from stages.train import teacher as train_teacher
    from stages.train.config import TeacherConfig

    pp = study.p["pilot"]
    rows = []
    for cand in pp["candidates"]:
        data = study.root / "pilot" / "data" / f"{study.ds}-{cand['size']}.zarr"
        study.prepare(size=int(cand["size"]), out=data)
        for fold in pp["folds"]:
            dice = {}
            for role, model, section in (("teacher", cand["team"], "team"),
                                         ("student", cand["student"], "distill")):  # fmt: skip
                values = {k: v for k, v in study.p[section].items() if k in _TRAIN_KEYS}
                options = cand.get(f"{role}_options", {})  # per-candidate recipe changes
                values |= options
                # one network per (size, model, options): candidates that share a team share it
                key = "-".join(
                    [f"{cand['size']}px", model, *(f"{k}{v}" for k, v in sorted(options.items()))]
                )
                out = study.root / "pilot" / key / f"fold{fold}" / f"{role}.pt"
                cfg = build(TeacherConfig, values, dataset=study.ds, data=data, fold=fold,
                            model=model, out=out, progress=False, allow_weak_teacher=True)  # fmt: skip
                start = time.perf_counter()
                study.timed(f"pilot {role}", cand["name"], out, train_teacher.run, cfg)
                metrics = json.loads(out.with_suffix(".metrics.json").read_text())
                steps = cfg.epochs * cfg.steps_per_epoch
                dice[role] = (metrics["dice"], time.perf_counter() - start, steps)
            rows.append((cand, fold, dice))
    return _pilot_report(study, rows)


_TRAIN_KEYS = {"epochs", "batch_size", "lr", "seed", "augment", "steps_per_epoch",
               "warmup_steps", "ema_decay", "grad_clip", "foreground_fraction", "val_fraction"}  # fmt: skip


def _pilot_report(study: Study, rows: list) -> Path:
    out = study.report.with_name(study.report.stem + "-pilot.md")
    lines = [
        f"# Pilot of {study.name}: teacher vs student alone (test fold Dice, %)",
        "",
        f"{machine()}, {time.strftime('%Y-%m-%d')}. Both networks trained with `plc "
        "train-teacher` (L_Seg, the same recipe); a setting is usable when the gap is >= 3.",
        "",
        "| Candidate | size | team (steps) | student (steps) | fold | team Dice | student Dice "
        "| gap | wall (s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for cand, fold, d in rows:
        (t, ts, tn), (s, ss, sn) = d["teacher"], d["student"]
        lines.append(
            f"| {cand['name']} | {cand['size']} | {cand['team']} ({tn}) | {cand['student']} "
            f"({sn}) | {fold} | {100 * t:.2f} | {100 * s:.2f} | {100 * (t - s):+.2f} "
            f"| {ts + ss:.0f} |"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", type=Path, required=True, help="Study params YAML.")
    parser.add_argument("--pilot", action="store_true", help="Only the pilot (gap per setting).")
    parser.add_argument("--dry-run", action="store_true", help="Apply the params' dry_run section.")
    parser.add_argument(
        "--part", choices=("all", "prepare", "team", "students"), default="all",
        help="prepare: the dataset store only; team: data, teams and label stores of every "
        "fold; students: the students and the report (expects the teams).",
    )  # fmt: skip
    parser.add_argument(
        "--folds", type=int, nargs="+",
        help="Only these folds of the matrix (e.g. two processes on disjoint folds share a "
        "2-core machine; run `--part prepare` first). The report covers every run present.",
    )  # fmt: skip
    parser.add_argument("--workdir", type=Path, help="Default studies/<name>.")
    parser.add_argument("--report", type=Path, help="Default reports/<name>.md.")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    params = load_params(args.params, args.dry_run)
    if args.folds:
        unknown = sorted(set(args.folds) - set(params["matrix"]["folds"]))
        if unknown:
            parser.error(
                f"--folds {unknown} are not folds of the matrix {params['matrix']['folds']}"
            )
        params["matrix"]["folds"] = args.folds
    study = Study(copy.deepcopy(params), args.workdir, args.report)
    out = pilot(study) if args.pilot else study.run(args.part)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
