"""Tests for pipeline.cascade: replace-if-correct, the variants, cascade properties."""

from __future__ import annotations

import itertools

import pytest
import torch
from cascade_oracles import FAISS_CPU, make_case, ric_loop, sc_loop  # helper dirs are on pythonpath
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.cascade import (
    ClassBank,
    SCConfig,
    cascade,
    count_false,
    false_pixels,
    replace_if_correct,
    sample_correct_pixels,
)
from pipeline.cascade import build_variants as _build_variants
from pipeline.variants import NAMES, VARIANTS, sc_base


def team(p_f: torch.Tensor, p_b: torch.Tensor) -> dict[str, torch.Tensor]:
    """The assistants' maps, with temperature-scaled ones (T = 2: p^(1/2), renormalised)."""

    def scaled(p: torch.Tensor) -> torch.Tensor:
        q = p.float().sqrt()
        return (q / q.sum(1, keepdim=True)).to(p.dtype)

    return {"fp": p_f, "bd": p_b, "fp_cal": scaled(p_f), "bd_cal": scaled(p_b)}


def build_variants(*args, **kwargs):
    """:func:`pipeline.cascade.build_variants` with one seed per image (the random rule's)."""
    kwargs.setdefault("seeds", list(range(len(args[3]))))
    return _build_variants(*args, **kwargs)


def totals(info: dict[str, torch.Tensor]) -> dict[str, int]:
    return {k: int(v.sum()) for k, v in info.items()}


shapes = {
    "seed": st.integers(0, 2**31 - 1),
    "b": st.integers(1, 3),
    "c": st.integers(2, 4),
    "h": st.integers(1, 6),
    "w": st.integers(1, 6),
    "f": st.integers(1, 6),
}


def random_bank(seed: int, c: int, f: int) -> ClassBank:
    p, _, _, feats, gt = make_case(seed + 1, 3, c, 4, 4, f)
    g = torch.Generator().manual_seed(seed)
    return ClassBank.from_samples(
        [sample_correct_pixels(p[i], feats[i], gt[i], 3, g) for i in range(3)]
    )


def test_replace_if_correct_hand_case() -> None:
    prev = torch.tensor([[0.6, 0.4], [0.7, 0.3], [0.2, 0.8], [0.9, 0.1]]).T.reshape(1, 2, 1, 4)
    assist = torch.tensor([[0.1, 0.9], [0.8, 0.2], [0.6, 0.4], [0.3, 0.7]]).T.reshape(1, 2, 1, 4)
    gt = torch.tensor([[[1, 1, 1, 0]]])
    out = replace_if_correct(prev, assist, gt)
    # px0: prev wrong, assist right -> assist; px1: both wrong -> prev;
    # px2: prev right -> prev; px3: prev right, assist wrong -> prev.
    expected = torch.stack([assist[..., 0], prev[..., 1], prev[..., 2], prev[..., 3]], dim=-1)
    assert torch.equal(out, expected)
    assert false_pixels(out, gt).tolist() == [[[False, True, False, False]]]
    assert count_false(out, gt).tolist() == [1]


def test_replace_if_correct_validates() -> None:
    p = torch.rand(1, 2, 3, 3)
    with pytest.raises(ValueError, match="y_prev and y_assist must have the same shape"):
        replace_if_correct(p, torch.rand(1, 2, 3, 4), torch.zeros(1, 3, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="gt must have shape"):
        replace_if_correct(p, p, torch.zeros(1, 3, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"gt values must lie in \[0, 2\)"):
        replace_if_correct(p, p, torch.full((1, 3, 3), 5))


@settings(max_examples=40, deadline=None)
@given(**shapes, with_bank=st.booleans(), backend=st.sampled_from(["torch", "numpy", *FAISS_CPU]))
def test_variants_properties_and_definitions(
    seed: int, b: int, c: int, h: int, w: int, f: int, with_bank: bool, backend: str
) -> None:
    p_t, p_f, p_b, feats, gt = make_case(seed, b, c, h, w, f)
    bank = random_bank(seed, c, f) if with_bank else None
    cfg = SCConfig(backend=backend, smoothing=0.1)
    inputs = [t.clone() for t in (p_t, p_f, p_b, feats, gt)]
    banks = {"teacher": bank, "teacher_fa_ba": bank} if bank is not None else None
    variants, info = build_variants(p_t, team(p_f, p_b), feats, gt, cfg, banks)
    assert tuple(variants) == NAMES
    for before, after in zip(inputs, (p_t, p_f, p_b, feats, gt), strict=True):
        assert torch.equal(before, after)  # inputs untouched

    # definitions, against loop implementations
    y_f = ric_loop(p_t, p_f, gt)
    y_b = ric_loop(y_f, p_b, gt)
    assert torch.equal(variants["teacher"], p_t)
    assert torch.equal(variants["teacher_fa"], y_f)
    assert torch.equal(variants["teacher_ba"], ric_loop(p_t, p_b, gt))
    assert torch.equal(variants["teacher_fa_ba"], y_b)
    bank_dicts = (bank.features, bank.soft) if bank is not None else None
    for name, source in (("teacher_sc", p_t), ("plc", y_b)):
        ref, margin = sc_loop(source, feats, gt, 0.1, bank_dicts)
        ok = (variants[name] == ref).all(dim=1) | (margin < 1e-5)  # float32 near-ties excused
        assert ok.all(), name
        assert sum(totals(info[name]).values()) == int(false_pixels(source, gt).sum())

    # a correct pixel never turns wrong; false counts never increase; SC ends all-correct
    order = ("teacher", "teacher_fa", "teacher_fa_ba", "plc")
    wrong = {k: false_pixels(variants[k], gt) for k in NAMES}
    for earlier, later in itertools.pairwise(order):
        assert not (wrong[later] & ~wrong[earlier]).any()
        assert int(wrong[later].sum()) <= int(wrong[earlier].sum())
    assert not (wrong["teacher_ba"] & ~wrong["teacher"]).any()
    assert not wrong["plc"].any() and not wrong["teacher_sc"].any()
    for v in VARIANTS:  # every correction row (swap, the SC rules, plc_cal) is all-correct
        if v.sc:
            assert not wrong[v.name].any(), v.name
            source = variants[sc_base(v).name]
            keep = ~false_pixels(source, gt).unsqueeze(1).expand_as(source)
            assert torch.equal(variants[v.name][keep], source[keep]), v.name
            assert sum(totals(info[v.name]).values()) == int(false_pixels(source, gt).sum())
    # temperature scaling never changes which pixels the cascade replaces
    assert torch.equal(wrong["teacher_fa_ba_cal"], wrong["teacher_fa_ba"])
    # correct pixels keep their exact vectors through SC
    for name, source in (("teacher_sc", p_t), ("plc", y_b)):
        keep = ~false_pixels(source, gt).unsqueeze(1).expand_as(source)
        assert torch.equal(variants[name][keep], source[keep])
    # the cascade's carried argmax and masks are those of its maps
    casc = cascade(p_t, team(p_f, p_b), gt)
    for name, m in casc.maps.items():
        assert torch.equal(casc.pred[name], m.argmax(dim=1)), name
        assert torch.equal(casc.right[name], m.argmax(dim=1) == gt), name


def test_variants_chain_uses_y_f_for_boundary_assistant() -> None:
    # One pixel, GT 1. T wrong, TA_f right -> Y^F = P_f; TA_b right too but must not replace.
    p_t = torch.tensor([0.8, 0.2]).view(1, 2, 1, 1)
    p_f = torch.tensor([0.3, 0.7]).view(1, 2, 1, 1)
    p_b = torch.tensor([0.1, 0.9]).view(1, 2, 1, 1)
    gt = torch.ones(1, 1, 1, dtype=torch.long)
    feats = torch.ones(1, 2, 1, 1)
    variants, info = build_variants(p_t, team(p_f, p_b), feats, gt, SCConfig(backend="torch"))
    assert torch.equal(variants["teacher_fa_ba"], p_f)
    assert torch.equal(variants["teacher_ba"], p_b)
    assert torch.equal(variants["plc"], p_f)
    assert torch.allclose(variants["teacher_sc"].flatten(), torch.tensor([0.1, 0.9]))
    assert totals(info["teacher_sc"]) == {"sc_in_image": 0, "sc_bank": 0, "sc_onehot": 1}
    assert totals(info["plc"]) == {"sc_in_image": 0, "sc_bank": 0, "sc_onehot": 0}


def test_variants_float16_keep_dtype() -> None:
    p_t, p_f, p_b, feats, gt = make_case(3, 2, 3, 5, 5, 4)
    variants, _ = build_variants(
        p_t.half(), team(p_f.half(), p_b.half()), feats.half(), gt, SCConfig(backend="torch")
    )
    assert all(v.dtype == torch.float16 for v in variants.values())
    assert not false_pixels(variants["plc"], gt).any()


@pytest.mark.gpu
def test_variants_on_cuda_match_cpu() -> None:
    p_t, p_f, p_b, feats, gt = make_case(11, 4, 3, 32, 32, 16)
    cfg = SCConfig(backend="torch")
    cpu, _ = build_variants(p_t, team(p_f, p_b), feats, gt, cfg)
    cuda_in = [t.cuda() for t in (p_t, p_f, p_b, feats, gt)]
    gpu, _ = build_variants(
        cuda_in[0], team(*cuda_in[1:3]), cuda_in[3], cuda_in[4], SCConfig(backend="auto")
    )
    for name in NAMES:
        assert gpu[name].device.type == "cuda"
        assert torch.allclose(gpu[name].cpu(), cpu[name])
    assert not false_pixels(gpu["plc"], cuda_in[4]).any()


def test_controls_are_one_hot_and_smoothed_gt() -> None:
    p_t, p_f, p_b, feats, gt = make_case(2, 2, 3, 4, 5, 3)
    variants, info = build_variants(p_t, team(p_f, p_b), feats, gt, SCConfig(), gt_smoothing=0.2)
    onehot = torch.zeros(2, 3, 4, 5)
    onehot.scatter_(1, gt.unsqueeze(1), 1.0)
    assert torch.equal(variants["gt"], onehot)
    assert torch.allclose(variants["gt_smooth"], onehot * 0.8 + (1 - onehot) * 0.1)
    assert set(info) == {v.name for v in VARIANTS if v.sc}  # controls need no SC
    with pytest.raises(ValueError, match=r"gt_smoothing must lie in \[0, 0.5\)"):
        build_variants(p_t, team(p_f, p_b), feats, gt, SCConfig(), gt_smoothing=0.5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("c", [2, 3, 5])
def test_control_rows_hold_the_bits_of_smoothed_onehot(dtype: torch.dtype, c: int) -> None:
    from pipeline.cascade import control_map, smoothed_onehot
    from pipeline.variants import BY_NAME

    gt = torch.randint(0, c, (2, 6, 7), generator=torch.Generator().manual_seed(c))
    for eps in (0.0, 0.1, 0.3):
        want = smoothed_onehot(gt.flatten(), c, eps, dtype).view(2, 6, 7, c).permute(0, 3, 1, 2)
        got = control_map(BY_NAME["gt_smooth"], gt, c, eps, dtype)
        assert got.dtype == dtype and got.is_contiguous() and torch.equal(got, want)
    onehot = torch.nn.functional.one_hot(gt, c).permute(0, 3, 1, 2).to(dtype)
    assert torch.equal(control_map(BY_NAME["gt"], gt, c, 0.1, dtype), onehot)
    with pytest.raises(ValueError, match="is not a control"):
        control_map(BY_NAME["plc"], gt, c, 0.1, dtype)


def test_a_subset_of_rows_computes_only_what_it_needs() -> None:
    from pipeline.variants import BY_NAME

    p_t, p_f, p_b, feats, gt = make_case(7, 2, 2, 4, 4, 3)
    full, _ = build_variants(p_t, team(p_f, p_b), feats, gt, SCConfig())
    only = (BY_NAME["plc"],)
    part, info = build_variants(p_t, team(p_f, p_b), feats, gt, SCConfig(), variants=only)
    assert list(part) == ["plc"] and torch.equal(part["plc"], full["plc"])
    assert list(info) == ["plc"]
    alone, _ = build_variants(p_t, {}, feats, gt, SCConfig(), variants=(BY_NAME["teacher_sc"],))
    assert torch.equal(alone["teacher_sc"], full["teacher_sc"])  # no assistant needed
    with pytest.raises(ValueError, match="needs assistant map 'bd'"):
        build_variants(p_t, {"fp": p_f}, feats, gt, SCConfig(), variants=only)
