"""plc report: statistics against hand-computed cases and scipy, and the report on known runs."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from typer.testing import CliRunner

from stages.cli import app
from stages.report import stage as report
from stages.report import stats as rs

runner = CliRunner()


# --------------------------------------------------------------------------- statistics


def test_t_interval_is_hand_computed_and_matches_scipy() -> None:
    iv = rs.t_interval([0.01, 0.02, 0.03])  # mean 0.02, sd 0.01, n 3
    half = stats.t.ppf(0.975, df=2) * 0.01 / math.sqrt(3)  # 4.3027 · 0.005774 = 0.02484
    assert iv.mean == pytest.approx(0.02)
    assert (iv.low, iv.high) == pytest.approx((0.02 - half, 0.02 + half))
    assert half == pytest.approx(0.024841, abs=1e-6)
    assert iv.fmt() == "+2.00 [-0.48, +4.48]"
    assert not iv.excludes_zero()


def test_t_interval_edge_cases() -> None:
    assert rs.t_interval([]).fmt() == "–"
    one = rs.t_interval([0.05])
    assert one.fmt() == "+5.00" and math.isnan(one.low)
    flat = rs.t_interval([0.01, 0.01, math.nan])
    assert (flat.low, flat.high, flat.n) == (0.01, 0.01, 2) and flat.excludes_zero()


def test_paired_t_pairs_by_fold_and_seed_only() -> None:
    runs = {(0, 0): 0.60, (0, 1): 0.70, (1, 0): 0.50, (2, 0): 0.9}
    base = {(0, 0): 0.55, (0, 1): 0.60, (1, 0): 0.50}  # (2, 0) has no partner
    keys, diffs = rs.paired_diffs(runs, base)
    assert keys == [(0, 0), (0, 1), (1, 0)]
    assert diffs == pytest.approx([0.05, 0.10, 0.0])
    iv = rs.paired_t(runs, base)
    want = stats.ttest_rel([0.60, 0.70, 0.50], [0.55, 0.60, 0.50]).confidence_interval()
    assert (iv.low, iv.high) == pytest.approx((want.low, want.high))


def test_image_bootstrap_point_estimate_and_degenerate_cases() -> None:
    runs = {(0, 0): {"a": 0.9, "b": 0.5}, (0, 1): {"a": 0.7, "b": 0.5}, (1, 0): {"c": 0.4}}
    base = {(0, 0): {"a": 0.8, "b": 0.5}, (0, 1): {"a": 0.8, "b": 0.3}, (1, 0): {"c": 0.1}}
    # per image, mean over seeds: a: (0.1 - 0.1)/2 = 0, b: (0 + 0.2)/2 = 0.1, c: 0.3
    iv = rs.image_bootstrap(runs, base, n_boot=500, seed=1)
    assert iv.mean == pytest.approx((0.0 + 0.1 + 0.3) / 3) and iv.n == 3
    assert iv.low <= iv.mean <= iv.high
    assert rs.image_bootstrap(runs, base, n_boot=500, seed=1) == iv  # seeded
    # one image per fold: resampling within folds cannot move the mean
    single = rs.image_bootstrap({(0, 0): {"a": 0.6}, (1, 0): {"b": 0.2}},
                                {(0, 0): {"a": 0.5}, (1, 0): {"b": 0.1}}, n_boot=200)  # fmt: skip
    assert (single.low, single.high) == pytest.approx((0.1, 0.1))


def test_image_bootstrap_interval_matches_scipy_percentile_bootstrap() -> None:
    rng = np.random.default_rng(0)
    d = rng.normal(0.02, 0.05, size=60)
    runs = {(0, 0): {str(i): float(v) for i, v in enumerate(d)}}
    base = {(0, 0): {str(i): 0.0 for i in range(60)}}
    iv = rs.image_bootstrap(runs, base, n_boot=4000, seed=3)
    ref = stats.bootstrap((d,), np.mean, n_resamples=4000, method="percentile", random_state=3)
    assert iv.mean == pytest.approx(d.mean())
    assert iv.low == pytest.approx(ref.confidence_interval.low, abs=0.004)
    assert iv.high == pytest.approx(ref.confidence_interval.high, abs=0.004)


def test_tail_slope_uses_the_last_fifth() -> None:
    curve = [0.1] * 8 + [0.5, 0.6]  # last 20 % of 10 epochs = 2 points: slope 0.1
    assert rs.tail_slope(curve) == pytest.approx(0.1)
    assert rs.tail_slope([0.2 + 0.01 * e for e in range(20)]) == pytest.approx(0.01)
    assert math.isnan(rs.tail_slope([0.3]))


# --------------------------------------------------------------------------- the report


def _write_run(root: Path, variant: str, fold: int, seed: int, dice: dict[str, float],
               lam: float = 1.0, tau: float = 1.0, init: str = "i", curve=None) -> None:  # fmt: skip
    d = root / f"fold{fold}" / f"{variant}-l{lam}-t{tau}-s{seed}"
    d.mkdir(parents=True)
    mean = float(np.mean(list(dice.values())))
    cfg = {"variant": variant, "fold": fold, "seed": seed, "lam": lam, "tau": tau,
           "student": "unet-tiny", "epochs": 10, "loss": "kd"}  # fmt: skip
    metrics = {"dice": mean, "iou": mean / 2, "hd95": 3.0, "assd": 1.0, "config": cfg,
               "dataset": "toy", "init_sha256": f"{init}{fold}{seed}",
               "batches_sha256": f"b{fold}{seed}"}  # fmt: skip
    (d / "metrics.json").write_text(json.dumps(metrics))
    with open(d / "metrics_per_image.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["id", "dice", "iou", "hd95", "assd"])
        w.writeheader()
        w.writerows(
            {"id": i, "dice": v, "iou": v / 2, "hd95": 3, "assd": 1} for i, v in dice.items()
        )
    curve = curve or [0.1 * e for e in range(10)]
    with open(d / "curve.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["epoch", "loss", "val_dice"])
        w.writeheader()
        w.writerows({"epoch": e, "loss": 1, "val_dice": v} for e, v in enumerate(curve))


def _write_teacher(root: Path, fold: int, dice: dict[str, float]) -> None:
    d = root / f"fold{fold}"
    d.mkdir(parents=True, exist_ok=True)
    mean = float(np.mean(list(dice.values())))
    (d / "teacher.metrics.json").write_text(
        json.dumps({"dice": mean, "iou": mean / 2, "model": "unet-small"})
    )
    with open(d / "teacher.metrics_per_image.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["id", "dice", "iou"])
        w.writeheader()
        w.writerows({"id": i, "dice": v, "iou": v / 2} for i, v in dice.items())


IMAGES = {0: ("a", "b"), 1: ("c", "d")}
# per (fold, seed): the student alone's Dice per image; KD variants add a known shift
ALONE = {(0, 0): (0.60, 0.70), (0, 1): (0.62, 0.66), (1, 0): (0.50, 0.58), (1, 1): (0.54, 0.52)}
SHIFT = {"teacher": 0.02, "plc": 0.05, "gt_smooth": 0.01}


def _toy(root: Path, teacher_dice: float) -> tuple[Path, Path]:
    runs, models = root / "runs", root / "models"
    for (fold, seed), values in ALONE.items():
        ids = IMAGES[fold]
        _write_run(runs, "none", fold, seed, dict(zip(ids, values, strict=True)))
        for variant, shift in SHIFT.items():
            bump = shift + 0.01 * seed  # paired differences vary a little with the seed
            _write_run(
                runs, variant, fold, seed, {i: v + bump for i, v in zip(ids, values, strict=True)}
            )
    for fold, ids in IMAGES.items():
        _write_teacher(models, fold, dict.fromkeys(ids, teacher_dice))
    return runs, models


def _report(runs: Path, models: Path, out: Path, *extra: str) -> str:
    args = ["report", "--runs", str(runs), "--out", str(out), "--teacher-metrics", str(models),
            "--bootstrap", "500", *extra]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return out.read_text()


def test_report_paired_deltas_and_gap_on_known_runs(tmp_path: Path) -> None:
    runs, models = _toy(tmp_path, teacher_dice=0.80)
    text = _report(runs, models, tmp_path / "r.md")
    # gap per fold: fold 0: 0.80 - mean(0.65, 0.64) = 0.155; fold 1: 0.80 - mean(0.54, 0.53) = 0.265
    gap = rs.t_interval([0.155, 0.265])
    assert f"**{gap.fmt()}** (t over folds)" in text
    assert "The teacher beats the student alone by 21.00 Dice points." in text
    # PLC vs vanilla KD: +0.03 at seed 0 and seed 1 alike (the seed bump cancels) -> +3.00
    assert "**PLC-KD beats vanilla KD**: paired ΔDice +3.00 [+3.00, +3.00] (t over 4 runs)" in text
    plc_row = next(
        line for line in text.splitlines() if line.startswith("| T + TA_f + TA_b + SC (PLC-KD) | +")
    )
    vs_alone = rs.t_interval([0.05, 0.06, 0.05, 0.06])
    assert plc_row.split(" | ")[1] == vs_alone.fmt()
    assert "| GT label smoothing (control) |" in text
    results = next(
        line for line in text.splitlines() if line.startswith("| Student alone (no KD) | ")
    )
    dice = [np.mean(v) for v in ALONE.values()]
    assert (
        results.split(" | ")[1] == f"{100 * np.mean(dice):.2f} ± {100 * np.std(dice, ddof=1):.2f}"
    )
    assert "3.00 ± 0.00 | 1.00 ± 0.00" in results  # HD95, ASSD
    assert "| +10.000 | +10.000 | 10 |" in text  # val-Dice slope 0.1/epoch = 10 points
    png = tmp_path / "r_forest.png"
    import cv2

    assert cv2.imread(str(png)) is not None and "![paired differences](r_forest.png)" in text
    assert "Sensitivity" not in text  # one (λ, τ) only


def test_report_says_plainly_when_the_teacher_does_not_beat_the_student(tmp_path: Path) -> None:
    runs, models = _toy(tmp_path, teacher_dice=0.40)
    text = _report(runs, models, tmp_path / "r.md")
    assert "**The teacher does not beat the student alone: KD has nothing to transfer.**" in text
    assert text.index("Teacher vs student alone") < text.index("## Results")


def test_report_sensitivity_table_from_lambda_tau_runs(tmp_path: Path) -> None:
    runs, models = _toy(tmp_path, teacher_dice=0.80)
    for lam, tau in ((0.1, 1.0), (0.3, 4.0)):
        for variant, dice in (("teacher", 0.3), ("plc", 0.4)):
            _write_run(runs, variant, 0, 0, {"a": dice, "b": dice}, lam=lam, tau=tau)
    text = _report(runs, models, tmp_path / "r.md")
    assert "| λ \\ τ | τ = 1 | τ = 4 |" in text
    assert "| λ = 0.1 | 30.00 / 40.00 | – / – |" in text
    assert "| λ = 0.3 | – / – | 30.00 / 40.00 |" in text
    # the main setting (λ 1, τ 1: both folds, both seeds) is shown on the grid's one pair only:
    # fold 0, seed 0, where the student alone has 65 and the shifts add 2 and 5 points
    assert "| λ = 1 | 67.00 / 70.00 | – / – |" in text
    assert "fold(s) 0, seed(s) 0 (1 pair(s)); the student alone on them: 65.00 Dice" in text


def test_report_sensitivity_settings_without_a_common_pair_are_not_compared(
    tmp_path: Path,
) -> None:
    runs, models = _toy(tmp_path, teacher_dice=0.80)
    _write_run(runs, "teacher", 2, 5, {"e": 0.3}, lam=0.1, tau=1.0)  # a pair no other setting has
    text = _report(runs, models, tmp_path / "r.md")
    assert "The λ × τ settings share no (fold, seed) pair" in text
    assert "| λ = 0.1 |" not in text


def test_report_refuses_runs_that_are_not_paired(tmp_path: Path) -> None:
    runs, _ = _toy(tmp_path, teacher_dice=0.80)
    _write_run(runs, "teacher_sc", 1, 1, {"c": 0.5, "d": 0.5}, init="other")
    result = runner.invoke(app, ["report", "--runs", str(runs), "--out", str(tmp_path / "r.md")])
    assert result.exit_code == 1
    assert "fold 1, seed 1: the variants do not share their initial weights" in result.output
    assert not (tmp_path / "r.md").exists()


# --------------------------------------------------------------------------- weak team members
# (issue 9's report lines, moved here from the previous test_report.py)


def _run(variant: str, seed: int, dice: float, train_dice: float | None = None) -> dict:
    run = {"config": {"variant": variant, "seed": seed}, "dice": dice, "iou": dice / 2}
    if train_dice is not None:
        run["train_check"] = {"train_dice": train_dice, "passed": True}
    return run


def test_a_teacher_below_the_student_alone_is_named() -> None:
    runs = [_run("none", 0, 0.50), _run("none", 1, 0.60), _run("teacher", 0, 0.4)]
    lines = report.weak_team(runs, {"dice": 0.52, "iou": 0.3}, None)
    assert lines == [
        "- Teacher T does not beat the student alone on the test split (52.00 vs 55.00 Dice): "
        "its soft labels are not expected to help; train it for more steps or at a larger "
        "image size."
    ]
    assert report.weak_team(runs, {"dice": 0.70, "iou": 0.5}, None) == []


def test_members_compared_on_the_train_split_and_failed_checks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    checks = {
        "Teacher T": {"train_dice": 0.90, "passed": True},
        "TA_f": {"train_dice": 0.70, "passed": True},
        "TA_b": {"train_dice": 0.10, "passed": False},
        # trained on FIG images only: its Dice on real images is not compared
        "TA_f (fold 1)": {"train_dice": 0.04, "passed": True, "real_images": False},
    }
    monkeypatch.setattr(report, "_member_checks", lambda labels: checks)
    runs = [_run("none", 0, 0.5, train_dice=0.75), _run("none", 1, 0.5, train_dice=0.85)]
    lines = report.weak_team(runs, None, labels=None)
    assert lines == [
        "- TA_f does not beat the student alone on the train split (70.00 vs 80.00 Dice).",
        "- TA_b failed the training check (train-split Dice 10.00) and was kept with "
        "--allow-weak-teacher.",
    ]


# --------------------------------------------------------------------------- label quality


@pytest.fixture(scope="module")
def label_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from precompute_inputs import make_inputs, plc, precompute_args

    root = tmp_path_factory.mktemp("report_labels")
    inputs = make_inputs(root)
    out = root / "labels" / "g.zarr"
    plc(*precompute_args(inputs, out))
    return out


def test_sc_corrected_pixels_are_exactly_the_base_maps_false_pixels(label_store: Path) -> None:
    from stages.report.labels import label_stores, quality, sc_corrections, sc_sources
    from storage_schema import open_label_store

    store = open_label_store(label_store)
    corr = sc_corrections(label_stores(label_store.parent))
    for name, base in (("teacher_sc", "teacher"), ("plc", "teacher_fa_ba")):
        c = corr[name]
        assert int(c.to_lesion.sum() + c.to_background.sum()) == int(
            store.stat(f"false_pixels_{base}").sum()
        )
        # all-correct: lesion p_fg > 0.5, background p_fg <= 0.5 (a tie's argmax is background)
        assert c.to_lesion[:5].sum() == 0 and c.to_background[6:].sum() == 0
    sources = sc_sources([label_store])
    for name, base in (("teacher_sc", "teacher"), ("plc", "teacher_fa_ba")):
        # every false pixel of the base came from exactly one source
        assert sum(sources[name].values()) == int(store.stat(f"false_pixels_{base}").sum())
    assert sources["teacher_sc"]["in_image"] > 0 and sources["teacher_sc"]["bank"] > 0
    q = quality([label_store])
    assert q["plc"].false_pixels == 0 and q["teacher"].false_pixels > 0
    assert q["teacher"].images == len(store)


def test_team_lines_name_checkpoints_without_diagnostics_or_out_of_reach(
    label_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline import checkpoint
    from stages.report.labels import team_lines

    # the fixture's team: seeded random nets saved without train-assistant's diagnostics
    lines = team_lines([label_store])
    assert lines == [
        "Not recorded for assistant_fp (fold –), assistant_bd (fold –): those checkpoints were "
        "trained before plc-kd recorded FIG queues and BT bands (retrain them to see these "
        "tables)."
    ]

    def gone(path):
        raise FileNotFoundError(path)

    monkeypatch.setattr(checkpoint, "load_checkpoint", gone)
    assert team_lines([label_store])[0].startswith("Not shown for assistant_fp (fold –), ")


def test_report_label_section_from_a_folder_of_stores(label_store: Path, tmp_path: Path) -> None:
    runs, models = _toy(tmp_path, teacher_dice=0.80)
    text = _report(runs, models, tmp_path / "r.md", "--labels", str(label_store.parent))
    assert "## Label quality on the train split (1 label store(s))" in text
    assert "| T + TA_f + TA_b + SC (PLC-KD) | 0.000 | 0/" in text
    assert "| T + SC | lesion |" in text and (tmp_path / "r_sc_hist.png").exists()
    assert "### Where SC took the vectors it copied" in text
    assert (
        "| SC variant | pixels corrected | same image (a correct pixel; swap: in place) |" in text
    )


def test_students_that_failed_their_training_check_are_named(tmp_path: Path) -> None:
    runs, models = _toy(tmp_path, teacher_dice=0.80)
    metrics_path = runs / "fold1" / "plc-l1.0-t1.0-s0" / "metrics.json"
    metrics = json.loads(metrics_path.read_text())
    metrics["train_check"] = {"train_dice": 0.1234, "predicted_classes": ["background"],
                              "passed": False}  # fmt: skip
    metrics_path.write_text(json.dumps(metrics))
    text = _report(runs, models, tmp_path / "r.md")
    assert "Student runs that failed the training check (kept with --allow-weak-teacher):" in text
    assert "- plc (fold 1, seed 0): train-split Dice 12.34, predicted background." in text
    assert text.count("failed the training check") == 1  # the passing runs are not listed


def test_coherence_by_hand(tmp_path) -> None:
    """One 4×4 image: T says background everywhere; `plc` corrects an isolated pixel and a
    2-pixel run, so 3 pixels change, 1 of them isolated, at p(lesion) 0.6, 0.8, 0.8."""
    from stages.report import labels as rl
    from storage_schema import create_label_store

    def logp(p_fg: np.ndarray) -> np.ndarray:
        return np.log(np.stack([1 - p_fg, p_fg])[None].astype(np.float32))  # (1, 2, 4, 4)

    t = np.full((4, 4), 0.2)
    plc = t.copy()
    plc[0, 0] = 0.6  # isolated
    plc[2, 1] = plc[2, 2] = 0.8  # neighbours of each other
    writer = create_label_store(
        tmp_path / "l.zarr", ids=["a"], variants=("teacher", "plc"),
        classes=["background", "lesion"], height=4, width=4, dataset_name="toy",
        manifest_sha256="0" * 64, shard_size=1, provenance={}, created="2024-01-01T00:00:00+00:00",
    )  # fmt: skip
    writer.write_shard(0, {"teacher": logp(t), "plc": logp(plc)})
    path = writer.publish()
    coh = rl.coherence([path])
    c = coh["plc"]
    assert c.corrected == 3 and c.isolated == 1
    # the store holds int8 codes: the oracle is the decoded map, worked through by hand
    from storage_schema import open_label_store

    fg = np.exp(open_label_store(path).read("plc", slice(None))[0, 1].astype(np.float64))
    lo, hi, bg = fg[0, 0], fg[2, 1], fg[1, 1]  # ≈ 0.6, 0.8, 0.2 after encoding
    assert abs(lo - 0.6) < 0.02 and abs(hi - 0.8) < 0.02 and fg[2, 2] == hi
    assert rl.hist_quantile(c.p_hist, 0.1) == pytest.approx(np.floor(lo * 1000 + 1) / 1000)
    assert rl.hist_quantile(c.p_hist, 0.5) == pytest.approx(np.floor(hi * 1000 + 1) / 1000)
    # |Δp_fg| between neighbours: (0,0) meets background on 2 sides, the run at row 2 on 6;
    # 24 neighbour pairs in a 4×4 map
    assert c.grad_sum == pytest.approx(2 * (lo - bg) + 6 * (hi - bg), abs=1e-6)
    assert c.grad_n == 24
    assert coh["teacher"].corrected == 0 and coh["teacher"].grad_sum == pytest.approx(0, abs=1e-6)
    lines = rl.coherence_lines(coh)
    assert lines[2].startswith("| T (vanilla KD) | 0 | – |")
    row = next(line for line in lines if line.startswith("| T + TA_f + TA_b + SC (PLC-KD) |"))
    assert row.startswith("| T + TA_f + TA_b + SC (PLC-KD) | 3 |") and "| 33.3 |" in row


def test_masked_kd_runs_are_their_own_row() -> None:
    from stages.report.runs import MASKED, ROWS, row_key

    assert row_key({"variant": "teacher"}) == "teacher"  # runs from before --kd-pixels
    assert row_key({"variant": "teacher", "kd_pixels": "all"}) == "teacher"
    assert row_key({"variant": "teacher", "kd_pixels": "correct"}) == "teacher" + MASKED
    labels = dict(ROWS)
    assert labels["teacher" + MASKED] == "T (vanilla KD), KD on correct pixels only"
    assert len(set(labels.values())) == len(ROWS)


def test_calibration_lines_show_each_stores_temperatures(tmp_path) -> None:
    from stages.report import labels as rl
    from storage_schema import create_label_store

    cal = {"fp": 20.0, "bd": 1.25, "images": 4, "pixels": 64, "source": "teacher val images",
           "nll_before": {"fp": 9.5, "bd": 0.8}, "nll_after": {"fp": 1.1, "bd": 0.7},
           "at_bound": ["fp"]}  # fmt: skip
    paths = []
    for name, prov in (("a.zarr", {"calibration": cal}), ("old.zarr", {})):
        w = create_label_store(
            tmp_path / name, ids=["x"], variants=("teacher",), classes=["background", "lesion"],
            height=4, width=4, dataset_name="toy", manifest_sha256="0" * 64, shard_size=1,
            provenance=prov, created="2024-01-01T00:00:00+00:00",
        )  # fmt: skip
        w.write_shard(0, {"teacher": np.log(np.full((1, 2, 4, 4), 0.5, np.float32))})
        paths.append(w.publish())
    lines = rl.calibration_lines(paths)
    assert lines[2] == (
        "| a.zarr | 4 teacher val images | 20 (search bound) | 9.500 → 1.100 | 1.25 | 0.800 → 0.700 |"
    )
    assert len(lines) == 3  # the store made before plc_cal has no row
    assert rl.calibration_lines(paths[1:]) == []


def test_teacher_row_counts_only_folds_with_student_runs(tmp_path: Path) -> None:
    """A study in progress: teachers of folds 0, 1 and 2 exist, students only on 0 and 1; the
    teacher row and the gap use folds 0 and 1 only."""
    runs, models = _toy(tmp_path, teacher_dice=0.80)
    _write_teacher(models, 2, {"z": 0.10})  # a fold without students, far below the others
    text = _report(runs, models, tmp_path / "r.md")
    row = next(line for line in text.splitlines() if line.startswith("| Teacher T"))
    assert row.split(" | ")[1] == "80.00 ± 0.00" and row.rstrip(" |").endswith("| 2")
    assert "paired per fold over 2 fold(s)" in text


def test_loss_runs_are_their_own_rows_with_the_papers_tick_columns(tmp_path: Path) -> None:
    from stages.report.runs import NO_KD, PLUS_KD, ROWS, families, row_key

    assert row_key({"variant": "teacher", "loss": "cwd"}) == "cwd"
    assert row_key({"variant": "plc", "loss": "dkd"}) == "dkd:plc"
    assert row_key({"variant": "none", "loss": "dist"}) == NO_KD  # no labels: the student alone
    assert row_key({"variant": "plc", "loss": "at"}) == "at"  # reads no labels without --plus-kd
    assert row_key({"variant": "teacher", "loss": "at", "plus_kd": True}) == "at" + PLUS_KD
    assert row_key({"variant": "plc", "loss": "cirkd", "plus_kd": True}) == "cirkd+kd:plc"
    assert families("at") == ("feature",) and families("at+kd") == ("response", "feature")
    assert families("emkd") == ("response", "feature", "relation")  # its own KD term
    assert families("spkd+kd") == ("response", "relation") and families("cwd") == ("response",)
    labels = dict(ROWS)
    assert labels["at+kd"] == "AT (Zagoruyko & Komodakis 2017) + KD"
    assert len(set(labels.values())) == len(ROWS) == len(labels)

    runs, models = _toy(tmp_path, teacher_dice=0.80)
    for (fold, seed), values in ALONE.items():  # AT + KD: +0.04 over the student alone
        _write_run(runs, "at", fold, seed,
                   {i: v + 0.04 for i, v in zip(IMAGES[fold], values, strict=True)})  # fmt: skip
        path = next((runs / f"fold{fold}").glob(f"at-*-s{seed}")) / "metrics.json"
        m = json.loads(path.read_text())
        m["config"] |= {"variant": "teacher", "loss": "at", "plus_kd": True}
        path.write_text(json.dumps(m))
    text = _report(runs, models, tmp_path / "r.md")
    table = text.split("## Table 1: KD methods on the same students")[1].split("## ")[0]
    rows = [line for line in table.splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| Method | Response | Feature | Relation | Dice (%) |")
    at_row = next(r for r in rows if r.startswith("| AT (Zagoruyko & Komodakis 2017) + KD |"))
    cells = at_row.split(" | ")
    assert cells[1:4] == ["✓", "✓", ""]  # response (its KD), feature, no relation
    # vs vanilla KD: 0.04 - (0.02 + 0.01 · seed) per pair -> +2.00 and +1.00 points
    vs_kd = rs.t_interval([0.02, 0.01, 0.02, 0.01])
    assert cells[8] == vs_kd.fmt() and cells[9] == rs.t_interval([0.04] * 4).fmt()
    assert [r.split(" | ")[0] for r in rows[1:]] == [
        "| KD (Hinton et al. 2015)", "| AT (Zagoruyko & Komodakis 2017) + KD",
        "| T + TA_f + TA_b + SC (PLC-KD)",
    ]  # fmt: skip
    toy_only = _report(*_toy(tmp_path / "plain", 0.8), tmp_path / "plain.md")
    assert "## Table 1" not in toy_only  # no loss other than KD ran
