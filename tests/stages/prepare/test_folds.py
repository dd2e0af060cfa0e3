"""Cross-validation folds: assignment, the manifest column, --fold through every stage, pairing."""

from __future__ import annotations

import json
import pickle
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from stages.cli import app
from stages.prepare.folds import assign_folds

runner = CliRunner()


def plc(*args: object, ok: bool = True) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    if ok:
        assert result.exit_code == 0, f"plc {' '.join(map(str, args))} failed:\n{result.output}"
    else:
        assert result.exit_code == 1, result.output
        assert "Traceback" not in result.output
    return result.output


# --------------------------------------------------------------------------- assignment


@pytest.mark.parametrize(("n_full", "n_empty", "k"), [(10, 0, 5), (17, 6, 5), (3, 4, 2), (5, 5, 3)])
def test_folds_are_balanced_overall_and_per_stratum(n_full: int, n_empty: int, k: int) -> None:
    rng = np.random.default_rng(0)
    empty = rng.permutation([False] * n_full + [True] * n_empty).tolist()
    folds = assign_folds(empty, k, seed=7)
    assert len(folds) == len(empty) and set(folds) <= set(range(k))
    sizes = Counter(folds)
    assert max(sizes.values()) - min(sizes.get(f, 0) for f in range(k)) <= 1
    for stratum in (False, True):
        per = Counter(f for f, e in zip(folds, empty, strict=True) if e == stratum)
        counts = [per.get(f, 0) for f in range(k)]
        assert max(counts) - min(counts) <= 1, (stratum, counts)


def test_folds_depend_on_the_seed_only() -> None:
    empty = [i % 3 == 0 for i in range(30)]
    assert assign_folds(empty, 5, 1) == assign_folds(empty, 5, 1)
    assert assign_folds(empty, 5, 1) != assign_folds(empty, 5, 2)


@pytest.mark.parametrize("k", [1, 4])
def test_fold_count_out_of_range_is_one_sentence(k: int) -> None:
    with pytest.raises(
        ValueError, match=r"--folds must be between 2 and the number of images \(3\)"
    ):
        assign_folds([False, False, True], k, 0)


# --------------------------------------------------------------------------- manifest column


def _records(n: int, folds: list[int] | None = None) -> list[dict]:
    recs = []
    for i in range(n):
        rec = {
            "id": f"im{i}", "split": "train", "image_path": f"i/{i}.png", "mask_path": None,
            "orig_height": 8, "orig_width": 8, "image_sha256": "a" * 64, "mask_sha256": None,
            "fg_fraction": 0.0, "empty_mask": True, "flags": "empty_mask",
        }  # fmt: skip
        if folds is not None:
            rec["fold"] = folds[i]
        recs.append(rec)
    return recs


def test_manifest_fold_column_is_optional_and_hashed() -> None:
    from storage_schema import StoreError, build_manifest, manifest_sha256
    from storage_schema.manifest import manifest_folds

    plain = build_manifest(_records(3))
    assert "fold" not in plain.column_names and manifest_folds(plain) is None
    with_folds = build_manifest(_records(3, [0, 1, 0]))
    assert with_folds.column_names[-1] == "fold" and manifest_folds(with_folds) == [0, 1, 0]
    other = build_manifest(_records(3, [1, 1, 0]))
    assert len({manifest_sha256(t) for t in (plain, with_folds, other)}) == 3
    # a manifest without folds keeps the hash it had before the column existed
    base_only = with_folds.drop_columns(["fold"])
    assert manifest_sha256(base_only) == manifest_sha256(plain)
    with pytest.raises(StoreError, match=r"record 1 \(id 'im1'\): field 'fold' is missing"):
        build_manifest([_records(1, [0])[0], _records(2)[1]])
    with pytest.raises(StoreError, match="field 'fold' must be a non-negative int"):
        build_manifest(_records(2, [0, -1]))


# --------------------------------------------------------------------------- prepare + views


@pytest.fixture(scope="module")
def folded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("folds")
    data = root / "data" / "f.zarr"
    plc("prepare", "--dataset", "synthetic", "--out", data, "--size", 32, "--count", 18,
        "--seed", 2, "--folds", 3, "--no-progress")  # fmt: skip
    return root


def test_prepare_writes_a_fold_per_image_and_views_partition_the_images(folded: Path) -> None:
    from stages.data import open_store

    store = open_store(folded / "data" / "f.zarr")
    folds = store.folds()
    assert folds is not None and sorted(Counter(folds.tolist()).values()) == [6, 6, 6]
    assert store.attrs["source"]["folds"] == {"k": 3, "seed": 2, "stratified": "empty_mask"}
    tests = []
    for f in range(3):
        view = open_store(folded / "data" / "f.zarr", f)
        test, train = view.indices("test"), view.indices("train")
        assert set(test.tolist()) == set(np.flatnonzero(folds == f).tolist())
        assert set(train.tolist()) == set(range(18)) - set(test.tolist())
        assert len(view.indices("val")) == 0
        again = pickle.loads(pickle.dumps(view))  # a worker's reopened store keeps the view
        assert again.fold == f and again.indices("test").tolist() == test.tolist()
        tests += test.tolist()
    assert sorted(tests) == list(range(18))


def test_prepare_is_a_noop_with_the_same_folds_and_refuses_other_folds(folded: Path) -> None:
    data = folded / "data" / "f.zarr"
    args = ("prepare", "--dataset", "synthetic", "--out", data, "--size", 32, "--count", 18,
            "--seed", 2, "--no-progress")  # fmt: skip
    before = (data / "manifest.parquet").stat().st_mtime_ns
    plc(*args, "--folds", 3)
    assert (data / "manifest.parquet").stat().st_mtime_ns == before
    out = plc(*args, "--folds", 3, "--fold-seed", 9, ok=False)
    assert "different config (changed: fold_seed)" in out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--folds", 1), "--folds must be 0 (no folds) or at least 2, got 1."),
        (("--fold-seed", 3), "--fold-seed needs --folds K (K >= 2)."),
        (("--count", 3, "--folds", 5), "--folds must be between 2 and the number of images (3)"),
    ],
)
def test_prepare_refuses_bad_fold_options(tmp_path: Path, extra: tuple, message: str) -> None:
    out = plc("prepare", "--dataset", "synthetic", "--out", tmp_path / "x.zarr", "--size", 32,
              "--no-progress", *extra, ok=False)  # fmt: skip
    assert message in " ".join(out.split())
    assert not (tmp_path / "x.zarr").exists()


def test_fold_on_a_store_without_folds_is_refused_in_one_sentence(tmp_path: Path) -> None:
    data = tmp_path / "plain.zarr"
    plc("prepare", "--dataset", "synthetic", "--out", data, "--size", 32, "--count", 8,
        "--no-progress")  # fmt: skip
    out = plc("train-teacher", "--dataset", "plain", "--data", data, "--fold", 0, "--model",
              "unet-tiny", "--epochs", 1, "--no-progress", ok=False)  # fmt: skip
    assert "--fold 0 needs a dataset store with folds" in " ".join(out.split())
    assert "prepare it with `plc prepare ... --folds K`" in " ".join(out.split())
    out = plc("evaluate", "--checkpoint", tmp_path / "none.pt", "--data", data, "--fold", 1,
              ok=False)  # fmt: skip
    assert "error:" in out


def test_fold_out_of_range_is_refused(folded: Path) -> None:
    out = plc("train-teacher", "--dataset", "f", "--data", folded / "data" / "f.zarr",
              "--fold", 3, "--model", "unet-tiny", "--epochs", 1, "--no-progress", ok=False)  # fmt: skip
    assert "--fold 3 is out of range" in " ".join(out.split())


# --------------------------------------------------------------------------- the fold chain


@pytest.fixture(scope="module")
def chain(folded: Path) -> Path:
    """Team, labels and two students of fold 1, at the conventional fold paths (cwd = root)."""
    mp = pytest.MonkeyPatch()
    mp.chdir(folded)
    quick = ("--epochs", 2, "--steps-per-epoch", 4, "--batch-size", 4, "--device", "cpu",
             "--allow-weak-teacher", "--no-progress")  # fmt: skip
    team = ("--dataset", "f", "--fold", 1, "--model", "transunet-tiny", *quick)
    try:
        plc("train-teacher", *team)
        plc("train-assistant", *team, "--kind", "false-pixel", "--fig-queue-len", 32,
            "--fig-pixels-per-image", 8)  # fmt: skip
        plc("train-assistant", *team, "--kind", "boundary", "--bt-delta", 2)
        plc("precompute", "--dataset", "f", "--fold", 1, "--device", "cpu", "--no-progress")
        for variant, seed in (("none", 0), ("teacher", 0), ("plc", 0), ("plc", 1)):
            plc("distill", "--labels", "labels/f-fold1.zarr", "--fold", 1, "--variant", variant,
                "--seed", seed, "--out", f"runs/f/fold1/{variant}-s{seed}", "--student",
                "unet-tiny", "--num-workers", 0, *quick)  # fmt: skip
    finally:
        mp.undo()
    return folded


def test_fold_artifacts_live_at_fold_paths_and_never_see_the_test_fold(chain: Path) -> None:
    from stages.data import open_store
    from storage_schema import open_label_store

    for name in ("teacher.pt", "assistant_fp.pt", "assistant_bd.pt"):
        assert (chain / "models" / "f" / "fold1" / name).is_file()
    assert not (chain / "models" / "f" / "teacher.pt").exists()
    view = open_store(chain / "data" / "f.zarr", 1)
    ids = view.ids()
    labels = open_label_store(chain / "labels" / "f-fold1.zarr")
    assert list(labels.ids) == [ids[i] for i in view.indices("train")]
    assert labels.provenance["fold"] == 1
    test_ids = {ids[i] for i in view.indices("test")}
    assert not test_ids & set(labels.ids)
    teacher = json.loads((chain / "models" / "f" / "fold1" / "teacher.metrics.json").read_text())
    assert teacher["n_images"] == len(test_ids)
    student = json.loads((chain / "runs/f/fold1/plc-s0/metrics.json").read_text())
    assert {row["id"] for row in _per_image(chain / "runs/f/fold1/plc-s0")} == test_ids
    assert student["config"]["fold"] == 1


def _per_image(run: Path) -> list[dict]:
    import csv

    with open(run / "metrics_per_image.csv") as f:
        return list(csv.DictReader(f))


def test_variants_of_a_fold_and_seed_share_init_and_batch_order(chain: Path) -> None:
    from stages.distill.pairing import pairing_problems

    runs = {
        name: json.loads((chain / "runs/f/fold1" / name / "metrics.json").read_text())
        for name in ("none-s0", "teacher-s0", "plc-s0", "plc-s1")
    }
    same = [runs[n] for n in ("none-s0", "teacher-s0", "plc-s0")]
    assert len({r["init_sha256"] for r in same}) == 1
    assert len({r["batches_sha256"] for r in same}) == 1
    assert runs["plc-s1"]["init_sha256"] != runs["plc-s0"]["init_sha256"]
    assert runs["plc-s1"]["batches_sha256"] != runs["plc-s0"]["batches_sha256"]
    assert pairing_problems(list(runs.values())) == []
    broken = dict(runs["teacher-s0"], init_sha256="0" * 64)
    (problem,) = pairing_problems([runs["none-s0"], broken])
    assert problem.startswith("fold 1, seed 0: the variants do not share their initial weights")


def test_distill_refuses_labels_of_another_fold(chain: Path) -> None:
    out = plc("distill", "--labels", chain / "labels" / "f-fold1.zarr", "--fold", 0,
              "--variant", "plc", "--out", chain / "runs" / "bad", "--student", "unet-tiny",
              "--epochs", 1, "--no-progress", ok=False)  # fmt: skip
    assert "was computed for --fold 1, not --fold 0" in " ".join(out.split())
    out = plc("distill", "--labels", chain / "labels" / "f-fold1.zarr", "--variant", "plc",
              "--out", chain / "runs" / "bad", "--student", "unet-tiny", "--epochs", 1,
              "--no-progress", ok=False)  # fmt: skip
    assert "was computed for --fold 1, not no --fold" in " ".join(out.split())
    assert not (chain / "runs" / "bad").exists()


def test_evaluate_with_a_fold_uses_that_folds_test_images(chain: Path) -> None:
    out = chain / "eval.json"
    plc("evaluate", "--checkpoint", chain / "runs/f/fold1/plc-s0/student.pt", "--data",
        chain / "data" / "f.zarr", "--fold", 1, "--out", out, "--device", "cpu")  # fmt: skip
    metrics = json.loads(out.read_text())
    student = json.loads((chain / "runs/f/fold1/plc-s0/metrics.json").read_text())
    assert metrics["fold"] == 1 and metrics["n_images"] == 6
    assert metrics["dice"] == pytest.approx(student["dice"])
