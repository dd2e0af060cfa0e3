"""The training-failure check: useless networks stop the stage with one clear message."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from stages.cli import app
from stages.data import SplitData
from stages.train.checks import TRAIN_DICE_FLOOR, WeakModelError, check_training

CLASSES = ["background", "polyp"]
CPU = torch.device("cpu")


def _split(n: int = 6, size: int = 8) -> SplitData:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)
    masks = (images[:, 0] > 127).long()  # foreground where the red channel is bright
    return SplitData(images, masks, indices=torch.arange(n).numpy(), ids=[str(i) for i in range(n)])


class Rule(nn.Module):
    """Logits from a fixed rule on the red channel: (B, 3, H, W) -> (B, 2, H, W)."""

    def __init__(self, mode: str) -> None:
        super().__init__()
        self.mode = mode
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        red = (x[:, 0] * 255).round() - 127.5  # > 0 exactly where the uint8 value is > 127
        if self.mode == "background":
            fg = torch.full_like(red, -1.0)
        elif self.mode == "oracle":
            fg = red
        else:  # "inverted": foreground exactly where there is none
            fg = -red
        return torch.stack([torch.zeros_like(fg), fg], dim=1) + 0 * self.dummy


def _check(mode: str, **kwargs: object) -> dict:
    return check_training(
        Rule(mode), _split(), CLASSES, "teacher (rule)", batch_size=4, device=CPU, **kwargs
    )


def test_a_network_that_segments_its_training_images_passes() -> None:
    result = _check("oracle")
    assert result == {
        "train_dice": pytest.approx(1.0),
        "predicted_classes": CLASSES,
        "passed": True,
    }


def test_one_class_everywhere_fails_with_what_happened_and_what_to_try() -> None:
    with pytest.raises(WeakModelError) as err:
        _check("background")
    message = str(err.value)
    assert "teacher (rule) failed the training check" in message
    assert "predicts 'background' at every pixel of the 6 training images" in message
    for hint in (
        "--epochs",
        "--steps-per-epoch",
        "--lr",
        "--size given to prepare",
        "--allow-weak",
    ):
        assert hint in message
    assert isinstance(err.value, ValueError)  # the CLI reports it as a user error, exit 1


def test_dice_below_the_floor_fails() -> None:
    with pytest.raises(WeakModelError, match=rf"is 0.000, below the floor {TRAIN_DICE_FLOOR}"):
        _check("inverted")


def test_allow_weak_warns_and_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        result = _check("background", allow_weak=True)
    assert result["passed"] is False and result["predicted_classes"] == ["background"]
    assert "going on: --allow-weak-teacher" in caplog.text


def test_evaluation_is_deterministic_and_batch_size_free() -> None:
    from pipeline.models.registry import build_model

    torch.manual_seed(0)
    model = build_model("unet-tiny", num_classes=2, img_size=32)
    data = _split(n=5, size=32)
    results = [
        check_training(model, data, CLASSES, "t", batch_size=b, device=CPU, allow_weak=True)
        for b in (1, 4, 4)
    ]
    assert results[1] == results[2]  # repeatable
    assert results[0]["train_dice"] == pytest.approx(results[1]["train_dice"], abs=1e-9)


runner = CliRunner()


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("checks") / "data" / "t.zarr"
    args = ["prepare", "--dataset", "synthetic", "--out", str(out), "--size", "32"]
    result = runner.invoke(app, [*args, "--count", "10", "--no-progress"])
    assert result.exit_code == 0, result.output
    return out


def _teacher(store: Path, out: Path, *extra: str):
    args = ["train-teacher", "--dataset", "t", "--data", str(store), "--out", str(out)]
    args += ["--model", "unet-tiny", "--epochs", "1", "--steps-per-epoch", "1", "--lr", "1e-9"]
    return runner.invoke(
        app, [*args, "--batch-size", "2", "--no-progress", "--device", "cpu", *extra]
    )


def test_a_teacher_that_cannot_train_stops_the_stage(tiny_store: Path, tmp_path: Path) -> None:
    out = tmp_path / "teacher.pt"
    result = _teacher(tiny_store, out)  # 1 step at lr 1e-9: nothing can be learned
    assert result.exit_code == 1
    assert "teacher (unet-tiny) failed the training check" in result.output
    assert "Traceback" not in result.output
    assert not out.exists() and not out.with_suffix(".metrics.json").exists()  # nothing written
    result = _teacher(tiny_store, out, "--allow-weak-teacher", "--val-fraction", "0.25")
    assert result.exit_code == 0, result.output
    metrics = json.loads(out.with_suffix(".metrics.json").read_text())
    assert metrics["train_check"]["passed"] is False
    curve = out.with_suffix(".curve.csv").read_text().splitlines()
    assert curve[0].split(",") == ["epoch", "loss", "lr", "val_dice"] and len(curve) == 2


def test_assistants_on_transformed_images_keep_only_the_one_class_rule(tmp_path) -> None:
    """TA_f on FIG images alone and TA_b on BT images never see a real image: no Dice floor on
    real images; a TA_f with real images mixed in keeps the floor."""
    from stages.train.assistant import _dice_floor
    from stages.train.checks import TRAIN_DICE_FLOOR
    from stages.train.config import AssistantConfig

    def floor(kind: str, real: float) -> float:
        return _dice_floor(AssistantConfig(dataset="d", kind=kind, fig_real_fraction=real))

    assert floor("false-pixel", 0.0) == 0.0
    assert floor("false-pixel", 0.5) == TRAIN_DICE_FLOOR
    assert floor("boundary", 0.0) == 0.0
