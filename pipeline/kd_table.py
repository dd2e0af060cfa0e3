"""The KD losses ``plc distill --loss`` offers, as one table (the paper's Table 1 rows).

Each row names a loss, its label in the paper's Table 1, the families it belongs to
(response / feature / relation, the paper's tick columns), what it reads — the label store's
soft labels (``stored``) or the live teacher's logits and named feature taps (``teacher``) —
how many taps, its default weight and where every default comes from, and where its code
lives (``module:attr``: a pure function of tensors for a stored loss, an ``nn.Module`` class
for a teacher loss, whose parameters — a connector, a projection head — train with the
student and are saved apart from it).

``plc distill --loss`` choices and ``--help``, the report's Table-1 rows and tick columns,
and the golden run of every loss derive from :data:`KD_LOSSES`; adding a loss is one row
here plus its function. This module imports nothing heavy (the CLI reads it for ``--help``).

The paper's baselines all carry a response term (Table 1 ticks "Response" on every row):
the reference code adds vanilla KD to each feature or relation loss. ``plc distill --loss X``
trains X + L_Seg alone; ``--plus-kd`` adds vanilla KD from the store (λ · KD on
``--variant``'s labels), as the reference scripts and the paper's table do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Family = Literal["response", "feature", "relation"]
FAMILIES: tuple[Family, ...] = ("response", "feature", "relation")


@dataclass(frozen=True)
class KDLoss:
    """One KD loss.

    Attributes:
        name: ``--loss`` value.
        label: the method's name in the paper's Table 1 (and its reference).
        families: the families it belongs to, in the paper's tick columns.
        reads: ``stored`` (the store's soft labels, no network at training time) or
            ``teacher`` (the live teacher: logits and ``taps`` named feature maps, one
            no-grad forward per step).
        taps: how many feature taps of each network it reads (0: logits only).
        weight: default weight of the term (``--lambda`` for stored losses,
            ``--kd-weight`` overrides it for teacher losses).
        defaults: every default of the loss and its source, one line.
        impl: ``module:attr`` of the implementation.
    """

    name: str
    label: str
    families: tuple[Family, ...]
    reads: Literal["stored", "teacher"]
    taps: int
    weight: float
    defaults: str
    impl: str


KD_LOSSES: tuple[KDLoss, ...] = (
    KDLoss("kd", "KD (Hinton et al. 2015)", ("response",), "stored", 0, 1.0,
           "τ² · KL(p_T,τ ‖ p_S,τ) per pixel; τ = --tau, weight --lambda.",
           "pipeline.losses:kd_loss"),
    KDLoss("cwd", "CWD (Shu et al. 2021)", ("response",), "stored", 0, 1.0,
           "KL over positions per class channel, τ = --tau (the paper: 4 on logits).",
           "pipeline.losses:cwd_loss"),
    KDLoss("dkd", "DKD (Zhao et al. 2022)", ("response",), "stored", 0, 1.0,
           "α · TCKD + β · NCKD, α = --dkd-alpha 1, β = --dkd-beta 8 (mdistiller); NCKD is 0 "
           "in binary segmentation.",
           "pipeline.losses:dkd_loss"),
    KDLoss("dist", "DIST (Huang et al. 2022)", ("response",), "stored", 0, 1.0,
           "β · inter + γ · intra Pearson terms, β = γ = 1 (the paper); in binary "
           "segmentation only the intra-class term trains; not in PLC-KD's Table 1.",
           "pipeline.losses:dist_loss"),
    KDLoss("fitnet", "FitNet (Romero et al. 2015)", ("feature",), "teacher", 1, 1.0,
           "MSE(connector(f_S), f_T); connector 1×1 conv + BN (CIRKD); weight 1 (FitNet "
           "trains hints as a separate stage: no joint weight published).",
           "pipeline.feature_kd:FitNetKD"),
    KDLoss("at", "AT (Zagoruyko & Komodakis 2017)", ("feature",), "teacher", 1, 1.0,
           "p = 2 attention maps, β = 10³ (the paper, §4); weight 1.",
           "pipeline.feature_kd:ATKD"),
    KDLoss("emkd", "EMKD (Qin et al. 2021)", ("response", "feature", "relation"), "teacher",
           2, 1.0,
           "0.1 · PMD (KD, τ = 4) + 0.9 · IMD (attention, p = 4) + 0.9 · RAD (region "
           "affinity) on two taps: EMKD's train_kd.py.",
           "pipeline.feature_kd:EMKD"),
    KDLoss("pa", "PA (SKD's pair-wise, Liu et al. 2019)", ("relation",), "teacher", 1, 1.0,
           "MSE of node cosine-similarity maps, nodes 2×2 max-pooled (CIRKD's criterion); "
           "weight 1.",
           "pipeline.relation_kd:PairwiseKD"),
    KDLoss("ifvd", "IFVD (Wang et al. 2020)", ("relation",), "teacher", 1, 200.0,
           "MSE of pixel-to-class-centre cosine maps (GT centres); weight 200 (IFVD's "
           "--lambda-ifv).",
           "pipeline.relation_kd:IFVDKD"),
    KDLoss("cirkd", "CIRKD (Yang et al. 2022)", ("relation",), "teacher", 1, 1.0,
           "1 · batch pixel-pair KL + 0.1 · memory pixel + 0.1 · memory region contrast, "
           "τ = 0.1, memories 20,000 / 2,000, samples 4,096 / 1,024 (CIRKD's defaults).",
           "pipeline.relation_kd:CIRKD"),
    KDLoss("spkd", "SPKD (Tung & Mori 2019)", ("relation",), "teacher", 1, 3000.0,
           "‖G_S − G_T‖²_F / b², G the row-normalised batch Gram matrix; γ = 3,000 (the "
           "paper; mdistiller).",
           "pipeline.relation_kd:SPKD"),
)  # fmt: skip

BY_NAME: dict[str, KDLoss] = {loss.name: loss for loss in KD_LOSSES}
LOSS_NAMES: tuple[str, ...] = tuple(BY_NAME)
STORED: tuple[str, ...] = tuple(x.name for x in KD_LOSSES if x.reads == "stored")
LIVE: tuple[str, ...] = tuple(x.name for x in KD_LOSSES if x.reads == "teacher")


def get_loss(name: str) -> KDLoss:
    """The row called ``name``; a miss raises listing the choices."""
    try:
        return BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(LOSS_NAMES)}.") from None


def implementation(row: KDLoss):
    """The function or class ``row.impl`` names (imported on first use: torch)."""
    import importlib

    module, attr = row.impl.split(":")
    return getattr(importlib.import_module(module), attr)


def help_text() -> str:
    """``--loss`` help: one entry per row."""
    entries = [f"{x.name}: {x.label}, {'/'.join(x.families)}, reads the "
               f"{'store' if x.reads == 'stored' else 'live teacher'}; {x.defaults}"
               for x in KD_LOSSES]  # fmt: skip
    return (
        "KD loss. " + " | ".join(entries) + " Teacher losses read the label store's own "
        "teacher (its provenance; --teacher overrides) and train X + L_Seg; --plus-kd adds "
        "λ · KD on --variant's stored labels, as the paper's Table 1 and the reference scripts do."
    )


def check_table(table: tuple[KDLoss, ...] = KD_LOSSES) -> None:
    """Raise unless names are unique, families known, stored losses read no taps."""
    names = [x.name for x in table]
    if len(set(names)) != len(names):
        raise ValueError(f"loss names must be unique, got {names}.")
    for x in table:
        if not x.families or any(f not in FAMILIES for f in x.families):
            raise ValueError(f"loss {x.name!r}: families {x.families} not in {FAMILIES}.")
        if (x.reads == "stored") != (x.taps == 0):
            raise ValueError(f"loss {x.name!r}: a stored loss reads no taps, a teacher one some.")
        if ":" not in x.impl:
            raise ValueError(f"loss {x.name!r}: impl must be 'module:attr', got {x.impl!r}.")


check_table()
