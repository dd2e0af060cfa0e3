"""benchmarks/recipe.py without training: recipes, refusal of unknown ones, the table."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import recipe


def test_old_new_and_leave_one_out_recipes() -> None:
    old, new = recipe.recipe("old"), recipe.recipe("new")
    assert old == {
        "steps_per_epoch": 0,
        "warmup_steps": 0,
        "ema_decay": 0.0,
        "grad_clip": None,
        "foreground_fraction": 0.0,
    }
    no_ema = recipe.recipe("new-no-ema")
    assert no_ema == new | {"ema_decay": 0.0}
    assert sum(no_ema[k] != new[k] for k in new) == 1
    with pytest.raises(SystemExit, match="unknown recipe 'new-no-magic'"):
        recipe.recipe("new-no-magic")
    adopted = recipe.recipe("new-no-fg")
    no_clip = recipe.recipe("new-no-fg-no-clip")  # the adopted recipe, clipping left out
    assert no_clip == adopted | {"grad_clip": None} and adopted["foreground_fraction"] == 0.0
    with pytest.raises(SystemExit, match="unknown recipe 'new-no-fg-no-ema-no-clip'"):
        recipe.recipe("new-no-fg-no-ema-no-clip")


def test_table_mean_std_over_seeds() -> None:
    runs = [
        {"model": "m", "recipe": "old", "seed": s, "steps": 10, "test_dice": d, "train_dice": 0.5,
         "train_seconds": 2.0, "train_cpu_seconds": 1.0}
        for s, d in enumerate((0.50, 0.60, 0.70))
    ]  # fmt: skip
    text = recipe.table(runs)
    row = [c.strip() for c in text.splitlines()[2].strip("|").split("|")]
    assert row[:7] == ["m", "old", "10", "3", "60.00", "10.00", "50.0–70.0"]
    assert row[7] == "s0 50.0, s1 60.0, s2 70.0"
