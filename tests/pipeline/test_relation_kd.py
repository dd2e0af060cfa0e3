"""EMKD's terms, PA, IFVD, SPKD and CIRKD against float64 implementations written here from
the papers' formulas with plain loops on small hand-made tensors; the invariants (zero when
the student's relations equal the teacher's, gradients reach the student and the loss's own
parameters, never the teacher); every teacher loss of the table built and run."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pipeline.feature_kd import (
    EMKD,
    EMKD_ALPHA,
    EMKD_BETA1,
    EMKD_BETA2,
    importance_map_loss,
    region_affinity_loss,
)
from pipeline.kd_table import KD_LOSSES, LIVE, get_loss, implementation
from pipeline.losses import kd_loss
from pipeline.relation_kd import (
    CIRKD,
    batch_pair_loss,
    cap_nodes,
    contrast_kd,
    ifvd_loss,
    pairwise_loss,
    spkd_loss,
)


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


# --------------------------------------------------------------------------- oracles


def _imd64(s: np.ndarray, t: np.ndarray, p: int) -> float:
    """EMKD eq. 4: per image Q = mean_c f^p over positions, divided by its L2 norm;
    sum over positions of (Q_s - Q_t)^2, mean over images."""
    total = 0.0
    for b in range(s.shape[0]):
        qs = (s[b] ** p).mean(0).ravel()
        qt = (t[b] ** p).mean(0).ravel()
        qs, qt = qs / np.linalg.norm(qs), qt / np.linalg.norm(qt)
        total += ((qs - qt) ** 2).sum()
    return total / s.shape[0]


def _rad64(s: np.ndarray, t: np.ndarray, y: np.ndarray, k: int) -> float:
    """EMKD eq. 5-6: per image and class pair (i < j) both present, the cosine of the two
    class-mean feature vectors; squared student-teacher difference, mean over those images,
    summed over pairs."""
    total = 0.0
    for i in range(k):
        for j in range(i + 1, k):
            diffs = []
            for b in range(s.shape[0]):
                mi, mj = y[b] == i, y[b] == j
                if mi.any() and mj.any():
                    cs = _cos(s[b][:, mi].mean(1), s[b][:, mj].mean(1))
                    ct = _cos(t[b][:, mi].mean(1), t[b][:, mj].mean(1))
                    diffs.append((cs - ct) ** 2)
            if diffs:
                total += sum(diffs) / len(diffs)
    return total


def _pa64(s: np.ndarray, t: np.ndarray) -> float:
    """SKD eq. 2 on 2x2 max-pooled nodes: a_ij = cos(f_i, f_j); mean over images and pairs of
    (a^s_ij - a^t_ij)^2."""

    def sims(f: np.ndarray) -> np.ndarray:
        c, h, w = f.shape
        nodes = [f[:, y : y + 2, x : x + 2].reshape(c, -1).max(1)
                 for y in range(0, h, 2) for x in range(0, w, 2)]  # fmt: skip
        return np.array([[_cos(a, b) for b in nodes] for a in nodes])

    return float(np.mean([((sims(s[b]) - sims(t[b])) ** 2).mean() for b in range(s.shape[0])]))


def _ifv64(s: np.ndarray, t: np.ndarray, y: np.ndarray, k: int) -> float:
    """IFVD eq. 3: per pixel the cosine to its class's mean feature (per image); MSE."""

    def ifv(f: np.ndarray) -> np.ndarray:
        out = np.zeros(y.shape)
        for b in range(f.shape[0]):
            for c in range(k):
                m = y[b] == c
                if m.any():
                    centre = f[b][:, m].mean(1)
                    for py, px in zip(*np.nonzero(m), strict=True):
                        out[b, py, px] = _cos(f[b][:, py, px], centre)
        return out

    return float(((ifv(s) - ifv(t)) ** 2).mean())


def _sp64(s: np.ndarray, t: np.ndarray) -> float:
    """SPKD eq. 2-4: G = Q Q^T, rows L2-normalised; ||G_s - G_t||_F^2 / b^2."""

    def g(f: np.ndarray) -> np.ndarray:
        q = f.reshape(f.shape[0], -1)
        gram = q @ q.T
        return gram / np.linalg.norm(gram, axis=1, keepdims=True)

    return float(((g(s) - g(t)) ** 2).sum() / s.shape[0] ** 2)


def _pair64(s: np.ndarray, t: np.ndarray, tau: float) -> float:
    """CIRKD eq. 3: for images i, j and each pixel u of i, the distribution over pixels v of j
    of exp(cos(f_u, f_v) / tau); KL(teacher || student) averaged over u, then over (i, j)."""

    def unit(f: np.ndarray) -> np.ndarray:
        v = f.reshape(f.shape[0], -1)
        return v / np.linalg.norm(v, axis=0, keepdims=True)

    b = s.shape[0]
    total = 0.0
    for i in range(b):
        for j in range(b):
            zs, zt = unit(s[i]).T @ unit(s[j]) / tau, unit(t[i]).T @ unit(t[j]) / tau
            ps = np.exp(zs - zs.max(1, keepdims=True))
            ps /= ps.sum(1, keepdims=True)
            pt = np.exp(zt - zt.max(1, keepdims=True))
            pt /= pt.sum(1, keepdims=True)
            total += (pt * (np.log(pt) - np.log(ps))).sum(1).mean()
    return total / b**2


# --------------------------------------------------------------------------- tests


@pytest.fixture
def maps():
    rng = np.random.default_rng(0)
    s = rng.normal(size=(3, 4, 4, 6))
    t = rng.normal(size=(3, 5, 4, 6))  # another width: relations compare within a network
    y = rng.integers(0, 3, size=(3, 4, 6))
    y[2] = 0  # an image with one class only: no pair there
    return s, t, y


def test_emkd_terms_equal_the_formulas(maps) -> None:
    s, t, y = maps
    st, tt, yt = (torch.from_numpy(a) for a in (s, t, y))
    t4 = np.abs(t[:, :4])  # IMD: same grid, p = 4 and p = 2
    for p in (2, 4):
        got = importance_map_loss(st, torch.from_numpy(t4), p).item()
        assert got == pytest.approx(_imd64(s, t4, p), rel=1e-10)
    assert region_affinity_loss(st, tt, yt, 3).item() == pytest.approx(
        _rad64(s, t, y, 3), rel=1e-10
    )
    # a hand case: two classes whose mean vectors are (1, 0) and (0, 1) in the student
    # (cos 0) and (1, 0), (1, 0) in the teacher (cos 1): (0 - 1)^2 = 1
    f_s = torch.tensor([[[[1.0, 0.0]], [[0.0, 1.0]]]], dtype=torch.float64)
    f_t = torch.tensor([[[[1.0, 1.0]], [[0.0, 0.0]]]], dtype=torch.float64)
    lab = torch.tensor([[[0, 1]]])
    assert region_affinity_loss(f_s, f_t, lab, 2).item() == pytest.approx(1.0)


def test_emkd_is_its_weighted_sum() -> None:
    torch.manual_seed(0)
    s_logits, t_logits = torch.randn(2, 2, 8, 8), torch.randn(2, 2, 8, 8)
    s_maps = [torch.randn(2, 4, 2, 2), torch.randn(2, 3, 4, 4)]
    t_maps = [torch.randn(2, 6, 2, 2), torch.randn(2, 5, 4, 4)]
    y = (torch.rand(2, 8, 8) > 0.5).long()
    got = EMKD([4, 3], [6, 5], 2)((s_logits, s_maps), (t_logits, t_maps), y)
    want = EMKD_ALPHA * kd_loss(s_logits, t_logits, 4.0) + sum(
        EMKD_BETA1 * importance_map_loss(a, b) + EMKD_BETA2 * region_affinity_loss(a, b, y, 2)
        for a, b in zip(s_maps, t_maps, strict=True)
    )
    assert got.item() == pytest.approx(want.item(), rel=1e-6)


def test_pa_ifvd_spkd_equal_the_formulas(maps) -> None:
    s, t, y = maps
    st, tt, yt = (torch.from_numpy(a) for a in (s, t, y))
    assert pairwise_loss(st, tt).item() == pytest.approx(_pa64(s, t), rel=1e-10)
    assert ifvd_loss(st, tt, yt, 3).item() == pytest.approx(_ifv64(s, t, y, 3), rel=1e-6)
    assert spkd_loss(st, tt).item() == pytest.approx(_sp64(s, t), rel=1e-10)
    # SPKD hand case: two orthogonal images in the student (G = I) against two equal ones
    # in the teacher (G rows (1, 1) / sqrt 2): ||I - J/sqrt2||^2 / 4 = (2 - sqrt 2) / 2 ... per
    # entry: 2 * (1 - 1/sqrt2)^2 + 2 * (1/sqrt2)^2, over b^2 = 4
    a = torch.tensor([[[[1.0, 0.0]]], [[[0.0, 1.0]]]], dtype=torch.float64)
    b = torch.tensor([[[[1.0, 1.0]]], [[[1.0, 1.0]]]], dtype=torch.float64)
    want = (2 * (1 - 2**-0.5) ** 2 + 2 * 0.5) / 4
    assert spkd_loss(a, b).item() == pytest.approx(want)


def test_cirkd_batch_term_equals_the_formula(maps) -> None:
    s, t, _ = maps
    got = batch_pair_loss(torch.from_numpy(s), torch.from_numpy(t), tau=0.5).item()
    assert got == pytest.approx(_pair64(s, t, 0.5), rel=1e-9)


def test_cirkd_contrast_kd_is_a_kl_over_columns() -> None:
    rng = np.random.default_rng(1)
    s, t = rng.normal(size=(4, 7)), rng.normal(size=(4, 7))
    ps = np.exp(s) / np.exp(s).sum(1, keepdims=True)
    pt = np.exp(t) / np.exp(t).sum(1, keepdims=True)
    want = (pt * (np.log(pt) - np.log(ps))).sum(1).mean()
    got = contrast_kd(torch.from_numpy(s), torch.from_numpy(t), 1.0).item()
    assert got == pytest.approx(want, rel=1e-10)


def test_relations_vanish_when_the_student_relates_as_the_teacher() -> None:
    torch.manual_seed(0)
    x = torch.randn(3, 4, 8, 8).double()
    y = (torch.rand(3, 8, 8) > 0.5).long()
    scaled = 2.5 * x  # every loss here is scale-free: cosines, normalised Gram rows
    assert pairwise_loss(scaled, x).item() == pytest.approx(0.0, abs=1e-12)
    assert ifvd_loss(scaled, x, y, 2).item() == pytest.approx(0.0, abs=1e-12)
    assert spkd_loss(scaled, x).item() == pytest.approx(0.0, abs=1e-12)
    assert batch_pair_loss(scaled, x).item() == pytest.approx(0.0, abs=1e-9)
    assert region_affinity_loss(scaled, x, y, 2).item() == pytest.approx(0.0, abs=1e-12)
    assert importance_map_loss(x, x).item() == 0.0


def test_cap_nodes_bounds_the_relation_maps() -> None:
    x = torch.randn(1, 2, 56, 56)
    assert cap_nodes(x).shape[-2:] == (28, 28)  # 3,136 positions -> 784 <= 1,024
    assert cap_nodes(torch.randn(1, 2, 32, 32)).shape[-2:] == (32, 32)  # already small
    assert math.prod(cap_nodes(torch.randn(1, 2, 100, 7)).shape[-2:]) <= 1024


@pytest.mark.parametrize("name", LIVE)
def test_every_teacher_loss_builds_runs_and_trains_the_right_parts(name) -> None:
    torch.manual_seed(0)
    row = get_loss(name)
    s_ch, t_ch = [3, 4][: row.taps], [6, 5][: row.taps]
    loss_module = implementation(row)(s_ch, t_ch, 2)
    s_maps = [torch.randn(2, c, 4 * (i + 1), 4 * (i + 1), requires_grad=True)
              for i, c in enumerate(s_ch)]  # fmt: skip
    # the teacher's maps on another grid: resized
    t_maps = [torch.randn(2, c, 8 * (i + 1), 8 * (i + 1), requires_grad=True)
              for i, c in enumerate(t_ch)]  # fmt: skip
    s_logits = torch.randn(2, 2, 16, 16, requires_grad=True)
    t_logits = torch.randn(2, 2, 16, 16, requires_grad=True)
    y = (torch.rand(2, 16, 16) > 0.5).long()
    loss = loss_module((s_logits, s_maps), (t_logits, t_maps), y)
    assert loss.ndim == 0 and math.isfinite(loss.item()) and loss.item() > 0
    loss.backward()
    assert all(m.grad is not None and m.grad.abs().sum() > 0 for m in s_maps)
    assert all(m.grad is None for m in t_maps) and t_logits.grad is None  # never the teacher
    for p in loss_module.parameters():  # the connector, CIRKD's head: trained with the student
        assert p.grad is not None and p.grad.abs().sum() > 0


def test_cirkd_memory_fills_with_teacher_embeddings_and_stays_bounded() -> None:
    torch.manual_seed(0)
    m = CIRKD([3], [4], 2)
    start = m.memory.pixel_queue.clone()
    t = torch.randn(2, 4, 4, 4)
    y = torch.zeros(2, 16, 16, dtype=torch.long)
    y[:, :8] = 1
    m((None, [torch.randn(2, 3, 4, 4)]), (None, [t]), y)
    assert m.memory.region_ptr.tolist() == [2, 2]  # one region mean per image and class
    assert m.memory.pixel_ptr.tolist() == [16, 16]  # 8 pixels of each class per image
    assert not torch.equal(m.memory.pixel_queue[:, :16], start[:, :16])
    assert torch.equal(m.memory.pixel_queue[:, 16:], start[:, 16:])
    assert torch.allclose(m.memory.pixel_queue.norm(dim=2), torch.ones(2, 20_000))
    sizes = {k: tuple(v.shape) for k, v in m.memory.state_dict().items()}
    assert sizes["pixel_queue"] == (2, 20_000, 4) and sizes["region_queue"] == (2, 2_000, 4)


def test_the_table_lists_the_ten_baselines_of_the_paper() -> None:
    names = {x.name for x in KD_LOSSES}
    assert {"kd", "fitnet", "at", "emkd", "cwd", "spkd", "pa", "ifvd", "cirkd", "dkd"} <= names
    assert all(callable(implementation(x)) for x in KD_LOSSES)
