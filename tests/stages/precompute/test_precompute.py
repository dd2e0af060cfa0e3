"""Precompute end to end on seeded random-init nets: stored content pinned, resume, cluster.

``GOLDEN`` was computed with the precompute code as it stood BEFORE the variant table, the
batch-vectorised SC and the writer queue (commit 9d85a9a), on this fixture (CPU, torch 2.13):
those changes must not move a single stored code or statistic.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from precompute_inputs import (
    EPOCH,
    SLOW_PLC,
    content_digest,
    make_inputs,
    plc,
    precompute_args,
    same_store,
)

GOLDEN = {
    "ids": "a93f319b5aa2865f9048b9b34277f91ec32cf2a3f3b4fbf93cc41cdcdb05548b",
    "done": "937e3ee177ea363e5076a0196bf7bfcbbfc6316a519b4b042cff1f1529584334",
    "soft/teacher": "68f415b6fe8e0b827b0c04f776bce758b2c6e2a9ce3dd1c66fa55eccf6a29095",
    "soft/teacher_sc": "81046a6b6b0c2e8fea1497e2ca481bd2aac803709723eb510deeef7eefb06caf",
    "soft/teacher_fa": "88d9cf2ab37fb2f1d86abd2c463594e090aab138a954af4db49d99d7fe38ca14",
    "soft/teacher_ba": "8f56dc9ba9cc8782e31facfeed443cfb14cf6f5b70eafa262549fc1697a59c7b",
    "soft/teacher_fa_ba": "28f8a35f6e3cb112aa22e4fc4491a9bc99bc6076bf984c81ed156323b7385032",
    "soft/plc": "28080c6d4b0bf1d377fc350b94f54e83369e4ea37480089244b48099204dd579",
    "stats/false_pixels_teacher": "5d0b437069f77c0736e29f5e5ee3de410b5cda27758933b8af12c65c7fb3210b",
    "stats/false_pixels_teacher_sc": "85ada57e1f601e962d705f389285adb4e74f450bc00672240dfef7399d82457f",
    "stats/false_pixels_teacher_fa": "45159c1ca1b0709e2dc5cd5824cffec53c73f5d6500f015c6dce87e99acda786",
    "stats/false_pixels_teacher_ba": "7905643fe153c15ed5d706ddba46c1816fd29580a198a8dfd85d2a295f031efb",
    "stats/false_pixels_teacher_fa_ba": "4d5e14458d722c1f8584203fb0746bbac1bc2f24335850413ec0cfc7459a9041",
    "stats/false_pixels_plc": "85ada57e1f601e962d705f389285adb4e74f450bc00672240dfef7399d82457f",
    "stats/dice_teacher": "867c8275d0d70a68127bd80f1d2dbb5569f47561dc2e02e13482bc307f150feb",
    "stats/dice_teacher_sc": "d20586dd2d957ecf2d87138e60f533dcfc7693f39426018bdb770d7ba72ded85",
    "stats/dice_teacher_fa": "799a5891d400e01d316aaaf03167d47374ae43db6c3a8a032eb009c31d7441d2",
    "stats/dice_teacher_ba": "7e87595a118f70603e12aa6ad48745896c63f0e06568416737abd0a3e89b194b",
    "stats/dice_teacher_fa_ba": "d70ccfe66326e452f7e4131eed96eac5409480a4625d929db368b5d69de9fb15",
    "stats/dice_plc": "d20586dd2d957ecf2d87138e60f533dcfc7693f39426018bdb770d7ba72ded85",
    "stats/sc_in_image_teacher_sc": "b1b9ee0dbc848443a8ac032f303fdc6d975637431f3d6136dcc92075ddb0685c",
    "stats/sc_bank_teacher_sc": "802a35a707522fee0c354f8827345fa28cde6cb7fdf423521242b4e038d2fc2f",
    "stats/sc_onehot_teacher_sc": "85ada57e1f601e962d705f389285adb4e74f450bc00672240dfef7399d82457f",
    "stats/sc_in_image_plc": "4d5e14458d722c1f8584203fb0746bbac1bc2f24335850413ec0cfc7459a9041",
    "stats/sc_bank_plc": "85ada57e1f601e962d705f389285adb4e74f450bc00672240dfef7399d82457f",
    "stats/sc_onehot_plc": "85ada57e1f601e962d705f389285adb4e74f450bc00672240dfef7399d82457f",
}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_inputs(tmp_path_factory.mktemp("precompute"))


@pytest.fixture(scope="module")
def store(inputs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("labels") / "g.zarr"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SOURCE_DATE_EPOCH", EPOCH)
        plc(*precompute_args(inputs, out))
    return out


def test_stored_content_unchanged_from_the_pre_change_code(store: Path) -> None:
    digest = content_digest(
        store, variants=tuple(k.split("/")[1] for k in GOLDEN if k.startswith("soft/"))
    )
    differing = sorted(k for k in GOLDEN if digest.get(k) != GOLDEN[k])
    assert not differing, f"stored arrays changed: {differing}"


@pytest.fixture(scope="module")
def store4(inputs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same 19 train images in five shards of 4 (the last one short)."""
    out = tmp_path_factory.mktemp("labels4") / "g.zarr"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SOURCE_DATE_EPOCH", EPOCH)
        plc(*precompute_args(inputs, out, shard_size=4))
    return out


def _kill_after_first_shard(args: list[str], tmp: Path) -> None:
    """Run plc (shard writes slowed) in a subprocess; SIGKILL it once shard 0 is marked done."""
    import os
    import signal
    import subprocess
    import sys
    import time

    env = os.environ | {"SOURCE_DATE_EPOCH": EPOCH}
    proc = subprocess.Popen([sys.executable, "-c", SLOW_PLC, *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    try:
        deadline = time.monotonic() + 120  # a few seconds on an idle machine
        while not (tmp / "done" / "c" / "0").exists():
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "no shard was written within 120 s"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=30)
        proc.stderr.close()


@pytest.mark.slow
def test_resume_after_sigkill_computes_only_pending_shards_and_is_byte_identical(
    inputs: dict[str, Path], store4: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from stages.cli import app
    from stages.precompute import shard
    from storage_schema import LabelStoreWriter, StoreError, open_label_store

    out = tmp_path / "g.zarr"
    tmp = tmp_path / "g.zarr.writing"
    args = precompute_args(inputs, out, shard_size=4)
    _kill_after_first_shard(args, tmp)
    assert not out.exists()
    with pytest.raises(StoreError, match=r"was not finished .*--resume continues it"):
        open_label_store(out)
    pending = LabelStoreWriter.open(tmp).pending_shards()
    n_all = len(LabelStoreWriter.open(tmp).shard_bounds())
    assert 0 < len(pending) < n_all == 5

    runner = CliRunner()
    changed = runner.invoke(app, [*args, "--resume", "--gt-smoothing", "0.2"])
    assert changed.exit_code == 1
    assert (
        "its provenance field 'precompute.gt_smoothing' is 0.1 but this run has 0.2"
        in changed.output
    )

    scanned, finished = [], []
    scan, finish = shard.PrecomputeWorker.scan, shard.PrecomputeWorker.finish
    monkeypatch.setattr(shard.PrecomputeWorker, "scan",
                        lambda self, job: scanned.append(job.start) or scan(self, job))  # fmt: skip
    monkeypatch.setattr(shard.PrecomputeWorker, "finish",
                        lambda self, job, s, q: finished.append(job.start) or finish(self, job, s, q))  # fmt: skip
    monkeypatch.setenv("SOURCE_DATE_EPOCH", EPOCH)
    resumed = runner.invoke(app, [*args, "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert sorted(scanned) == sorted(finished) == [a for a, _ in pending]
    assert same_store(out, store4) == []


def test_resume_without_an_interrupted_run_says_so(inputs: dict[str, Path], tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from stages.cli import app

    result = CliRunner().invoke(app, [*precompute_args(inputs, tmp_path / "x.zarr"), "--resume"])
    assert result.exit_code == 1
    assert "--resume: there is no interrupted run to continue" in result.output


def test_a_failed_write_surfaces_and_nothing_is_published(
    inputs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from stages.cli import app
    from storage_schema import LabelStoreWriter

    def broken(self, *args, **kwargs):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(LabelStoreWriter, "write_shard", broken)
    out = tmp_path / "g.zarr"
    result = CliRunner().invoke(app, precompute_args(inputs, out))
    assert result.exit_code != 0
    assert isinstance(result.exception, OSError) and "disk full" in str(result.exception)
    assert not out.exists() and (tmp_path / "g.zarr.writing").exists()


def test_controls_are_stored_and_decode_to_the_gt(store: Path, inputs: dict[str, Path]) -> None:
    import numpy as np

    from storage_schema import open_dataset_store, open_label_store

    labels = open_label_store(store)
    data = open_dataset_store(inputs["data"])
    masks = np.asarray(data.masks.get_orthogonal_selection((data.indices("train"),)))
    for name in ("gt", "gt_smooth"):
        decoded = np.exp(labels.read(name, slice(None)))  # (N, C, H, W)
        np.testing.assert_array_equal(decoded.argmax(1), masks)
        assert (labels.stat(f"false_pixels_{name}") == 0).all()
    smooth = np.exp(labels.read("gt_smooth", slice(None))).max(1)
    assert abs(float(smooth.mean()) - 0.9) < 0.01  # ε = 0.1 after int8 encoding
    hard = np.exp(labels.read("gt", slice(None))).max(1)
    assert hard.min() > 0.999


def test_live_labels_are_the_stored_ones(store: Path, inputs: dict[str, Path]) -> None:
    """LiveLabels runs the same table-driven functions: equal argmax, within int8 encoding."""
    import numpy as np
    import torch

    from stages.data import load_split
    from stages.distill.live import LiveLabels
    from storage_schema import open_dataset_store, open_label_store

    labels = open_label_store(store)
    train = load_split(open_dataset_store(inputs["data"]), "train")
    idx = torch.arange(len(train))
    images, masks = train.batch(idx, torch.device("cpu"))
    rows = ("teacher", "teacher_sc", "teacher_fa_ba", "plc", "gt_smooth", "teacher_swap",
            "plc_random", "plc_mean", "plc_confident", "plc_knn", "teacher_fa_ba_cal", "plc_cal")  # fmt: skip
    for variant in rows:
        live = LiveLabels(labels, variant, train, torch.device("cpu"))(idx, images, masks)
        stored = torch.from_numpy(np.asarray(labels.read(variant, slice(None))))
        assert torch.equal(live.argmax(1), stored.argmax(1)), variant
        assert (live.exp() - stored.exp()).abs().max() < 0.05, variant


def test_correction_rows_are_stored_all_correct_with_their_calibration(store: Path) -> None:
    """Issue 17's rows: stored beside the others, all-correct (re-checked on the decoded
    codes), and plc_cal's temperatures recorded in the provenance with what they were fit on."""
    import numpy as np

    from storage_schema import open_label_store

    labels = open_label_store(store)
    for name in ("teacher_swap", "plc_random", "plc_mean", "plc_confident", "plc_knn", "plc_cal"):
        assert name in labels.variants
        assert (labels.stat(f"false_pixels_{name}") == 0).all(), name
        base = {"teacher_swap": "teacher", "plc_cal": "teacher_fa_ba_cal"}.get(
            name, "teacher_fa_ba"
        )
        kinds = ("in_image", "bank", "onehot")
        fixed = sum(labels.stat(f"sc_{k}_{name}") for k in kinds)  # per image
        np.testing.assert_array_equal(fixed, labels.stat(f"false_pixels_{base}"))
    # temperature scaling moves no argmax: the calibrated cascade fixes the same pixels
    np.testing.assert_array_equal(
        labels.stat("false_pixels_teacher_fa_ba_cal"), labels.stat("false_pixels_teacher_fa_ba")
    )
    cal = labels.provenance["calibration"]
    assert 0.05 <= cal["fp"] <= 20 and 0.05 <= cal["bd"] <= 20
    assert cal["images"] >= 1 and cal["pixels"] == cal["images"] * labels.size[0] * labels.size[1]
    assert cal["nll_after"]["fp"] <= cal["nll_before"]["fp"] + 1e-6
    assert cal["source"] in ("teacher val images", "train split (the teacher held none out)")
    assert set(cal["at_bound"]) <= {"fp", "bd"}


def test_chunk_images_changes_the_layout_not_the_labels(
    inputs: dict[str, Path], store: Path, tmp_path: Path
) -> None:
    """--chunk-images 4: the same decoded content as the one-image-per-chunk store."""
    import zarr
    from typer.testing import CliRunner

    from stages.cli import app

    out = tmp_path / "g.zarr"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SOURCE_DATE_EPOCH", EPOCH)
        plc(*precompute_args(inputs, out), "--chunk-images", "4")
    assert zarr.open_array(str(out / "soft" / "plc"), mode="r").chunks[0] == 4
    assert content_digest(out) == content_digest(store)
    bad = CliRunner().invoke(app, [*precompute_args(inputs, tmp_path / "h.zarr"),
                                   "--chunk-images", "3"])  # fmt: skip
    assert bad.exit_code == 1 and "--chunk-images 3 must divide --shard-size 8" in bad.output
    assert not (tmp_path / "h.zarr").exists()
