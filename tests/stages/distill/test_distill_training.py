"""distill's training recipe: the held-out val curve and the training-failure check for students."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from loader_stores import make_stores
from typer.testing import CliRunner

from stages.cli import app
from stages.data import load_split
from stages.distill.config import DistillConfig
from stages.distill.stage import _plan, _val_split
from stages.train.common import split_validation
from storage_schema import open_dataset_store

runner = CliRunner()


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_stores(tmp_path_factory.mktemp("distill"), n_train=12)


def _distill(stores: tuple[Path, Path], out: Path, *extra: object):
    data, labels = stores
    args = ["distill", "--labels", labels, "--data", data, "--out", out, "--student", "unet-tiny"]
    args += ["--batch-size", "4", "--device", "cpu", "--num-workers", "0", "--no-progress"]
    return runner.invoke(app, [str(a) for a in (*args, *extra)])


def test_a_student_that_cannot_train_stops_distill_and_writes_nothing(stores, tmp_path) -> None:
    out = tmp_path / "run"
    tiny = ("--epochs", 1, "--steps-per-epoch", 1, "--lr", "1e-9", "--variant", "none")
    result = _distill(stores, out, *tiny)
    assert result.exit_code == 1, result.output
    assert "student unet-tiny (none, seed 0) failed the training check" in result.output
    assert "--allow-weak-teacher goes on anyway" in result.output
    assert "Traceback" not in result.output
    assert not out.exists()  # nothing written
    result = _distill(stores, out, *tiny, "--allow-weak-teacher")
    assert result.exit_code == 0, result.output
    check = json.loads((out / "metrics.json").read_text())["train_check"]
    assert check["passed"] is False and len(check["predicted_classes"]) == 1  # one class


def test_val_fraction_writes_a_val_curve_from_held_out_train_images(stores, tmp_path) -> None:
    out = tmp_path / "run"
    result = _distill(
        stores, out, "--epochs", 3, "--steps-per-epoch", 2, "--val-fraction", 0.25,
        "--variant", "plc", "--allow-weak-teacher",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    with open(out / "curve.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]
    assert all(0.0 <= float(r["val_dice"]) <= 1.0 for r in rows)
    assert "seconds" not in rows[0]  # wall clock stays out of the tracked curve
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["train_check"]) == {"train_dice", "predicted_classes", "passed"}


def test_held_out_images_are_the_teachers_and_never_drawn(stores) -> None:
    data, labels = stores
    store = open_dataset_store(data)
    cfg = DistillConfig(labels=str(labels), out=Path("r"), val_fraction=0.25, batch_size=4,
                        steps_per_epoch=5, epochs=3)  # fmt: skip
    keep, val = _val_split(cfg, store)
    _, teacher_val = split_validation(load_split(store, "train"), 0.25)
    assert teacher_val is not None and val is not None
    train_ids = [store.ids()[i] for i in store.indices("train")]
    assert [train_ids[i] for i in val] == teacher_val.ids  # the teacher's held-out images
    assert np.intersect1d(keep, val).size == 0 and len(keep) + len(val) == len(train_ids)
    plan = _plan(cfg, store, keep)
    drawn = np.concatenate([b for epoch in range(3) for b in plan(epoch)])
    assert np.isin(drawn, keep).all() and not np.isin(drawn, val).any()


def test_without_val_fraction_the_plan_indexes_the_whole_split(stores) -> None:
    data, labels = stores
    store = open_dataset_store(data)
    cfg = DistillConfig(labels=str(labels), out=Path("r"), batch_size=4, steps_per_epoch=5)
    keep, val = _val_split(cfg, store)
    assert val is None and np.array_equal(keep, np.arange(len(store.indices("train"))))
    batches = _plan(cfg, store, keep)(0)
    assert len(batches) == 5 and all(len(b) == 4 for b in batches)


def _student_bytes(out: Path) -> dict:
    import torch

    return torch.load(out / "student.pt", map_location="cpu", weights_only=False)["state_dict"]


def test_kd_pixels_correct_changes_nothing_on_an_all_correct_variant(stores, tmp_path) -> None:
    # loader_stores' `plc` is all-correct: the masked KD term is the plain one, bit for bit
    import torch

    run = ("--epochs", 2, "--steps-per-epoch", 2, "--variant", "plc", "--allow-weak-teacher")
    a, b = tmp_path / "all", tmp_path / "correct"
    assert _distill(stores, a, *run).exit_code == 0
    result = _distill(stores, b, *run, "--kd-pixels", "correct")
    assert result.exit_code == 0, result.output
    wa, wb = _student_bytes(a), _student_bytes(b)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_kd_pixels_correct_masks_the_teachers_false_pixels(stores, tmp_path) -> None:
    # the noisy `teacher` row has false pixels: masking them trains other weights
    import torch

    run = ("--epochs", 2, "--steps-per-epoch", 2, "--variant", "teacher", "--allow-weak-teacher")
    a, b = tmp_path / "all", tmp_path / "correct"
    assert _distill(stores, a, *run).exit_code == 0
    assert _distill(stores, b, *run, "--kd-pixels", "correct").exit_code == 0
    wa, wb = _student_bytes(a), _student_bytes(b)
    assert not all(torch.equal(wa[k], wb[k]) for k in wa)
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (a, b))
    assert ma["init_sha256"] == mb["init_sha256"] and ma["batches_sha256"] == mb["batches_sha256"]


def test_kd_pixels_correct_refuses_cwd_and_the_baseline(stores, tmp_path) -> None:
    result = _distill(stores, tmp_path / "r", "--variant", "none", "--loss", "cwd",
                      "--kd-pixels", "correct")  # fmt: skip
    assert result.exit_code != 0
    assert (
        "--kd-pixels correct masks the pixel-wise KD term: use it with --loss kd" in result.output
    )
    assert "--kd-pixels correct needs a --variant other than 'none'" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "r").exists()


def test_train_fraction_draws_only_from_a_nested_stratified_subset(stores, tmp_path) -> None:
    from stages.distill.stage import _train_subset

    data, labels = stores
    store = open_dataset_store(data)
    subsets = {}
    for fraction in (0.25, 0.5, 1.0):
        cfg = DistillConfig(labels=str(labels), out=Path("r"), val_fraction=0.25, batch_size=4,
                            steps_per_epoch=5, epochs=2, train_fraction=fraction)  # fmt: skip
        keep, val = _val_split(cfg, store)
        sub = _train_subset(cfg, store, keep)
        assert np.isin(sub, keep).all() and not np.isin(sub, val).any()
        drawn = np.concatenate([b for epoch in range(2) for b in _plan(cfg, store, sub)(epoch)])
        assert np.isin(drawn, sub).all()
        subsets[fraction] = sub
    assert len(subsets[0.25]) == round(len(subsets[1.0]) * 0.25)  # one stratum (no empty mask)
    assert np.isin(subsets[0.25], subsets[0.5]).all() and np.isin(subsets[0.5], subsets[1.0]).all()
    result = _distill(stores, tmp_path / "r", "--train-fraction", 0)
    assert result.exit_code != 0 and "--train-fraction" in result.output


@pytest.mark.parametrize("loss", ["dkd", "dist"])
def test_dkd_and_dist_train_from_the_store(stores, tmp_path, loss: str) -> None:
    out = tmp_path / loss
    result = _distill(stores, out, "--epochs", 2, "--steps-per-epoch", 2, "--variant", "teacher",
                      "--loss", loss, "--allow-weak-teacher")  # fmt: skip
    assert result.exit_code == 0, result.output
    m = json.loads((out / "metrics.json").read_text())
    assert m["config"]["loss"] == loss and 0.0 <= m["dice"] <= 1.0
    with open(out / "curve.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert all(float(r[loss]) >= 0 for r in rows)  # the term is logged under its name


def test_block_shuffle_trains_paired_and_reads_window_by_window(stores, tmp_path, monkeypatch):
    """--shuffle block: the variants of a seed share the batches (digest), and the loader
    reads one window (group of batches) per item, as contiguous runs."""
    from stages.distill import loader

    items: list[int] = []
    real = loader.StoreBatches._read_group
    monkeypatch.setattr(
        loader.StoreBatches, "_read_group", lambda self, b: items.append(len(b)) or real(self, b)
    )
    block = ("--shuffle", "block", "--shuffle-block", 4, "--shuffle-window", 2,
             "--epochs", 1, "--steps-per-epoch", 6, "--allow-weak-teacher")  # fmt: skip
    metrics = []
    for variant in ("none", "plc"):
        result = _distill(stores, tmp_path / variant, "--variant", variant, *block)
        assert result.exit_code == 0, result.output
        metrics.append(json.loads((tmp_path / variant / "metrics.json").read_text()))
    assert metrics[0]["batches_sha256"] == metrics[1]["batches_sha256"]
    assert items == [2, 2, 2] * 2  # windows of 8 images = 2 batches of 4, per run
    full = _distill(stores, tmp_path / "full", "--variant", "none", "--epochs", 1,
                    "--steps-per-epoch", 6, "--allow-weak-teacher")  # fmt: skip
    assert full.exit_code == 0, full.output
    digest = json.loads((tmp_path / "full" / "metrics.json").read_text())["batches_sha256"]
    assert digest != metrics[0]["batches_sha256"]  # another order, recorded as such


def test_block_shuffle_needs_uniform_steps(stores, tmp_path) -> None:
    result = _distill(stores, tmp_path / "r", "--shuffle", "block", "--steps-per-epoch", 0)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "--shuffle block draws uniformly in fixed steps" in result.output
    assert not (tmp_path / "r").exists()
