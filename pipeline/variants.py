"""The variant graph: every soft-label variant of the ablation, as one table.

Each row names a stored variant, its row label in the paper's notation (Table 2), the
assistant maps applied replace-if-correct to the teacher's map and in what order, and whether
similarity-based correction (SC) follows (SC then corrects the row with the same assistants
and no SC, see :func:`sc_base`). Two control rows cost no network: ``gt`` (one-hot
ground truth: is a gain only a second CE term?) and ``gt_smooth`` (label smoothing: do
corrected soft labels beat smoothed hard labels?).

Precompute, live KD, ``plc distill --variant``, the report rows, the inspect titles and the
CLI help all derive from :data:`VARIANTS`; adding a variant is one row here. The rows after
the controls (issue 17) are the correction study's: Knowledge Adjustment's swap, SC with
other ways of picking the copied vector, and the cascade with temperature-scaled assistants. ``storage_schema``
stores whatever names it is given. This module imports nothing heavy (the CLI reads it for
``--help``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# assistant key -> paper symbol; the ``_cal`` maps are the same networks' logits divided by a
# temperature fitted on the teacher's held-out images (``plc_cal``: calibrated replacements)
ASSISTANTS: dict[str, str] = {
    "fp": "TA_f",
    "bd": "TA_b",
    "fp_cal": "TA_f (temperature-scaled)",
    "bd_cal": "TA_b (temperature-scaled)",
}

Source = Literal["team", "gt", "gt_smooth"]
# how an SC row corrects its base's false pixels (pipeline.corrections); "nearest" is the paper
Rule = Literal["nearest", "random", "mean", "confident", "knn", "swap"]


@dataclass(frozen=True)
class Variant:
    """One soft-label variant.

    Attributes:
        name: the stored name (``soft/<name>`` in the label store, ``--variant <name>``).
        label: the row label in the paper's notation.
        symbol: the cascade symbol where the paper has one (``Y^I``, ``Y^F``, ...), else "".
        assistants: assistant keys of :data:`ASSISTANTS`, applied replace-if-correct in order.
        sc: whether SC corrects the map afterwards.
        source: ``team`` (computed from the team's maps), ``gt`` (one-hot ground truth) or
            ``gt_smooth`` (smoothed one-hot ground truth); the controls take no assistants/SC.
        rule: how the correction step (``sc``) fixes the base's false pixels: ``nearest``
            (the paper's SC), another copy rule of :mod:`pipeline.corrections` (``random``,
            ``mean``, ``confident``, ``knn``) or Knowledge Adjustment's ``swap``.
    """

    name: str
    label: str
    symbol: str = ""
    assistants: tuple[str, ...] = ()
    sc: bool = False
    source: Source = "team"
    rule: Rule = "nearest"

    @property
    def title(self) -> str:
        """Short title for figures: the symbol and the label."""
        return f"{self.symbol} {self.label}" if self.symbol else self.label


VARIANTS: tuple[Variant, ...] = (
    Variant("teacher", "T (vanilla KD)", "Y^I"),
    Variant("teacher_sc", "T + SC", sc=True),
    Variant("teacher_fa", "T + TA_f", "Y^F", assistants=("fp",)),
    Variant("teacher_ba", "T + TA_b", assistants=("bd",)),
    Variant("teacher_fa_ba", "T + TA_f + TA_b", "Y^B", assistants=("fp", "bd")),
    Variant("plc", "T + TA_f + TA_b + SC (PLC-KD)", "Y^U", assistants=("fp", "bd"), sc=True),
    Variant("gt", "GT one-hot (control)", source="gt"),
    Variant("gt_smooth", "GT label smoothing (control)", source="gt_smooth"),
    # issue 17: the literature's simple corrections and SC rules that keep confidence
    Variant("teacher_swap", "T + swap (Knowledge Adjustment)", sc=True, rule="swap"),
    Variant(
        "plc_random", "PLC-KD, SC random pixel", assistants=("fp", "bd"), sc=True, rule="random"
    ),
    Variant("plc_mean", "PLC-KD, SC class mean", assistants=("fp", "bd"), sc=True, rule="mean"),
    Variant(
        "plc_confident",
        "PLC-KD, SC confident neighbour",
        assistants=("fp", "bd"),
        sc=True,
        rule="confident",
    ),
    Variant("plc_knn", "PLC-KD, SC k-NN mean", assistants=("fp", "bd"), sc=True, rule="knn"),
    Variant(
        "teacher_fa_ba_cal", "T + TA_f + TA_b, T-scaled assistants", assistants=("fp_cal", "bd_cal")
    ),
    Variant("plc_cal", "PLC-KD, T-scaled assistants", assistants=("fp_cal", "bd_cal"), sc=True),
)

NO_KD = "none"  # distill's student-alone baseline: no soft labels at all
NO_KD_LABEL = "Student alone (no KD)"

BY_NAME: dict[str, Variant] = {v.name: v for v in VARIANTS}
NAMES: tuple[str, ...] = tuple(BY_NAME)
DISTILL_CHOICES: tuple[str, ...] = (*NAMES, NO_KD)


def get_variant(name: str) -> Variant:
    """The row called ``name``; a miss raises listing the choices."""
    try:
        return BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown variant {name!r}; choose one of {', '.join(NAMES)}.") from None


def sc_base(variant: Variant, table: tuple[Variant, ...] = VARIANTS) -> Variant:
    """The row of ``table`` that SC corrects for an SC row: the same assistants without SC."""
    if not variant.sc:
        raise ValueError(f"variant {variant.name!r} has no SC step.")
    for v in table:
        if v.source == "team" and not v.sc and v.assistants == variant.assistants:
            return v
    raise ValueError(
        f"no row without SC has the assistants {variant.assistants} of {variant.name!r}."
    )


def sc_bases(variants: tuple[Variant, ...] = VARIANTS) -> tuple[str, ...]:
    """Names of the maps SC corrects (each needs its own cross-image bank), table order.

    The ``swap`` rule needs no bank (it moves the pixel's own probabilities)."""
    bases = [sc_base(v).name for v in variants if v.sc and v.rule != "swap"]
    return tuple(dict.fromkeys(bases))


def check_table(variants: tuple[Variant, ...] = VARIANTS) -> None:
    """Raise unless names are unique, assistants known, controls plain and SC bases present."""
    names = [v.name for v in variants]
    if len(set(names)) != len(names):
        raise ValueError(f"variant names must be unique, got {names}.")
    for v in variants:
        unknown = [a for a in v.assistants if a not in ASSISTANTS]
        if unknown:
            raise ValueError(
                f"variant {v.name!r}: unknown assistants {unknown}; known {list(ASSISTANTS)}."
            )
        if v.source != "team" and (v.assistants or v.sc):
            raise ValueError(f"control variant {v.name!r} takes no assistants and no SC.")
        if v.rule != "nearest" and not v.sc:
            raise ValueError(f"variant {v.name!r}: rule {v.rule!r} needs sc=True.")
        if v.sc:
            sc_base(v, variants)


check_table()
