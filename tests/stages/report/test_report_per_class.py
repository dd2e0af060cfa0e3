"""The report's "Dice per class" table (C > 2) over hand-made runs."""

from __future__ import annotations

from stages.report.runs import Run, _scores
from stages.report.tables import per_class_lines


def _run(variant: str, seed: int, a: float, b: float) -> Run:
    metrics = {"dice": (a + b) / 2, "dice_class1": a, "dice_class2": b, "dice_class1_std": 0.3}
    return Run(variant, None, seed, {"variant": variant}, _scores(metrics))


def test_per_class_table_means_and_stds_over_runs() -> None:
    groups = {"none": [_run("none", 0, 0.5, 0.1), _run("none", 1, 0.7, 0.3)],
              "plc": [_run("plc", 0, 0.6, 0.2)]}  # fmt: skip
    teacher = Run("T", None, -1, {"model": "tu"}, _scores({"dice_class1": 0.9, "dice_class2": 0.8}))
    lines = per_class_lines(groups, [teacher], ["background", "nevus", "melanoma"])
    assert lines == [
        "| Method | nevus Dice (%) | melanoma Dice (%) | runs |",
        "|---|---|---|---|",
        "| Teacher T (tu) | 90.00 ± 0.00 | 80.00 ± 0.00 | 1 |",
        "| Student alone (no KD) | 60.00 ± 14.14 | 20.00 ± 14.14 | 2 |",
        "| T + TA_f + TA_b + SC (PLC-KD) | 60.00 ± 0.00 | 20.00 ± 0.00 | 1 |",
    ]


def test_without_names_columns_are_class_ids_and_two_classes_give_no_table() -> None:
    lines = per_class_lines({"plc": [_run("plc", 0, 0.6, 0.2)]}, [], None)
    assert lines[0] == "| Method | class 1 Dice (%) | class 2 Dice (%) | runs |"
    binary = Run("plc", None, 0, {}, _scores({"dice": 0.5, "iou": 0.4}))
    assert per_class_lines({"plc": [binary]}, [], None) == []
