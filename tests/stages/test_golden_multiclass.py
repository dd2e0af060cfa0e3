"""Golden chain with C = 3 (background + two lesion types): every `plc` command through
Typer's CliRunner on tiny synthetic data, then per-class checks of what came out.

prepare --synthetic-classes 3 → teacher → both assistants → precompute → distill → evaluate
→ report. Checked: the `plc` labels are all-correct on three classes, the cascade never
adds a false pixel of any class, FIG keeps one queue per class filled with the teacher's
false pixels of that class, BT swaps inside each class region, and the report and evaluate
give each lesion type its own Dice (recomputed here from the predictions).
"""

from __future__ import annotations

import csv
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from precompute_inputs import plc
from typer.testing import CliRunner

pytestmark = pytest.mark.slow  # a whole chain of tiny networks on the CPU
CLASSES = ["background", "lesion_a", "lesion_b"]
CASCADE = ("teacher", "teacher_fa", "teacher_fa_ba", "plc")
STUDENTS = ("none", "teacher", "plc")
runner = CliRunner()


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("golden3")
    p = {
        "data": root / "data" / "g3.zarr",
        "teacher": root / "models" / "teacher.pt",
        "fp": root / "models" / "assistant_fp.pt",
        "bd": root / "models" / "assistant_bd.pt",
        "labels": root / "labels" / "g3.zarr",
        "runs": root / "runs",
        "report": root / "reports" / "g3.md",
        "eval": root / "eval" / "teacher_test.json",
    }
    plc("prepare", "--dataset", "synthetic", "--synthetic-classes", 3, "--out", p["data"],
        "--size", 32, "--count", 24, "--seed", 3, "--no-progress")  # fmt: skip
    # a few plain steps (no warmup, no EMA) so the tiny team moves off its init and errs on
    # every class, which the per-class checks need
    common = ("--no-progress", "--device", "cpu", "--steps-per-epoch", 4, "--warmup-steps", 0,
              "--ema-decay", 0, "--allow-weak-teacher")  # fmt: skip
    team = ("--dataset", "g3", "--data", p["data"], "--model", "transunet-tiny", "--epochs", 2,
            "--batch-size", 4, *common)  # fmt: skip
    plc("train-teacher", *team, "--out", p["teacher"])
    plc("train-assistant", *team, "--kind", "false-pixel", "--teacher", p["teacher"],
        "--out", p["fp"], "--fig-queue-len", 32, "--fig-pixels-per-image", 8)  # fmt: skip
    plc("train-assistant", *team, "--kind", "boundary", "--teacher", p["teacher"],
        "--out", p["bd"], "--bt-delta", 2)  # fmt: skip
    plc("precompute", "--dataset", "g3", "--data", p["data"], "--teacher", p["teacher"],
        "--assistant-fp", p["fp"], "--assistant-bd", p["bd"], "--out", p["labels"],
        "--shard-size", 8, "--batch-size", 4, "--no-progress", "--device", "cpu")  # fmt: skip
    for v in STUDENTS:
        plc("distill", "--labels", p["labels"], "--out", p["runs"] / v, "--variant", v,
            "--student", "unet-tiny", "--epochs", 1, "--batch-size", 4, *common)  # fmt: skip
    plc("evaluate", "--checkpoint", p["teacher"], "--data", p["data"], "--split", "test",
        "--out", p["eval"], "--device", "cpu")  # fmt: skip
    plc("report", "--runs", p["runs"], "--out", p["report"], "--labels", p["labels"],
        "--teacher-metrics", p["teacher"].with_suffix(".metrics.json"))  # fmt: skip
    return p


def _split(chain: dict[str, Path], split: str) -> tuple[np.ndarray, np.ndarray]:
    from storage_schema import open_dataset_store

    store = open_dataset_store(chain["data"])
    idx = store.indices(split)
    images = np.asarray(store.images.get_orthogonal_selection((idx,)))  # (N, H, W, 3)
    return images, np.asarray(store.masks.get_orthogonal_selection((idx,)))  # (N, H, W)


def test_stores_have_three_classes(chain: dict[str, Path]) -> None:
    from storage_schema import open_dataset_store, open_label_store

    assert open_dataset_store(chain["data"]).classes == CLASSES
    _, masks = _split(chain, "train")
    assert set(np.unique(masks)) == {0, 1, 2}
    labels = open_label_store(chain["labels"])
    assert labels.classes == CLASSES
    assert labels.read("plc", slice(None)).shape == (len(masks), 3, 32, 32)


def test_plc_is_all_correct_on_three_classes(chain: dict[str, Path]) -> None:
    from storage_schema import open_label_store

    decoded = open_label_store(chain["labels"]).read("plc", slice(None))  # (N, 3, H, W)
    np.testing.assert_array_equal(decoded.argmax(1), _split(chain, "train")[1])


def test_cascade_never_adds_a_false_pixel_of_any_class(chain: dict[str, Path]) -> None:
    from storage_schema import open_label_store

    labels = open_label_store(chain["labels"])
    masks = _split(chain, "train")[1]
    wrong = {v: labels.read(v, slice(None)).argmax(1) != masks for v in CASCADE}  # (N, H, W)
    for before, after in itertools.pairwise(CASCADE):
        assert not (wrong[after] & ~wrong[before]).any(), f"{after} broke a pixel {before} had"
        for c in range(3):  # per class: counts per image never rise
            n_before = (wrong[before] & (masks == c)).reshape(len(masks), -1).sum(1)
            n_after = (wrong[after] & (masks == c)).reshape(len(masks), -1).sum(1)
            assert (n_after <= n_before).all()
    for c in (1, 2):  # the teacher errs on both lesion types, so the checks above bite
        assert (wrong["teacher"] & (masks == c)).any(), f"teacher makes no class-{c} mistake"


def _assistant_cfg(chain: dict[str, Path], kind: str, **kw: object):
    from stages.train.config import AssistantConfig

    return AssistantConfig(dataset="g3", kind=kind, data=chain["data"], teacher=chain["teacher"],
                           augment=False, batch_size=4, device="cpu", **kw)  # fmt: skip


def _rows(values: torch.Tensor) -> set[tuple[int, ...]]:
    """(n, 3) floats in [0, 1] -> the set of their uint8 RGB triples."""
    return {tuple(r) for r in (values * 255).round().to(torch.int64).tolist()}


def test_fig_keeps_one_queue_per_class_of_the_teachers_false_pixels(
    chain: dict[str, Path],
) -> None:
    from pipeline.checkpoint import build_from_checkpoint
    from stages.data import load_split, open_store
    from stages.train.assistant import FalsePixelBatches

    teacher, _ = build_from_checkpoint(chain["teacher"])
    train = load_split(open_store(chain["data"]), "train")
    cfg = _assistant_cfg(chain, "false-pixel", fig_queue_len=32, fig_pixels_per_image=8)
    fig = FalsePixelBatches(cfg, teacher, train, 3)
    fig.fill()
    queues = fig.sampler.queues
    assert queues.num_classes == 3
    images, masks = train.batch(torch.arange(len(train)), torch.device("cpu"))
    with torch.inference_mode():
        preds = teacher(images).argmax(1)
    pixels = images.permute(0, 2, 3, 1)  # (N, H, W, 3)
    for c in range(3):  # oracle: the colours of GT-c pixels the teacher gets wrong
        false_c = _rows(pixels[(masks == c) & (preds != c)])
        assert queues.fill(c) > 0 and _rows(queues.values(c)) <= false_c
    synthetic, gt = next(iter(fig(0)))  # one constructed batch on real GT masks
    for c in range(3):
        assert _rows(synthetic.permute(0, 2, 3, 1)[gt == c]) <= _rows(queues.values(c))


def test_bt_swaps_inside_each_class_region(chain: dict[str, Path]) -> None:
    from stages.data import load_split, open_store
    from stages.train.assistant import _boundary_transform

    train = load_split(open_store(chain["data"]), "train")
    transform = _boundary_transform(_assistant_cfg(chain, "boundary", bt_delta=2), 32, 3)
    images, masks = train.batch(torch.arange(len(train)), torch.device("cpu"))
    out, same_masks = transform(images, masks, torch.Generator().manual_seed(0))
    assert torch.equal(same_masks, masks)
    moved = (out != images).any(1)  # (N, H, W)
    assert not moved[masks == 0].any()  # background is never a BT region
    for c in (1, 2):
        assert moved[masks == c].any(), f"no swap in any class-{c} region"
        for b in range(len(masks)):  # swaps stay inside the region: same multiset of colours
            region = masks[b] == c
            before = sorted(map(tuple, images[b].permute(1, 2, 0)[region].tolist()))
            assert sorted(map(tuple, out[b].permute(1, 2, 0)[region].tolist())) == before


def _hand_dice(pred: np.ndarray, gt: np.ndarray, c: int) -> np.ndarray:
    """Per-image Dice of class c, 1 where both are empty (independent of pipeline.metrics)."""
    p, g = (pred == c).reshape(len(pred), -1), (gt == c).reshape(len(gt), -1)
    inter, total = (p & g).sum(1), p.sum(1) + g.sum(1)
    return np.where(total == 0, 1.0, 2 * inter / np.maximum(total, 1))


def test_evaluate_gives_each_lesion_type_its_dice(chain: dict[str, Path]) -> None:
    from pipeline.checkpoint import build_from_checkpoint

    metrics = json.loads(chain["eval"].read_text())
    images, gt = _split(chain, "test")
    teacher, _ = build_from_checkpoint(chain["teacher"])
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    with torch.inference_mode():
        pred = teacher(x).argmax(1).numpy()
    per_class = {c: _hand_dice(pred, gt, c) for c in (1, 2)}
    for c in (1, 2):
        assert metrics[f"dice_class{c}"] == pytest.approx(per_class[c].mean())
    assert metrics["dice"] == pytest.approx((per_class[1] + per_class[2]).mean() / 2)
    csv_path = chain["eval"].with_name("teacher_test_per_image.csv")
    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    assert [float(r["dice_class2"]) for r in rows] == pytest.approx(per_class[2].tolist())


def test_report_has_dice_per_class(chain: dict[str, Path]) -> None:
    text = chain["report"].read_text()
    section = text.split("## Dice per class (test split)\n\n")[1].split("\n\n")[0].splitlines()
    assert section[0] == "| Method | lesion_a Dice (%) | lesion_b Dice (%) | runs |"
    teacher = json.loads(chain["teacher"].with_suffix(".metrics.json").read_text())
    runs = {v: json.loads((chain["runs"] / v / "metrics.json").read_text()) for v in STUDENTS}
    rows = [
        ("Teacher T (transunet-tiny)", teacher),
        ("Student alone (no KD)", runs["none"]),
        ("T (vanilla KD)", runs["teacher"]),
        ("T + TA_f + TA_b + SC (PLC-KD)", runs["plc"]),
    ]
    assert section[2:] == [
        f"| {label} | {100 * m['dice_class1']:.2f} ± 0.00 | {100 * m['dice_class2']:.2f} ± 0.00 | 1 |"
        for label, m in rows
    ]  # fmt: skip
