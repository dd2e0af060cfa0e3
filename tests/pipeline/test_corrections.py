"""Tests for pipeline.corrections: swap by hand, the copy rules against float64 brute force."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pipeline.corrections import confident_rows, knn_indices, pick_vectors, swap_correct
from pipeline.sc import SCConfig, similarity_correct


def _map(values: list[list[float]]) -> torch.Tensor:
    """(1, C, 1, W) probabilities from W per-pixel vectors."""
    return torch.tensor(values, dtype=torch.float32).T.reshape(1, len(values[0]), 1, len(values))


def test_swap_by_hand_binary_and_three_classes() -> None:
    # binary: pixel 0 right, pixel 1 wrong (GT 1, p = 0.7 / 0.3) -> 0.3 / 0.7
    probs = _map([[0.9, 0.1], [0.7, 0.3]])
    gt = torch.tensor([[[0, 1]]])
    out, counts = swap_correct(probs, gt)
    assert torch.equal(out, _map([[0.9, 0.1], [0.3, 0.7]]))
    assert {k: int(v.sum()) for k, v in counts.items()} == {
        "sc_in_image": 1, "sc_bank": 0, "sc_onehot": 0,
    }  # fmt: skip
    # three classes: GT 2, argmax 0; only entries 0 and 2 trade places, class 1 keeps its 0.3
    out, _ = swap_correct(_map([[0.5, 0.3, 0.2]]), torch.tensor([[[2]]]))
    assert torch.equal(out, _map([[0.2, 0.3, 0.5]]))


def test_swap_tie_falls_back_to_the_smoothed_onehot() -> None:
    # 0.5 / 0.5 with GT 1: argmax is class 0 (lowest index); swapping changes nothing
    out, counts = swap_correct(_map([[0.5, 0.5]]), torch.tensor([[[1]]]), smoothing=0.1)
    assert torch.allclose(out, _map([[0.1, 0.9]]))
    assert int(counts["sc_onehot"].sum()) == 1 and int(counts["sc_in_image"].sum()) == 0


def test_swap_is_all_correct_and_touches_only_false_pixels() -> None:
    g = torch.Generator().manual_seed(0)
    probs = torch.rand(3, 4, 6, 7, generator=g).softmax(1)
    gt = torch.randint(0, 4, (3, 6, 7), generator=g)
    out, _ = swap_correct(probs, gt)
    assert torch.equal(out.argmax(1), gt)
    right = (probs.argmax(1) == gt).unsqueeze(1).expand_as(probs)
    assert torch.equal(out[right], probs[right])
    assert torch.allclose(out.sum(1), probs.sum(1))  # a permutation of each vector
    assert torch.equal(out.sort(1).values, probs.sort(1).values)


def _brute_cosine(q: torch.Tensor, db: torch.Tensor) -> torch.Tensor:
    q64, db64 = q.double(), db.double()
    return (q64 / q64.norm(dim=1, keepdim=True)) @ (db64 / db64.norm(dim=1, keepdim=True)).T


@pytest.mark.parametrize("k", [1, 3, 8, 50])
def test_knn_indices_match_a_float64_brute_force(k: int) -> None:
    g = torch.Generator().manual_seed(k)
    q, db = torch.randn(17, 5, generator=g), torch.randn(23, 5, generator=g)
    got = knn_indices(q, db, k, batch_size=4)  # several chunks
    sims = _brute_cosine(q, db)
    want = sims.argsort(dim=1, descending=True)[:, : min(k, 23)]
    assert got.shape == want.shape
    assert all(set(a.tolist()) == set(b.tolist()) for a, b in zip(got, want, strict=True))


def test_knn_picks_the_mean_of_the_k_nearest_vectors() -> None:
    g = torch.Generator().manual_seed(1)
    q, db = torch.randn(9, 4, generator=g), torch.randn(30, 4, generator=g)
    soft = torch.rand(30, 3, generator=g).softmax(1)
    got = pick_vectors("knn", q, db, soft, 0, k=5)
    nearest = _brute_cosine(q, db).argsort(dim=1, descending=True)[:, :5]
    assert torch.allclose(got.double(), soft.double()[nearest].mean(1), atol=1e-6)


@pytest.mark.parametrize("quantile", [0.0, 0.5, 0.9])
def test_confident_searches_only_rows_at_or_above_the_quantile(quantile: float) -> None:
    g = torch.Generator().manual_seed(2)
    q, db = torch.randn(12, 6, generator=g), torch.randn(40, 6, generator=g)
    p1 = 0.5 + 0.5 * torch.rand(40, generator=g)  # class 1 is the argmax of every row
    soft = torch.stack([1 - p1, p1], dim=1)
    got = pick_vectors("confident", q, db, soft, 1, quantile=quantile, backend="torch")
    kept = p1.double() >= torch.quantile(p1.double(), quantile)  # the oracle's database
    sims = _brute_cosine(q, db)
    sims[:, ~kept] = -torch.inf
    assert torch.equal(got, soft[sims.argmax(1)])
    assert torch.equal(confident_rows(soft, 1, quantile), kept)
    if quantile == 0.5:  # the median: the copied vectors are at least the median confident
        assert (got[:, 1].double() >= p1.double().median()).all()


def test_mean_and_random_rules() -> None:
    g = torch.Generator().manual_seed(3)
    q, db = torch.randn(6, 3, generator=g), torch.randn(10, 3, generator=g)
    soft = torch.rand(10, 2, generator=g).softmax(1)
    mean = pick_vectors("mean", q, db, soft, 0)
    assert torch.allclose(mean, soft.mean(0).expand(6, -1))
    a = pick_vectors("random", q, db, soft, 0, generator=torch.Generator().manual_seed(7))
    b = pick_vectors("random", q, db, soft, 0, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)  # the generator decides, nothing else
    draws = torch.randint(10, (6,), generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, soft[draws])
    with pytest.raises(ValueError, match="needs a generator"):
        pick_vectors("random", q, db, soft, 0)
    with pytest.raises(ValueError, match="unknown copy rule"):
        pick_vectors("best", q, db, soft, 0)


@pytest.mark.parametrize("rule", ["random", "mean", "confident", "knn"])
def test_sc_rules_are_all_correct_and_keep_correct_pixels(rule: str) -> None:
    g = torch.Generator().manual_seed(4)
    probs = torch.rand(2, 3, 8, 8, generator=g).softmax(1)
    feats = torch.randn(2, 5, 8, 8, generator=g)
    gt = torch.randint(0, 3, (2, 8, 8), generator=g)
    gens = [torch.Generator().manual_seed(i) for i in range(2)]
    out, counts = similarity_correct(
        probs, feats, gt, SCConfig(backend="torch", knn_k=3), rule=rule, generators=gens
    )
    assert torch.equal(out.argmax(1), gt)
    right = (probs.argmax(1) == gt).unsqueeze(1).expand_as(probs)
    assert torch.equal(out[right], probs[right])
    assert sum(int(v.sum()) for v in counts.values()) == int((~right[:, 0]).sum())


def test_random_rule_copies_a_correct_pixel_of_the_same_image_and_class() -> None:
    g = torch.Generator().manual_seed(5)
    probs = torch.rand(1, 2, 6, 6, generator=g).softmax(1)
    feats = torch.randn(1, 4, 6, 6, generator=g)
    gt = torch.randint(0, 2, (1, 6, 6), generator=g)
    out, _ = similarity_correct(probs, feats, gt, SCConfig(), rule="random",
                                generators=[torch.Generator().manual_seed(0)])  # fmt: skip
    flat_in, flat_out = probs[0].flatten(1).T, out[0].flatten(1).T  # (H*W, C)
    right = (probs.argmax(1) == gt)[0].flatten()
    for pix in torch.nonzero(~right).squeeze(1).tolist():
        c = int(gt.flatten()[pix])
        donors = flat_in[right & (gt.flatten() == c)]
        assert (donors == flat_out[pix]).all(1).any()  # an exact copy of some donor
    with pytest.raises(ValueError, match="needs one generator per image"):
        similarity_correct(probs, feats, gt, SCConfig(), rule="random")


def test_knn_with_k_1_is_the_papers_sc() -> None:
    g = torch.Generator().manual_seed(6)
    probs = torch.rand(2, 2, 7, 7, generator=g).softmax(1)
    feats = F.normalize(torch.randn(2, 6, 7, 7, generator=g), dim=1)
    gt = torch.randint(0, 2, (2, 7, 7), generator=g)
    paper, _ = similarity_correct(probs, feats, gt, SCConfig(backend="torch"))
    knn1, _ = similarity_correct(probs, feats, gt, SCConfig(backend="torch", knn_k=1), rule="knn")
    assert torch.allclose(paper, knn1)
