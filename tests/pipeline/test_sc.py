"""Tests for pipeline.sc: similarity-based correction, the class bank, fallbacks."""

from __future__ import annotations

import pytest
import torch
from cascade_oracles import FAISS_CPU, make_case, sc_loop  # helper dirs are on pythonpath
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline import sc
from pipeline.cascade import (
    ClassBank,
    SCConfig,
    false_pixels,
    needs_bank,
    sample_correct_pixels,
    similarity_correct,
)


def totals(info: dict[str, torch.Tensor]) -> dict[str, int]:
    """Per-image SC counts summed over the batch."""
    return {k: int(v.sum()) for k, v in info.items()}


def pixels(*vectors: list[float]) -> torch.Tensor:
    """Column vectors -> (1, K, 1, n) map."""
    return torch.tensor(vectors).T.reshape(1, len(vectors[0]), 1, len(vectors))


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    c=st.integers(2, 4),
    f=st.integers(2, 3),
    backend=st.sampled_from(["kdtree", "torch", "numpy", *FAISS_CPU, "auto"]),
)
def test_sc_copies_true_nearest_correct_pixel(seed: int, c: int, f: int, backend: str) -> None:
    probs, _, _, feats, gt = make_case(seed, 2, c, 5, 6, f)
    out, info = similarity_correct(probs, feats, gt, SCConfig(backend=backend, use_bank=False))
    ref, margin = sc_loop(probs, feats, gt, 0.1)
    assert ((out == ref).all(dim=1) | (margin < 1e-5)).all()
    assert not false_pixels(out, gt).any()
    per_image = info["sc_in_image"] + info["sc_onehot"]
    assert per_image.tolist() == false_pixels(probs, gt).flatten(1).sum(1).tolist()
    assert totals(info)["sc_bank"] == 0


def test_query_never_copies_from_another_class() -> None:
    # px0: GT 1, wrong (query). px1: GT 0, right, SAME feature as px0 (must be ignored).
    # px2: GT 1, right, distant feature: the only legal source.
    probs = pixels([0.9, 0.1, 0.0], [0.8, 0.2, 0.0], [0.3, 0.6, 0.1])
    feats = pixels([1.0, 0.0], [1.0, 0.0], [-1.0, 0.2])
    gt = torch.tensor([[[1, 0, 1]]])
    for backend in ("torch", "numpy", *FAISS_CPU, "kdtree"):
        out, info = similarity_correct(probs, feats, gt, SCConfig(backend=backend))
        assert torch.equal(out[0, :, 0, 0], probs[0, :, 0, 2])
        assert totals(info) == {"sc_in_image": 1, "sc_bank": 0, "sc_onehot": 0}


def test_copies_within_the_same_image_only() -> None:
    probs = torch.cat([pixels([0.9, 0.1], [0.2, 0.8]), pixels([0.4, 0.6], [0.7, 0.3])])
    feats = torch.cat([pixels([1.0, 0.0], [0.0, 1.0]), pixels([1.0, 0.0], [1.0, 0.01])])
    gt = torch.tensor([[[1, 1]], [[1, 0]]])  # image 0: px0 wrong, px1 right
    out, _ = similarity_correct(probs, feats, gt, SCConfig(backend="torch"))
    assert torch.equal(out[0, :, 0, 0], torch.tensor([0.2, 0.8]))
    assert torch.equal(out[1], probs[1])


def test_bank_then_smoothed_onehot() -> None:
    # class 1 has no correct pixel in the image: bank, then smoothed one-hot.
    probs = pixels([0.9, 0.1, 0.0], [0.6, 0.3, 0.1], [0.2, 0.1, 0.7])
    feats = pixels([1.0, 0.0], [0.0, 1.0], [1.0, 1.0])
    gt = torch.tensor([[[1, 1, 2]]])
    assert needs_bank(probs, gt).tolist() == [True]
    bank = ClassBank(
        features={1: torch.tensor([[0.0, 1.0], [1.0, 0.1]])},
        soft={1: torch.tensor([[0.3, 0.4, 0.3], [0.1, 0.5, 0.4]])},
    )
    out, info = similarity_correct(probs, feats, gt, SCConfig(backend="torch"), bank)
    assert torch.equal(out[0, :, 0, 0], bank.soft[1][1])
    assert torch.equal(out[0, :, 0, 1], bank.soft[1][0])
    assert totals(info) == {"sc_in_image": 0, "sc_bank": 2, "sc_onehot": 0}
    for cfg, b in ((SCConfig(backend="torch"), None), (SCConfig(use_bank=False), bank)):
        out, info = similarity_correct(probs, feats, gt, cfg, b)
        assert torch.allclose(out[0, :, 0, 0], torch.tensor([0.05, 0.9, 0.05]))
        assert totals(info) == {"sc_in_image": 0, "sc_bank": 0, "sc_onehot": 2}
    empty = ClassBank(features={2: torch.ones(1, 2)}, soft={2: torch.tensor([[0.0, 0.0, 1.0]])})
    assert similarity_correct(probs, feats, gt, SCConfig(), empty)[1]["sc_onehot"].tolist() == [2]


def test_tied_copied_vector_falls_back_to_onehot() -> None:
    probs = pixels([0.9, 0.1])
    gt = torch.tensor([[[1]]])
    bank = ClassBank(features={1: torch.ones(1, 2)}, soft={1: torch.tensor([[0.5, 0.5]])})
    out, info = similarity_correct(probs, torch.ones(1, 2, 1, 1), gt, SCConfig(smoothing=0.2), bank)
    assert torch.allclose(out.flatten(), torch.tensor([0.2, 0.8]))
    assert totals(info) == {"sc_in_image": 0, "sc_bank": 0, "sc_onehot": 1}


def test_invariant_violation_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    probs, _, _, feats, gt = make_case(0, 1, 2, 4, 4, 3)
    monkeypatch.setattr(
        sc, "_fill_class", lambda f, q, *a, **k: (torch.tensor([1.0, 0.0]).expand(len(q), 2), 0)
    )
    gt = 1 - probs.argmax(dim=1)  # every pixel wrong, class 1 queries get class-0 vectors
    with pytest.raises(RuntimeError, match="argmax differs from the GT; this is a bug"):
        similarity_correct(probs, feats, gt, SCConfig(backend="torch"))


def test_needs_bank_hand_case() -> None:
    probs = torch.cat([pixels([0.9, 0.1], [0.8, 0.2]), pixels([0.9, 0.1], [0.2, 0.8])])
    gt = torch.tensor([[[1, 0]], [[1, 1]]])  # image 0: class 1 all wrong; image 1: one right
    assert needs_bank(probs, gt).tolist() == [True, False]
    assert needs_bank(probs, probs.argmax(dim=1)).tolist() == [False, False]


def test_sample_correct_pixels_and_bank_order() -> None:
    probs, _, _, feats, gt = make_case(4, 2, 3, 6, 6, 5)
    g = torch.Generator().manual_seed(0)
    samples = [sample_correct_pixels(probs[i], feats[i], gt[i], 2, g) for i in range(2)]
    for i, sample in enumerate(samples):
        for c, (f, s) in sample.items():
            assert 1 <= len(f) <= 2 and f.shape[1] == 5 and s.shape[1] == 3
            assert torch.allclose(f.norm(dim=1), torch.ones(len(f)))
            assert (s.argmax(dim=1) == c).all()
            right = (probs[i].argmax(0) == gt[i]) & (gt[i] == c)
            allowed = {tuple(v) for v in probs[i].flatten(1).T[right.flatten()].tolist()}
            assert {tuple(v) for v in s.tolist()} <= allowed
    bank = ClassBank.from_samples(samples)
    for c in bank.features:
        parts = [s[c][1] for s in samples if c in s]
        assert torch.equal(bank.soft[c], torch.cat(parts))
        assert bank.size(c) == sum(len(p) for p in parts)
    assert bank.size(99) == 0 and bank.to("cpu").size(0) == bank.size(0)
    again = sample_correct_pixels(probs[0], feats[0], gt[0], 2, torch.Generator().manual_seed(0))
    assert all(torch.equal(again[c][0], samples[0][c][0]) for c in again)


@pytest.mark.parametrize("f", [3, 16, 64])
def test_sampled_features_are_the_bits_of_a_whole_image_normalisation(f: int) -> None:
    # only the sampled pixels are normalised; each row must equal, bit for bit, that pixel's
    # row of the whole image's normalisation (the bank's definition, and the stored bytes)
    gen = torch.Generator().manual_seed(f)
    feats = torch.randn(2, f, 40, 40, generator=gen) * 7
    gt = (torch.rand(2, 40, 40, generator=gen) > 0.6).long()
    # a distinct soft vector per pixel (argmax == gt) tells which pixel a sample came from
    u = torch.arange(1, 1601, dtype=torch.float64).view(1, 40, 40) / 3202
    fg = torch.where(gt == 1, 0.5 + u, u).expand(2, 40, 40)
    probs = torch.stack([1 - fg, fg], 1).float()
    generators = [torch.Generator().manual_seed(j) for j in range(2)]
    for b, sample in enumerate(sc.sample_batch(probs, feats, gt, 50, generators)):
        whole = torch.nn.functional.normalize(feats[b].flatten(1).T, dim=1)  # (H*W, F)
        fg_b = probs[b, 1].flatten()
        for unit, soft in sample.values():
            pixel = torch.nonzero(soft[:, 1:2] == fg_b[None])[:, 1]  # (n,) one match each
            assert len(unit) == 50 and len(pixel) == 50
            assert torch.equal(unit, whole[pixel])


def test_all_correct_input_is_returned_unchanged() -> None:
    probs, _, _, feats, _ = make_case(5, 2, 3, 4, 4, 3)
    out, info = similarity_correct(probs, feats, probs.argmax(dim=1), SCConfig())
    assert torch.equal(out, probs) and out is not probs
    assert totals(info) == {"sc_in_image": 0, "sc_bank": 0, "sc_onehot": 0}


def test_config_and_input_validation() -> None:
    with pytest.raises(ValueError, match=r"SCConfig\.backend must be one of auto, faiss-gpu"):
        SCConfig(backend="hnsw")
    with pytest.raises(ValueError, match=r"SCConfig.smoothing must lie in \[0, 0.5\)"):
        SCConfig(smoothing=0.5)
    probs, _, _, feats, gt = make_case(0, 1, 2, 4, 4, 3)
    with pytest.raises(ValueError, match="feats must have shape"):
        similarity_correct(probs, feats[..., :3], gt, SCConfig())
    with pytest.raises(ValueError, match=r"gt values must lie in \[0, 2\)"):
        similarity_correct(probs, feats, gt + 2, SCConfig())
    with pytest.raises(ValueError, match="integer class ids"):
        similarity_correct(probs, feats, gt.float(), SCConfig())


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), backend=st.sampled_from(["torch", "numpy"]))
def test_batched_sc_equals_sc_image_by_image(seed: int, backend: str) -> None:
    """One call over the batch gives exactly the outputs and counts of one call per image."""
    probs, _, _, feats, gt = make_case(seed, 4, 3, 7, 5, 4)
    gt[1] = probs[1].argmax(0)  # an all-correct image among them
    cfg = SCConfig(backend=backend)
    bank = ClassBank(
        features={2: torch.randn(5, 4)},
        soft={2: torch.softmax(torch.randn(5, 3) + torch.tensor([0, 0, 9.0]), 1)},
    )
    gt[3][gt[3] == 2] = 0  # keep class 2 out of image 3 ...
    gt[0][probs[0].argmax(0) == 2] = 1  # ... and give image 0 class-2 pixels that are all wrong
    gt[0, 0, 0] = 2 if probs[0, :, 0, 0].argmax() != 2 else gt[0, 0, 0]
    out, info = similarity_correct(probs, feats, gt, cfg, bank)
    right = probs.argmax(1) == gt
    again, info_r = similarity_correct(probs, feats, gt, cfg, bank, right=right)
    assert torch.equal(out, again) and totals(info) == totals(info_r)
    for i in range(4):
        one, info_i = similarity_correct(
            probs[i : i + 1], feats[i : i + 1], gt[i : i + 1], cfg, bank
        )
        assert torch.equal(out[i : i + 1], one)
        assert {k: int(v[i]) for k, v in info.items()} == totals(info_i)


def test_needs_bank_with_given_mask() -> None:
    probs = torch.cat([pixels([0.9, 0.1], [0.8, 0.2]), pixels([0.9, 0.1], [0.2, 0.8])])
    gt = torch.tensor([[[1, 0]], [[1, 1]]])
    right = probs.argmax(1) == gt
    assert needs_bank(probs, gt, right).tolist() == needs_bank(probs, gt).tolist() == [True, False]
