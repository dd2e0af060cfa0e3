"""Tests for pipeline.variants: the one table of soft-label variants and what derives from it."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from cascade_oracles import make_case

from pipeline.cascade import SCConfig, build_variants, false_pixels, replace_if_correct
from pipeline.variants import (
    BY_NAME,
    DISTILL_CHOICES,
    NAMES,
    NO_KD,
    VARIANTS,
    Variant,
    check_table,
    get_variant,
    sc_base,
    sc_bases,
)


def test_table_rows_and_derived_names() -> None:
    assert NAMES == (
        "teacher", "teacher_sc", "teacher_fa", "teacher_ba", "teacher_fa_ba", "plc",
        "gt", "gt_smooth", "teacher_swap", "plc_random", "plc_mean", "plc_confident",
        "plc_knn", "teacher_fa_ba_cal", "plc_cal",
    )  # fmt: skip
    assert (*NAMES, NO_KD) == DISTILL_CHOICES and NO_KD == "none"
    assert sc_bases() == ("teacher", "teacher_fa_ba", "teacher_fa_ba_cal")  # swap needs no bank
    for name in ("plc_random", "plc_mean", "plc_confident", "plc_knn"):
        assert sc_base(BY_NAME[name]).name == "teacher_fa_ba"  # SC's database, another rule
    assert sc_base(BY_NAME["teacher_swap"]).name == "teacher"
    assert sc_base(BY_NAME["plc_cal"]).name == "teacher_fa_ba_cal"
    assert BY_NAME["plc"].rule == "nearest" and BY_NAME["teacher_sc"].rule == "nearest"
    assert sc_base(BY_NAME["plc"]).name == "teacher_fa_ba"
    assert BY_NAME["teacher_fa_ba"].assistants == ("fp", "bd")  # TA_f first, then TA_b
    assert [v.name for v in VARIANTS if v.source != "team"] == ["gt", "gt_smooth"]
    assert len({v.label for v in VARIANTS}) == len(VARIANTS)
    assert BY_NAME["plc"].title == "Y^U T + TA_f + TA_b + SC (PLC-KD)"


def test_unknown_name_lists_the_choices() -> None:
    with pytest.raises(
        ValueError, match="unknown variant 'best'; choose one of teacher, teacher_sc"
    ):
        get_variant("best")
    with pytest.raises(ValueError, match="has no SC step"):
        sc_base(BY_NAME["teacher"])


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ((Variant("a", "A"), Variant("a", "B")), "must be unique"),
        ((Variant("a", "A", assistants=("xx",)),), "unknown assistants"),
        ((Variant("g", "G", sc=True, source="gt"),), "takes no assistants and no SC"),
        ((Variant("s", "S", assistants=("bd", "fp"), sc=True),), "no row without SC"),
        ((Variant("r", "R", rule="knn"),), "needs sc=True"),
    ],
)
def test_check_table_refuses_bad_rows(rows: tuple[Variant, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_table(rows)


def test_adding_a_variant_is_one_row() -> None:
    """A new row (T + TA_f + SC) is computed by the same functions, with no other change."""
    row = Variant("teacher_fa_sc", "T + TA_f + SC", assistants=("fp",), sc=True)
    check_table((*VARIANTS, row))
    p_t, p_f, p_b, feats, gt = make_case(1, 2, 3, 5, 4, 3)
    team = {"fp": p_f, "bd": p_b, "fp_cal": p_f, "bd_cal": p_b}
    out, info = build_variants(
        p_t, team, feats, gt, SCConfig(), variants=(*VARIANTS, row), seeds=[0, 1]
    )
    assert list(out) == [*NAMES, "teacher_fa_sc"]
    assert not false_pixels(out["teacher_fa_sc"], gt).any()
    y_f = replace_if_correct(p_t, p_f, gt)
    keep = ~false_pixels(y_f, gt).unsqueeze(1).expand_as(y_f)
    assert torch.equal(out["teacher_fa_sc"][keep], y_f[keep])
    assert int(sum(v.sum() for v in info["teacher_fa_sc"].values())) == int(
        false_pixels(y_f, gt).sum()
    )


def test_module_imports_without_torch() -> None:
    code = "import sys, pipeline.variants; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


def test_no_other_list_of_variant_names() -> None:
    """The names appear as a list only in the table (tests and docs aside)."""
    import pathlib

    root = pathlib.Path(__file__).resolve().parents[2]
    hits = []
    for path in [*root.glob("pipeline/**/*.py"), *root.glob("stages/**/*.py"),
                 *root.glob("storage_schema/**/*.py")]:  # fmt: skip
        text = path.read_text()
        if '"teacher_fa_ba"' in text and path.name != "variants.py":
            hits.append(str(path.relative_to(root)))
    assert hits == []
