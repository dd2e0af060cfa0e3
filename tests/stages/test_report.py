"""plc report: team members that do not beat the student alone are named."""

from __future__ import annotations

import pytest

from stages import report


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
    }
    monkeypatch.setattr(report, "_member_checks", lambda labels: checks)
    runs = [_run("none", 0, 0.5, train_dice=0.75), _run("none", 1, 0.5, train_dice=0.85)]
    lines = report.weak_team(runs, None, labels=None)
    assert lines == [
        "- TA_f does not beat the student alone on the train split (70.00 vs 80.00 Dice).",
        "- TA_b failed the training check (train-split Dice 10.00) and was kept with "
        "--allow-weak-teacher.",
    ]
