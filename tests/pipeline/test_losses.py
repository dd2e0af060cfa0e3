"""Losses against MONAI, hand-computed cases and explicit float64 formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from monai.losses import DiceCELoss, DiceLoss

from pipeline.losses import CWDLoss, KDLoss, SegLoss, cwd_loss, dice_loss, kd_loss, seg_loss, soften


def _random_case(seed: int, b: int, k: int, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    logits = 3 * torch.randn(b, k, h, w, generator=gen)
    target = torch.randint(0, k, (b, h, w), generator=gen)
    return logits, target


@pytest.mark.parametrize(("seed", "k"), [(0, 2), (1, 2), (2, 3), (3, 4)])
def test_seg_loss_matches_monai_dice_ce(seed: int, k: int) -> None:
    logits, target = _random_case(seed, 3, k, 8, 12)
    logits.requires_grad_(True)
    oracle = DiceCELoss(softmax=True, to_onehot_y=True, lambda_ce=0.5, lambda_dice=0.5)
    expected = oracle(logits, target[:, None])  # MONAI takes (B, 1, H, W)
    ours = seg_loss(logits, target)
    torch.testing.assert_close(ours, expected)
    (grad_ours,) = torch.autograd.grad(ours, logits)
    (grad_monai,) = torch.autograd.grad(expected, logits)
    torch.testing.assert_close(grad_ours, grad_monai)


def test_seg_loss_weights_match_monai_lambdas_and_module() -> None:
    logits, target = _random_case(4, 2, 3, 6, 6)
    oracle = DiceCELoss(softmax=True, to_onehot_y=True, lambda_ce=0.2, lambda_dice=1.5)
    torch.testing.assert_close(seg_loss(logits, target, 0.2, 1.5), oracle(logits, target[:, None]))
    torch.testing.assert_close(
        SegLoss(0.2, 1.5)(logits, target), seg_loss(logits, target, 0.2, 1.5)
    )
    torch.testing.assert_close(seg_loss(logits, target, 1.0, 0.0), F.cross_entropy(logits, target))


@pytest.mark.parametrize(("seed", "k"), [(5, 2), (6, 3)])
def test_dice_loss_matches_monai(seed: int, k: int) -> None:
    logits, target = _random_case(seed, 2, k, 5, 7)
    oracle = DiceLoss(softmax=True, to_onehot_y=True)
    torch.testing.assert_close(dice_loss(logits, target), oracle(logits, target[:, None]))
    oracle = DiceLoss(softmax=True, to_onehot_y=True, smooth_nr=0.0, smooth_dr=1.0)
    torch.testing.assert_close(
        dice_loss(logits, target, smooth_nr=0.0, smooth_dr=1.0), oracle(logits, target[:, None])
    )


def test_dice_loss_hand_case() -> None:
    # one image, 2 classes, 1×2 pixels; softmax of [0, ln 3] is [0.25, 0.75]
    logits = torch.tensor([[[[0.0, 0.0]], [[math.log(3.0), 0.0]]]])
    target = torch.tensor([[[1, 0]]])
    p_bg, p_fg = [0.25, 0.5], [0.75, 0.5]
    dice_bg = 2 * p_bg[1] / (sum(p_bg) + 1)
    dice_fg = 2 * p_fg[0] / (sum(p_fg) + 1)
    expected = 1 - (dice_bg + dice_fg) / 2
    assert dice_loss(logits, target, 0.0, 0.0).item() == pytest.approx(expected, rel=1e-6)


def test_seg_loss_input_errors() -> None:
    logits, target = _random_case(7, 2, 2, 4, 4)
    with pytest.raises(ValueError, match=r"target must have shape \(B, H, W\) = \(2, 4, 4\)"):
        seg_loss(logits, target[:, :3])
    with pytest.raises(ValueError, match=r"target must have shape \(B, H, W\)"):
        seg_loss(logits, target[:, None])
    with pytest.raises(ValueError, match=r"target values must lie in \[0, 1\] for 2 classes"):
        seg_loss(logits, target + 1)
    with pytest.raises(ValueError, match="target must hold integer class indices"):
        seg_loss(logits, target.float())
    with pytest.raises(ValueError, match="ce_weight and dice_weight must be >= 0"):
        seg_loss(logits, target, ce_weight=-1.0)


def test_soften() -> None:
    logits, _ = _random_case(8, 2, 3, 4, 4)
    torch.testing.assert_close(soften(logits, 1.0), F.log_softmax(logits, dim=1))
    logp = F.log_softmax(logits, dim=1)
    # stored log-probabilities give the same softened distribution as the logits
    torch.testing.assert_close(soften(logp, 4.0), soften(logits, 4.0))
    p = logp.exp() ** 0.25
    torch.testing.assert_close(soften(logp, 4.0).exp(), p / p.sum(dim=1, keepdim=True))
    with pytest.raises(ValueError, match="tau must be a positive temperature, got 0"):
        soften(logits, 0)


def _kd_reference(s: np.ndarray, t: np.ndarray, tau: float) -> float:
    """Explicit float64: τ² · mean over pixels of Σ_k p_t (log p_t − log p_s), at τ."""

    def log_softmax(x: np.ndarray) -> np.ndarray:
        x = x / tau
        x = x - x.max(axis=1, keepdims=True)
        return x - np.log(np.exp(x).sum(axis=1, keepdims=True))

    ls, lt = log_softmax(s), log_softmax(t)
    return float((np.exp(lt) * (lt - ls)).sum(axis=1).mean() * tau**2)


def test_kd_loss_is_zero_when_student_equals_teacher() -> None:
    logits, _ = _random_case(9, 2, 3, 4, 4)
    assert kd_loss(logits, logits, tau=2.0).item() == pytest.approx(0.0, abs=1e-6)
    # teacher stored as log-probabilities of the same logits
    assert kd_loss(logits, F.log_softmax(logits, 1), 3.0).item() == pytest.approx(0.0, abs=1e-6)


def test_kd_loss_hand_case_two_pixels_two_classes() -> None:
    # pixel 0: student [0, 0] -> (0.5, 0.5), teacher (0.8, 0.2)
    # pixel 1: student [ln 3, 0] -> (0.75, 0.25), teacher (0.75, 0.25): KL 0
    student = torch.tensor([[[[0.0, math.log(3.0)]], [[0.0, 0.0]]]])  # (1, 2, 1, 2)
    teacher = torch.log(torch.tensor([[[[0.8, 0.75]], [[0.2, 0.25]]]]))
    expected = (0.8 * math.log(0.8 / 0.5) + 0.2 * math.log(0.2 / 0.5)) / 2
    assert kd_loss(student, teacher).item() == pytest.approx(expected, rel=1e-6)
    assert expected == pytest.approx(0.0963724, rel=1e-5)


@pytest.mark.parametrize("tau", [1.0, 2.0, 4.0])
def test_kd_loss_matches_float64_formula_and_tau_squared(tau: float) -> None:
    s, _ = _random_case(10, 2, 3, 5, 5)
    t, _ = _random_case(11, 2, 3, 5, 5)
    ours = kd_loss(s.double(), t.double(), tau).item()
    assert ours == pytest.approx(_kd_reference(s.double().numpy(), t.double().numpy(), tau))
    # τ² scaling: softening at τ equals dividing the logits by τ at τ = 1
    assert ours == pytest.approx(tau**2 * kd_loss(s.double() / tau, t.double() / tau).item())
    assert KDLoss(tau)(s, t).item() == pytest.approx(ours, rel=1e-5)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), tau=st.floats(0.5, 8.0), shift=st.floats(-5, 5))
def test_kd_loss_properties(seed: int, tau: float, shift: float) -> None:
    s, _ = _random_case(seed, 1, 3, 3, 3)
    t, _ = _random_case(seed + 1, 1, 3, 3, 3)
    loss = kd_loss(s, t, tau)
    assert loss.item() >= -1e-6
    torch.testing.assert_close(kd_loss(s + shift, t, tau), loss, atol=1e-5, rtol=1e-4)


def test_kd_loss_refuses_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="student_logits and teacher_logp must have the same"):
        kd_loss(torch.zeros(1, 2, 4, 4), torch.zeros(1, 3, 4, 4))
    with pytest.raises(ValueError, match=r"student_logits must have shape \(B, K, H, W\)"):
        kd_loss(torch.zeros(2, 4, 4), torch.zeros(2, 4, 4))


def _cwd_reference(s: torch.Tensor, t: torch.Tensor, tau: float) -> float:
    """The original CWD code (Shu et al.) in float64 with raw maps on both sides."""
    n, c, h, w = s.shape
    ps = s.double().reshape(-1, w * h) / tau
    pt = t.double().reshape(-1, w * h) / tau
    soft_t = F.softmax(pt, dim=1)
    loss = torch.sum(soft_t * F.log_softmax(pt, 1) - soft_t * F.log_softmax(ps, 1)) * tau**2
    return float(loss / (c * n))


def test_cwd_hand_case_raw_logits() -> None:
    # channel 0: teacher [0, ln 3] -> (1/4, 3/4), student [0, 0] -> (1/2, 1/2)
    # channel 1: teacher [0, 0] -> (1/2, 1/2), student [0, ln 3] -> (1/4, 3/4)
    teacher = torch.tensor([[[[0.0, math.log(3.0)]], [[0.0, 0.0]]]])  # (1, 2, 1, 2)
    student = torch.tensor([[[[0.0, 0.0]], [[0.0, math.log(3.0)]]]])
    kl0 = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)
    kl1 = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    ours = cwd_loss(student, teacher, student_space="logits").item()
    assert ours == pytest.approx((kl0 + kl1) / 2, rel=1e-6)


def test_cwd_hand_case_student_log_probs() -> None:
    # student logits per pixel: [0, 0] -> log(1/2, 1/2); [ln 3, 0] -> log(3/4, 1/4)
    # channel 0 over positions: (1/2, 3/4) / (5/4) = (0.4, 0.6); channel 1: (2/3, 1/3)
    # teacher log-probs: (0.2, 0.8) at both pixels -> (1/2, 1/2) in each channel
    student = torch.tensor([[[[0.0, math.log(3.0)]], [[0.0, 0.0]]]])
    teacher = torch.log(torch.tensor([[[[0.2, 0.2]], [[0.8, 0.8]]]]))
    kl0 = 0.5 * math.log(0.5 / 0.4) + 0.5 * math.log(0.5 / 0.6)
    kl1 = 0.5 * math.log(0.5 / (2 / 3)) + 0.5 * math.log(0.5 / (1 / 3))
    assert cwd_loss(student, teacher).item() == pytest.approx((kl0 + kl1) / 2, rel=1e-6)


@pytest.mark.parametrize("tau", [1.0, 3.0])
def test_cwd_matches_original_code_and_is_zero_when_equal(tau: float) -> None:
    s, _ = _random_case(12, 2, 3, 4, 6)
    t = F.log_softmax(_random_case(13, 2, 3, 4, 6)[0], dim=1)
    raw = cwd_loss(s, t, tau, student_space="logits").item()
    assert raw == pytest.approx(_cwd_reference(s, t, tau), rel=1e-5)
    normalised = cwd_loss(s, t, tau).item()
    assert normalised == pytest.approx(_cwd_reference(F.log_softmax(s, 1), t, tau), rel=1e-5)
    assert CWDLoss(tau)(s, t).item() == pytest.approx(normalised)
    assert cwd_loss(t, t, tau).item() == pytest.approx(0.0, abs=1e-6)
    assert cwd_loss(t, t, tau, student_space="logits").item() == pytest.approx(0.0, abs=1e-6)
    # per-pixel shifts of the student's logits do not change its probabilities
    shift = torch.randn(2, 1, 4, 6)
    assert cwd_loss(t + shift, t, tau).item() == pytest.approx(0.0, abs=1e-6)


def test_cwd_tau_scaling_and_errors() -> None:
    s, _ = _random_case(14, 1, 2, 3, 3)
    t, _ = _random_case(15, 1, 2, 3, 3)
    loss = cwd_loss(s, t, 2.0, student_space="logits").item()
    assert loss == pytest.approx(4 * cwd_loss(s / 2, t / 2, student_space="logits").item())
    with pytest.raises(ValueError, match="student_space must be 'log_probs' or 'logits'"):
        cwd_loss(s, t, student_space="probs")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="tau must be a positive temperature"):
        cwd_loss(s, t, tau=-1.0)


def test_masked_kd_loss_is_the_kl_mean_over_the_masked_pixels_only() -> None:
    from pipeline.losses import kd_loss, masked_kd_loss

    g = torch.Generator().manual_seed(0)
    s = torch.randn(2, 3, 4, 5, generator=g, dtype=torch.float64)
    t = torch.randn(2, 3, 4, 5, generator=g, dtype=torch.float64).log_softmax(1)
    mask = torch.rand(2, 4, 5, generator=g) > 0.4
    tau = 2.0
    # oracle from the formula: τ² Σ_masked Σ_k p_t log(p_t / p_s) / #masked, at temperature τ
    pt, ps = (t / tau).softmax(1), (s / tau).softmax(1)
    kl = (pt * (pt.log() - ps.log())).sum(1)
    expected = kl[mask].sum() / mask.sum() * tau**2
    assert torch.allclose(masked_kd_loss(s, t, mask, tau), expected, rtol=1e-12)
    everything = torch.ones(2, 4, 5, dtype=torch.bool)
    assert torch.equal(masked_kd_loss(s, t, everything, tau), kd_loss(s, t, tau))  # same bits
    s.requires_grad_(True)
    none = masked_kd_loss(s, t, torch.zeros(2, 4, 5, dtype=torch.bool), tau)
    assert none.item() == 0.0
    none.backward()
    assert torch.equal(s.grad, torch.zeros_like(s))
    with pytest.raises(ValueError, match="mask must be bool"):
        masked_kd_loss(s, t, everything.long(), tau)


def _dkd_oracle(s, t, target, tau, alpha, beta):
    """DKD from the paper's definitions, pixel by pixel, in float64."""
    s, t = s.double() / tau, t.double() / tau
    b, k, h, w = s.shape
    total = 0.0
    for i in range(b):
        for y in range(h):
            for x in range(w):
                c = int(target[i, y, x])
                ps, pt = s[i, :, y, x].softmax(0), t[i, :, y, x].softmax(0)
                bs = torch.stack([ps[c], 1 - ps[c]])
                bt = torch.stack([pt[c], 1 - pt[c]])
                tckd = float((bt * (bt / bs).log()).sum())
                others = [j for j in range(k) if j != c]
                qs, qt = s[i, others, y, x].softmax(0), t[i, others, y, x].softmax(0)
                nckd = float((qt * (qt / qs).log()).sum())
                total += alpha * tckd + beta * nckd
    return total / (b * h * w) * tau**2


@pytest.mark.parametrize("k", [2, 3, 5])
def test_dkd_matches_the_papers_definition(k: int) -> None:
    from pipeline.losses import dkd_loss

    g = torch.Generator().manual_seed(k)
    s = torch.randn(2, k, 3, 4, generator=g, dtype=torch.float64)
    t = (2 * torch.randn(2, k, 3, 4, generator=g, dtype=torch.float64)).log_softmax(1)
    target = torch.randint(0, k, (2, 3, 4), generator=g)
    for tau, alpha, beta in ((1.0, 1.0, 8.0), (4.0, 0.5, 2.0)):
        got = float(dkd_loss(s, t, target, tau, alpha, beta))
        assert got == pytest.approx(_dkd_oracle(s, t, target, tau, alpha, beta), rel=1e-6)


def test_dkd_in_binary_segmentation_is_alpha_times_kd() -> None:
    # one non-target class: NCKD ≡ 0, TCKD is the whole two-class KL
    from pipeline.losses import dkd_loss

    g = torch.Generator().manual_seed(0)
    s = torch.randn(2, 2, 5, 5, generator=g, dtype=torch.float64)
    t = torch.randn(2, 2, 5, 5, generator=g, dtype=torch.float64).log_softmax(1)
    target = torch.randint(0, 2, (2, 5, 5), generator=g)
    for beta in (0.0, 8.0, 100.0):  # β cannot matter
        got = dkd_loss(s, t, target, tau=2.0, alpha=0.7, beta=beta)
        assert torch.allclose(got, 0.7 * kd_loss(s, t, tau=2.0), rtol=1e-9)


def _dist_oracle(s, t, tau, beta, gamma):
    ys = (s.double() / tau).softmax(1).permute(0, 2, 3, 1).reshape(-1, s.shape[1]).numpy()
    yt = (t.double() / tau).softmax(1).permute(0, 2, 3, 1).reshape(-1, s.shape[1]).numpy()
    inter = 1 - np.mean([np.corrcoef(a, b)[0, 1] for a, b in zip(ys, yt, strict=True)])
    intra = 1 - np.mean([np.corrcoef(ys[:, c], yt[:, c])[0, 1] for c in range(ys.shape[1])])
    return tau**2 * (beta * inter + gamma * intra)


def test_dist_matches_pearson_from_numpy() -> None:
    from pipeline.losses import dist_loss

    g = torch.Generator().manual_seed(1)
    s = torch.randn(2, 4, 3, 5, generator=g, dtype=torch.float64)
    t = torch.randn(2, 4, 3, 5, generator=g, dtype=torch.float64).log_softmax(1)
    for tau, beta, gamma in ((1.0, 1.0, 1.0), (4.0, 2.0, 0.5)):
        got = float(dist_loss(s, t, tau, beta, gamma))
        assert got == pytest.approx(_dist_oracle(s, t, tau, beta, gamma), rel=1e-6)
    assert float(dist_loss(t, t)) == pytest.approx(0.0, abs=1e-6)  # identical maps


def test_dist_binary_inter_class_term_is_a_sign_without_gradient() -> None:
    from pipeline.losses import dist_loss

    g = torch.Generator().manual_seed(2)
    s = torch.randn(1, 2, 4, 4, generator=g, dtype=torch.float64, requires_grad=True)
    t = torch.randn(1, 2, 4, 4, generator=g, dtype=torch.float64).log_softmax(1)
    inter_only = dist_loss(s, t, beta=1.0, gamma=0.0)
    agree = ((s.detach().softmax(1)[:, 1] > 0.5) == (t.exp()[:, 1] > 0.5)).double()
    assert float(inter_only.detach()) == pytest.approx(1 - float((2 * agree - 1).mean()), abs=1e-6)
    inter_only.backward()
    assert s.grad.abs().max() < 1e-6
