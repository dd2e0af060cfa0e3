"""Golden end-to-end test: every `plc` command through Typer's CliRunner on tiny synthetic data.

The chain is built once per module (a few tiny images, tiny networks, few steps) and each test
checks outputs, not just exit codes.
"""

from __future__ import annotations

import csv
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from precompute_inputs import plc
from typer.testing import CliRunner

from pipeline.variants import NAMES, NO_KD
from pipeline.variants import VARIANTS as TABLE
from stages.cli import app

VARIANTS = (NO_KD, *NAMES)  # the variant table's rows and the student alone
CASCADE = tuple(v.name for v in TABLE if v.symbol)  # Y^I, Y^F, Y^B, Y^U
EPOCH = "1700000000"
runner = CliRunner()


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("golden")
    p = {
        "data": root / "data" / "g.zarr",
        "teacher": root / "models" / "teacher.pt",
        "fp": root / "models" / "assistant_fp.pt",
        "bd": root / "models" / "assistant_bd.pt",
        "labels": root / "labels" / "g.zarr",
        "runs": root / "runs",
        "report": root / "reports" / "g.md",
        "panel": root / "reports" / "panel.png",
        "root": root,
    }
    # recipe (issue 9): a few fixed steps per epoch, val curve; the tiny nets stay weak
    recipe = ("--steps-per-epoch", 4, "--val-fraction", 0.25, "--allow-weak-teacher")
    common = ("--no-progress", "--device", "cpu", *recipe)
    plc(
        "prepare",
        "--dataset",
        "synthetic",
        "--out",
        p["data"],
        "--size",
        32,
        "--count",
        20,
        "--seed",
        3,
        "--no-progress",
    )
    team = (
        "--dataset",
        "g",
        "--data",
        p["data"],
        "--model",
        "transunet-tiny",
        "--epochs",
        2,
        "--batch-size",
        4,
        *common,
    )
    plc("train-teacher", *team, "--out", p["teacher"])
    plc(
        "train-assistant",
        *team,
        "--kind",
        "false-pixel",
        "--teacher",
        p["teacher"],
        "--out",
        p["fp"],
        "--fig-queue-len",
        32,
        "--fig-pixels-per-image",
        8,
    )
    plc(
        "train-assistant",
        *team,
        "--kind",
        "boundary",
        "--teacher",
        p["teacher"],
        "--out",
        p["bd"],
        "--bt-delta",
        2,
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SOURCE_DATE_EPOCH", EPOCH)  # pins the store's creation time
        _precompute(p, p["labels"])
    for v in VARIANTS:
        plc(
            "distill",
            "--labels",
            p["labels"],
            "--out",
            p["runs"] / v,
            "--variant",
            v,
            "--student",
            "unet-tiny",
            "--epochs",
            1,
            "--batch-size",
            4,
            *common,
        )
    plc(
        "report",
        "--runs",
        p["runs"],
        "--out",
        p["report"],
        "--labels",
        p["labels"],
        "--teacher-metrics",
        p["teacher"].with_suffix(".metrics.json"),
    )
    plc("inspect", p["labels"], "--image", "0", "--out", p["panel"])
    return p


def _precompute(p: dict[str, Path], out: Path, *extra: object) -> str:
    return plc(
        "precompute", "--dataset", "g", "--data", p["data"], "--teacher", p["teacher"],
        "--assistant-fp", p["fp"], "--assistant-bd", p["bd"], "--out", out,
        "--shard-size", 8, "--batch-size", 4, "--no-progress", "--device", "cpu", *extra,
    )  # fmt: skip


def _train_masks(chain: dict[str, Path]) -> np.ndarray:
    from storage_schema import open_dataset_store

    store = open_dataset_store(chain["data"])
    return np.asarray(store.masks.get_orthogonal_selection((store.indices("train"),)))


def test_plc_variant_decodes_all_correct(chain: dict[str, Path]) -> None:
    from storage_schema import open_label_store

    labels = open_label_store(chain["labels"])
    decoded = labels.read("plc", slice(None))  # (N, C, H, W)
    assert decoded.shape[0] == len(labels) == _train_masks(chain).shape[0]
    np.testing.assert_array_equal(decoded.argmax(1), _train_masks(chain))


def test_false_pixels_non_increasing_along_cascade(chain: dict[str, Path]) -> None:
    from storage_schema import open_label_store

    labels = open_label_store(chain["labels"])
    masks = _train_masks(chain)
    counts = []
    for v in CASCADE:
        recount = (labels.read(v, slice(None)).argmax(1) != masks).reshape(len(masks), -1).sum(1)
        np.testing.assert_array_equal(recount, labels.stat(f"false_pixels_{v}"))
        counts.append(recount)
    for before, after in itertools.pairwise(counts):
        assert (after <= before).all()
    assert counts[-1].sum() == 0
    assert counts[0].sum() > 0, (
        "the tiny teacher should make some mistakes for this test to mean much"
    )


def test_report_has_a_row_per_variant(chain: dict[str, Path]) -> None:
    text = chain["report"].read_text()
    for label in (
        "Student alone",
        "T (vanilla KD)",
        "T + SC",
        "T + TA_f |",
        "T + TA_b |",
        "T + TA_f + TA_b |",
        "PLC-KD",
        "Teacher T",
    ):
        assert label in text, f"missing row {label!r} in\n{text}"
    assert "Label quality" in text
    # what the assistants trained on, recorded by train-assistant
    assert "TA_f's false-pixel queues at the end of its training (FIG):" in text
    assert "TA_b's boundary bands on the train masks (BT, at its δ):" in text
    assert "Not recorded for" not in text


def test_report_finds_the_teacher_metrics_through_the_label_store(
    chain: dict[str, Path], tmp_path: Path
) -> None:
    """Without --teacher-metrics, the teacher row and the gap come from the metrics beside the
    teacher checkpoint that the label store's provenance names; when there are none, the
    report says so."""
    out = tmp_path / "r.md"
    plc("report", "--runs", chain["runs"], "--out", out, "--labels", chain["labels"])
    text = out.read_text()
    assert "Teacher metrics: found beside the teacher checkpoint" in text
    assert str(chain["teacher"].with_suffix(".metrics.json")) in text
    with_flag = chain["report"].read_text()
    for line in ("Teacher T", "Teacher − student alone"):
        mine = [x for x in text.splitlines() if x.startswith(f"| {line}") or x.startswith(line)]
        theirs = [
            x for x in with_flag.splitlines() if x.startswith(f"| {line}") or x.startswith(line)
        ]
        assert mine == theirs and mine, line  # the same rows as with the flag
    metrics = chain["teacher"].with_suffix(".metrics.json")
    moved = metrics.with_name("moved.json")
    metrics.rename(moved)
    try:
        plc("report", "--runs", chain["runs"], "--out", out, "--labels", chain["labels"])
    finally:
        moved.rename(metrics)
    text = out.read_text()
    assert f"No teacher metrics found ({metrics})" in text and "pass --teacher-metrics" in text
    assert "| Teacher T" not in text


def test_bt_bands_of_an_older_checkpoint_are_recomputed_as_recorded(
    chain: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A TA_b checkpoint without diagnostics (trained before they were recorded): the report
    recomputes its bands from the options it recorded, equal to what training records."""
    from pipeline import checkpoint
    from stages.report.labels import team_lines
    from stages.train.assistant import recompute_bt_bands

    meta = checkpoint.load_checkpoint(chain["bd"])
    recorded = meta["extra"]["diagnostics"]["bt_bands"]
    assert recorded and recompute_bt_bands(meta["config"]) == recorded
    other = {**meta["config"], "manifest_sha256": "0" * 64}  # a store it did not train on
    with pytest.raises(ValueError, match="is not the dataset store the assistant trained on"):
        recompute_bt_bands(other)
    load = checkpoint.load_checkpoint

    def older(path):
        old = load(path)
        old["extra"].pop("diagnostics", None)
        return old

    monkeypatch.setattr(checkpoint, "load_checkpoint", older)
    lines = team_lines([chain["labels"]])
    rows = [line for line in lines if line.startswith("| – | lesion |")]
    assert len(rows) == 1 and "TA_b's boundary bands on the train masks (BT, at its δ):" in lines
    assert any(
        line.startswith("The bands of assistant_bd (fold –) were recomputed") for line in lines
    )
    assert lines[-1].startswith("Not recorded for assistant_fp (fold –):")  # FIG: not recomputable


def test_distill_outputs(chain: dict[str, Path]) -> None:
    for v in VARIANTS:
        run = chain["runs"] / v
        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics["config"]["variant"] == v
        assert 0.0 <= metrics["dice"] <= 1.0 and 0.0 <= metrics["iou"] <= metrics["dice"] + 1e-9
        assert (run / "student.pt").stat().st_size > 0
        with open(run / "curve.csv") as f:
            curve = list(csv.DictReader(f))
        assert [row["epoch"] for row in curve] == ["0"]  # one epoch was trained
        assert float(curve[0]["loss"]) > 0 and ("kd" in curve[0]) == (v != "none")
        rows = (run / "metrics_per_image.csv").read_text().strip().splitlines()
        assert len(rows) - 1 == metrics["n_images"]


def test_inspect_panel_is_an_image(chain: dict[str, Path]) -> None:
    import cv2

    img = cv2.imread(str(chain["panel"]))
    assert img is not None and img.shape[0] > 100 and img.shape[1] > 8 * 100


def test_verify_accepts_both_stores(chain: dict[str, Path]) -> None:
    assert "label" in plc("verify", chain["labels"]).lower()
    assert "dataset" in plc("verify", chain["data"]).lower()


def test_same_seed_gives_byte_identical_label_store(
    chain: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", EPOCH)
    again = tmp_path / "again.zarr"
    _precompute(chain, again)

    a, b = _store_files(chain["labels"]), _store_files(again)
    assert a.keys() == b.keys()
    differing = [k for k in a if a[k] != b[k] and k != "zarr.json"]
    assert not differing, differing
    meta_a, meta_b = json.loads(a["zarr.json"]), json.loads(b["zarr.json"])
    meta_a["attributes"]["provenance"].pop("precompute")  # holds the output path only
    meta_b["attributes"]["provenance"].pop("precompute")
    assert meta_a == meta_b


def test_distill_refuses_store_of_another_manifest(chain: dict[str, Path], tmp_path: Path) -> None:
    from storage_schema import open_dataset_store, open_label_store

    other = tmp_path / "other.zarr"
    plc(
        "prepare",
        "--dataset",
        "synthetic",
        "--out",
        other,
        "--size",
        32,
        "--count",
        20,
        "--seed",
        4,
        "--no-progress",
    )
    result = runner.invoke(
        app,
        [
            "distill",
            "--labels",
            str(chain["labels"]),
            "--data",
            str(other),
            "--out",
            str(tmp_path / "run"),
            "--student",
            "unet-tiny",
            "--epochs",
            "1",
            "--no-progress",
        ],
    )
    assert result.exit_code == 1
    theirs = open_dataset_store(other).manifest_sha256[:12]
    ours = open_label_store(chain["labels"]).manifest_sha256[:12]
    assert theirs in result.output and ours in result.output
    assert not (tmp_path / "run").exists()


def test_live_labels_match_stored_within_encoding_error(chain: dict[str, Path]) -> None:
    import torch

    from stages.data import load_split
    from stages.distill.live import LiveLabels
    from stages.distill.loader import StoreBatches, StoreSource, decode_codes
    from storage_schema import open_dataset_store, open_label_store

    labels = open_label_store(chain["labels"])
    store = open_dataset_store(chain["data"])
    train = load_split(store, "train")
    idx = torch.arange(len(train))
    images, masks = train.batch(idx, torch.device("cpu"))
    for variant in ("teacher", "teacher_fa_ba", "plc"):
        live = LiveLabels(labels, variant, train, torch.device("cpu"))(idx, images, masks)
        source = StoreSource(
            str(chain["data"]), store.indices("train"), str(chain["labels"]), variant
        )
        stored = decode_codes(StoreBatches(source)[idx.numpy()].codes)  # what distill reads
        assert (live.exp() - stored.exp()).abs().max() < 0.05
        assert torch.equal(live.argmax(1), stored.argmax(1))


def test_missing_prerequisite_names_the_command(chain: dict[str, Path], tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        [
            "precompute",
            "--dataset",
            "g",
            "--data",
            str(chain["data"]),
            "--teacher",
            str(tmp_path / "nope.pt"),
            "--no-progress",
        ],
    )
    assert result.exit_code == 1
    assert "plc train-teacher --dataset g" in result.output


def _store_files(root: Path) -> dict[str, bytes]:
    return {
        str(f.relative_to(root)): f.read_bytes() for f in sorted(root.rglob("*")) if f.is_file()
    }


def test_dask_workers_write_the_same_store(
    chain: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", EPOCH)
    scaled = tmp_path / "dask.zarr"
    _precompute(chain, scaled, "--workers", 2)
    a, b = _store_files(chain["labels"]), _store_files(scaled)
    assert a.keys() == b.keys()
    assert [k for k in a if a[k] != b[k] and k != "zarr.json"] == []


def test_evaluate_any_checkpoint_on_any_split(chain: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "teacher_train.json"
    plc("evaluate", "--checkpoint", chain["teacher"], "--data", chain["data"], "--split", "train",
        "--out", out, "--device", "cpu")  # fmt: skip
    metrics = json.loads(out.read_text())
    assert metrics["split"] == "train" and metrics["n_images"] == len(_train_masks(chain))
    assert 0.0 <= metrics["iou"] <= metrics["dice"] <= 1.0
    rows = (tmp_path / "teacher_train_per_image.csv").read_text().strip().splitlines()
    assert len(rows) == metrics["n_images"] + 1


def test_models_lists_the_registry() -> None:
    text = plc("models")
    for name, params in (("transunet", "105,276,066"), ("unet", "31,037,698")):
        assert name in text and params in text


def test_unknown_variant_is_refused_with_the_choices(
    chain: dict[str, Path], tmp_path: Path
) -> None:
    result = runner.invoke(app, ["distill", "--labels", str(chain["labels"]), "--variant", "best",
                                 "--out", str(tmp_path / "r"), "--no-progress"])  # fmt: skip
    assert result.exit_code == 1
    from pipeline.variants import DISTILL_CHOICES

    assert f"--variant must be one of {', '.join(DISTILL_CHOICES)}; got 'best'." in result.output
