"""Golden chain with an imported teacher: nnU-Net v2's output folder, through every command.

prepare → import-teacher (maps written as nnU-Net's ``export_prediction_from_logits`` writes
them, derived from the masks with noise so some pixels are wrong) → train-assistant
(false-pixel, boundary; ``--model unet-tiny``, no ``--teacher``: the import sits at the
conventional path) → precompute → distill.
"""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path

import numpy as np
import pytest
from map_folders import noisy_maps, write_nnunet
from precompute_inputs import plc

from pipeline.variants import VARIANTS

CASCADE = tuple(v.name for v in VARIANTS if v.symbol)  # Y^I, Y^F, Y^B, Y^U
FAST = ("--epochs", 2, "--steps-per-epoch", 2, "--batch-size", 4, "--allow-weak-teacher",
        "--no-progress", "--device", "cpu")  # fmt: skip
PRE = ("--shard-size", 8, "--batch-size", 4, "--no-progress", "--device", "cpu")


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> dict:
    from storage_schema import open_dataset_store

    root = tmp_path_factory.mktemp("imported")
    cwd = os.getcwd()
    os.chdir(root)  # the conventional paths: data/g.zarr, models/g/teacher.pt, labels/g.zarr
    try:
        plc("prepare", "--dataset", "synthetic", "--out", "data/g.zarr", "--size", 32,
            "--count", 16, "--seed", 3, "--no-progress")  # fmt: skip
        store = open_dataset_store(root / "data" / "g.zarr")  # read after the chdir back too
        probs = noisy_maps(store.read_masks(slice(None)), seed=1)  # (N, 2, H, W)
        write_nnunet(root / "nnunet_pred", store.ids(), probs)
        plc("import-teacher", "--dataset", "g", "--probs", root / "nnunet_pred", "--no-progress")
        team = ("--dataset", "g", "--model", "unet-tiny", *FAST)
        plc("train-assistant", *team, "--kind", "false-pixel", "--fig-queue-len", 32,
            "--fig-pixels-per-image", 8)  # fmt: skip
        plc("train-assistant", *team, "--kind", "boundary", "--bt-delta", 2)
        plc("precompute", "--dataset", "g", *PRE)
        plc("precompute", "--dataset", "g", "--sc-features", "both", "--out", "labels/both.zarr",
            *PRE)  # fmt: skip
        plc("distill", "--labels", "labels/g.zarr", "--out", "runs/plc", "--variant", "plc",
            "--student", "unet-tiny", *FAST)  # fmt: skip
    finally:
        os.chdir(cwd)
    return {"root": root, "probs": probs, "store": store}


def _path(chain: dict, rel: str) -> Path:
    return chain["root"] / rel


def _train(chain: dict) -> tuple[np.ndarray, np.ndarray]:
    store = chain["store"]
    train = store.indices("train")
    return train, store.read_masks(train)


def test_plc_is_all_correct_and_the_cascade_monotone(chain: dict) -> None:
    from storage_schema import open_label_store

    _, masks = _train(chain)
    for store in ("labels/g.zarr", "labels/both.zarr"):
        labels = open_label_store(_path(chain, store))
        counts = []
        for v in CASCADE:
            recount = (labels.read(v, slice(None)).argmax(1) != masks).reshape(len(masks), -1)
            np.testing.assert_array_equal(recount.sum(1), labels.stat(f"false_pixels_{v}"))
            counts.append(recount.sum(1))
        for before, after in itertools.pairwise(counts):
            assert (after <= before).all()
        assert counts[0].sum() > 0, "the imported maps were made with wrong pixels"
        np.testing.assert_array_equal(labels.read("plc", slice(None)).argmax(1), masks)


def test_teacher_labels_are_the_imported_maps(chain: dict) -> None:
    """Y^I is the nnU-Net map (float16 as written, renormalised) after the store's int8
    encoding: decoded codes equal the oracle's own encode-decode round trip."""
    import torch

    from storage_schema import decode_logprobs, encode_logprobs, open_label_store

    train, _ = _train(chain)
    p = chain["probs"][train].astype(np.float16).astype(np.float64)
    p = (p / p.sum(1, keepdims=True)).astype(np.float32)
    logp = torch.log(torch.from_numpy(p).clamp_min(1e-12)).numpy()
    want = decode_logprobs(encode_logprobs(logp, axis=1), axis=1)
    got = open_label_store(_path(chain, "labels/g.zarr")).read("teacher", slice(None))
    assert np.abs(got - want).max() <= 1 / 8 + 1e-6  # at most one code step (log rounding)
    assert (got == want).mean() > 0.99


def test_provenance_names_the_import_and_the_sc_features(chain: dict) -> None:
    from pipeline.checkpoint import load_checkpoint
    from pipeline.imported import open_imported
    from storage_schema import open_label_store

    digest = open_imported(_path(chain, "models/g/teacher.pt")).digest
    for store, source in (("labels/g.zarr", "assistant-false-pixel"), ("labels/both.zarr", "both")):
        prov = open_label_store(_path(chain, store)).provenance
        teacher = prov["networks"]["teacher"]
        assert prov["teacher_kind"] == "imported" and prov["sc_features"] == source
        assert teacher["sha256"] == digest and teacher["model_name"] is None
        assert teacher["config"]["import"]["layout"] == "nnunet"
        assert teacher["config"]["import"]["digest"] == digest
        assert "an imported teacher records none" in prov["calibration"]["source"]
    fp = load_checkpoint(_path(chain, "models/g/assistant_fp.pt"))["config"]
    assert fp["teacher_sha256"] == digest and fp["teacher_kind"] == "imported"


def test_the_student_trained_on_the_labels(chain: dict) -> None:
    metrics = json.loads((_path(chain, "runs/plc") / "metrics.json").read_text())
    assert metrics["config"]["variant"] == "plc" and 0.0 <= metrics["dice"] <= 1.0


def test_live_labels_look_the_maps_up_by_id(chain: dict) -> None:
    """``distill --live`` rebuilds the team from the provenance (the import, TA_b and TA_f's
    features concatenated for the `both` store); its `plc` labels are the stored ones."""
    import torch

    from stages.data import load_split
    from stages.distill.live import LiveLabels
    from storage_schema import open_label_store

    labels = open_label_store(_path(chain, "labels/both.zarr"))
    cwd = os.getcwd()
    os.chdir(chain["root"])  # the provenance holds paths relative to the chain's folder
    try:
        train = load_split(chain["store"], "train")
        idx = torch.arange(len(train))
        images, masks = train.batch(idx, torch.device("cpu"))
        live = LiveLabels(labels, "plc", train, torch.device("cpu"))
        assert live.team(images, train.ids).feature_source == "both"
        got = live(idx, images, masks)
    finally:
        os.chdir(cwd)
    from storage_schema import decode_logprobs, encode_logprobs

    stored = labels.read("plc", slice(None))  # (N, C, H, W) decoded log-probabilities
    want = decode_logprobs(encode_logprobs(got.numpy(), axis=1), axis=1)  # the store's round trip
    # the same codes but at a near-tie of SC's search, where one forward of the whole split
    # and precompute's batches of 4 round the features apart (2 of 13,312 pixels here)
    assert (want == stored).all(1).mean() > 0.999
    np.testing.assert_array_equal(want.argmax(1), stored.argmax(1))
