"""Golden chain with a TorchScript teacher: the file a user hands over, through every command.

prepare → train-assistant (false-pixel, boundary) with ``--teacher script.pt --model
unet-tiny`` → precompute → distill, once for a traced network returning (logits, features)
and once for a scripted one returning logits only (SC then reads TA_f's features).
"""

from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from precompute_inputs import plc
from torchscript_nets import TinySeg, TinySegWithFeatures, export, set_foreground_share

from pipeline.variants import VARIANTS

CASCADE = tuple(v.name for v in VARIANTS if v.symbol)  # Y^I, Y^F, Y^B, Y^U
EXPORTS = {  # name -> (network, how it is exported, whose features SC reads)
    "traced-with-features": (TinySegWithFeatures, "trace", "teacher"),
    "scripted-logits-only": (TinySeg, "script", "assistant-false-pixel"),
}
FAST = ("--epochs", 2, "--steps-per-epoch", 2, "--batch-size", 4, "--allow-weak-teacher",
        "--no-progress", "--device", "cpu")  # fmt: skip


def _train_split(data: Path) -> tuple[torch.Tensor, np.ndarray]:
    """The train images as the networks get them (B, 3, H, W) in [0, 1], and the masks."""
    from stages.data import load_split, open_store

    train = load_split(open_store(data), "train")
    return train.batch(torch.arange(len(train)), torch.device("cpu"))[0], train.masks.numpy()


@pytest.fixture(scope="module", params=list(EXPORTS))
def chain(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp(request.param)
    net_class, how, _ = EXPORTS[request.param]
    p = {
        "name": request.param,
        "data": root / "data" / "g.zarr",
        "teacher": root / "exported" / "teacher.pt",
        "fp": root / "models" / "assistant_fp.pt",
        "bd": root / "models" / "assistant_bd.pt",
        "labels": root / "labels" / "g.zarr",
        "run": root / "runs" / "plc",
    }
    plc("prepare", "--dataset", "synthetic", "--out", p["data"], "--size", 32, "--count", 16,
        "--seed", 3, "--no-progress")  # fmt: skip
    images, _ = _train_split(p["data"])
    torch.manual_seed(0)
    net = net_class().eval()
    set_foreground_share(net, images, 0.3)  # wrong in both directions: FIG fills both queues
    export(net, p["teacher"], how, images[:4])
    team = ("--dataset", "g", "--data", p["data"], "--teacher", p["teacher"], "--model",
            "unet-tiny", *FAST)  # fmt: skip
    plc("train-assistant", *team, "--kind", "false-pixel", "--out", p["fp"],
        "--fig-queue-len", 32, "--fig-pixels-per-image", 8)  # fmt: skip
    plc("train-assistant", *team, "--kind", "boundary", "--out", p["bd"], "--bt-delta", 2)
    plc("precompute", "--dataset", "g", "--data", p["data"], "--teacher", p["teacher"],
        "--assistant-fp", p["fp"], "--assistant-bd", p["bd"], "--out", p["labels"],
        "--shard-size", 8, "--batch-size", 4, "--no-progress", "--device", "cpu")  # fmt: skip
    plc("distill", "--labels", p["labels"], "--out", p["run"], "--variant", "plc",
        "--student", "unet-tiny", *FAST)  # fmt: skip
    return p


def test_plc_is_all_correct_and_the_cascade_monotone(chain: dict) -> None:
    from storage_schema import open_label_store

    labels = open_label_store(chain["labels"])
    _, masks = _train_split(chain["data"])
    counts = []
    for v in CASCADE:
        recount = (labels.read(v, slice(None)).argmax(1) != masks).reshape(len(masks), -1).sum(1)
        np.testing.assert_array_equal(recount, labels.stat(f"false_pixels_{v}"))
        counts.append(recount)
    for before, after in itertools.pairwise(counts):
        assert (after <= before).all()
    assert counts[0].sum() > 0, "the exported teacher should make mistakes for this to mean much"
    np.testing.assert_array_equal(labels.read("plc", slice(None)).argmax(1), masks)


def test_provenance_names_the_script_and_whose_features_sc_read(chain: dict) -> None:
    from pipeline.checkpoint import load_checkpoint
    from storage_schema import open_label_store

    sha = hashlib.sha256(chain["teacher"].read_bytes()).hexdigest()
    prov = open_label_store(chain["labels"]).provenance
    teacher = prov["networks"]["teacher"]
    assert teacher["sha256"] == sha and teacher["path"] == str(chain["teacher"])
    assert teacher["model_name"] is None and teacher["config"] == {}
    assert prov["teacher_kind"] == "torchscript"
    assert prov["sc_features"] == EXPORTS[chain["name"]][2]
    assert "a TorchScript teacher records none" in prov["calibration"]["source"]
    fp = load_checkpoint(chain["fp"])["config"]
    assert fp["teacher_sha256"] == sha and fp["teacher_kind"] == "torchscript"
    bd = load_checkpoint(chain["bd"])["config"]  # BT with --model never reads T
    assert bd["teacher_sha256"] is None and bd["teacher_kind"] is None


def test_the_student_trained_on_the_labels(chain: dict) -> None:
    metrics = json.loads((chain["run"] / "metrics.json").read_text())
    assert metrics["config"]["variant"] == "plc" and 0.0 <= metrics["dice"] <= 1.0


def test_live_labels_use_the_same_features_as_the_store(chain: dict) -> None:
    """``distill --live`` rebuilds the team from the provenance: the TorchScript teacher and,
    without its features, TA_f's; its labels of the `plc` variant are the stored ones."""
    from stages.data import load_split
    from stages.distill.live import LiveLabels
    from storage_schema import open_dataset_store, open_label_store

    labels = open_label_store(chain["labels"])
    train = load_split(open_dataset_store(chain["data"]), "train")
    idx = torch.arange(len(train))
    images, masks = train.batch(idx, torch.device("cpu"))
    live = LiveLabels(labels, "plc", train, torch.device("cpu"))
    out = live.team(images)
    assert out.feature_source == EXPORTS[chain["name"]][2]
    stored = labels.read("plc", slice(None))  # (N, C, H, W) log-probabilities
    got = live(idx, images, masks)
    assert (got.exp() - torch.from_numpy(np.exp(stored))).abs().max() < 0.05
