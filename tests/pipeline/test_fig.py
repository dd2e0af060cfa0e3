"""Tests for pipeline.fig: FIFO queues, image construction, the sampler schedule."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.fig import FalsePixelQueues, FIGConfig, FIGSampler, construct_images


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def one_pixel_batch(values: list[float], gt: int, pred: int) -> tuple[torch.Tensor, ...]:
    """B images of 1x1 pixel with RGB (v, v, v), each with the given gt/pred."""
    images = torch.tensor(values).view(-1, 1, 1, 1).expand(-1, 3, 1, 1).clone()  # (B, 3, 1, 1)
    gts = torch.full((len(values), 1, 1), gt)
    preds = torch.full((len(values), 1, 1), pred)
    return images, preds, gts


def rows(t: torch.Tensor) -> set[tuple[float, ...]]:
    return {tuple(r) for r in t.tolist()}


def test_fifo_order_and_overwrite() -> None:
    q = FalsePixelQueues(m=3, n=2)
    q.push(*one_pixel_batch([1.0, 2.0], gt=1, pred=0), k=5, generator=gen())
    assert q.fill(1) == 2 and q.fill(0) == 0 and not q.is_full()
    assert q.values(1)[:, 0].tolist() == [1.0, 2.0]
    q.push(*one_pixel_batch([3.0, 4.0, 5.0], gt=1, pred=0), k=5, generator=gen())
    assert q.fill(1) == 3
    assert q.values(1)[:, 0].tolist() == [3.0, 4.0, 5.0]  # 1 and 2 overwritten, oldest first
    q.push(*one_pixel_batch([6.0], gt=1, pred=0), k=5, generator=gen())
    assert q.values(1)[:, 0].tolist() == [4.0, 5.0, 6.0]
    q.push(*one_pixel_batch([7.0, 8.0], gt=0, pred=1), k=5, generator=gen())
    assert q.is_full() and q.values(0)[:, 0].tolist() == [7.0, 8.0]


def test_queue_summary_reports_fill_and_the_held_values() -> None:
    q = FalsePixelQueues(m=3, n=2)
    q.push(*one_pixel_batch([3.0, 4.0, 5.0, 6.0], gt=1, pred=0), k=5, generator=gen())
    background, lesion = q.summary()
    assert background["fill"] == 0 and background["length"] == 2
    assert all(v != v for v in background["mean"])  # an empty queue: NaN, not 0
    assert lesion["class"] == 1 and lesion["fill"] == 3 and lesion["length"] == 3
    assert lesion["mean"][0] == pytest.approx(5.0)  # 4, 5, 6: the 3 was overwritten
    assert lesion["std"][0] == pytest.approx((2 / 3) ** 0.5)


def test_push_more_than_length_keeps_newest() -> None:
    q = FalsePixelQueues(m=2, n=2)
    images = torch.arange(6.0).view(1, 1, 1, 6).expand(1, 3, 1, 6).clone()  # (1, 3, 1, 6)
    gts = torch.ones(1, 1, 6, dtype=torch.long)
    q.push(images, torch.zeros_like(gts), gts, k=6, generator=gen(3))
    assert q.fill(1) == 2 and len(rows(q.values(1))) == 2
    assert rows(q.values(1)) <= rows(images[0].flatten(1).T)


def test_push_takes_only_false_pixels_k_per_class() -> None:
    g = gen(1)
    images = torch.rand(2, 3, 8, 8, generator=g)
    gts = torch.randint(0, 2, (2, 8, 8), generator=g)
    preds = torch.randint(0, 2, (2, 8, 8), generator=g)
    q = FalsePixelQueues(m=1000, n=1000)
    q.push(images, preds, gts, k=4, generator=gen(2))
    for c in (0, 1):
        want = sum(min(4, int(((gts[b] == c) & (preds[b] != c)).sum())) for b in range(2))
        assert q.fill(c) == want
        allowed = rows(images.permute(0, 2, 3, 1)[(gts == c) & (preds != c)])  # (n, 3)
        assert rows(q.values(c)) <= allowed


def test_no_false_pixels_pushes_nothing() -> None:
    q = FalsePixelQueues(m=4, n=4)
    gts = torch.ones(1, 4, 4, dtype=torch.long)
    q.push(torch.rand(1, 3, 4, 4), gts.clone(), gts, k=3, generator=gen())
    assert q.fill(0) == 0 and q.fill(1) == 0 and q.values(1).shape == (0, 3)


def filled_queues(num_classes: int, seed: int = 0) -> FalsePixelQueues:
    q = FalsePixelQueues(m=50, n=60, num_classes=num_classes)
    g = gen(seed)
    for _ in range(6):
        images = torch.rand(2, 3, 10, 10, generator=g)
        gts = torch.randint(0, num_classes, (2, 10, 10), generator=g)
        preds = (gts + 1) % num_classes  # every pixel false
        q.push(images, preds, gts, k=20, generator=g)
    assert q.is_full()
    return q


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), num_classes=st.integers(2, 4), b=st.integers(1, 3))
def test_constructed_pixels_come_from_their_class_queue(
    seed: int, num_classes: int, b: int
) -> None:
    q = filled_queues(num_classes, seed)
    masks = torch.randint(0, num_classes, (b, 7, 9), generator=gen(seed + 1))
    out = construct_images(q, masks, gen(seed + 2))
    assert out.shape == (b, 3, 7, 9) and out.dtype == torch.float32
    pixels = out.permute(0, 2, 3, 1)  # (B, H, W, 3)
    for c in range(num_classes):
        assert rows(pixels[masks == c]) <= rows(q.values(c))


def test_construct_is_seeded_and_uses_queue_spread() -> None:
    q = filled_queues(2)
    masks = torch.zeros(1, 20, 20, dtype=torch.long)
    masks[:, 5:15, 5:15] = 1
    a = construct_images(q, masks, gen(7))
    assert torch.equal(a, construct_images(q, masks, gen(7)))
    assert not torch.equal(a, construct_images(q, masks, gen(8)))
    assert len(rows(a.permute(0, 2, 3, 1)[masks == 1])) > 25  # uniform over 50 values, 100 draws


def test_construct_refuses_empty_queue_and_bad_labels() -> None:
    q = FalsePixelQueues(m=4, n=4)
    q.push(*one_pixel_batch([1.0], gt=0, pred=1), k=1, generator=gen())
    with pytest.raises(ValueError, match="queue of class 1 is empty"):
        construct_images(q, torch.ones(1, 2, 2, dtype=torch.long), gen())
    with pytest.raises(ValueError, match=r"masks values must lie in \[0, 2\)"):
        construct_images(q, torch.full((1, 2, 2), 2), gen())
    assert construct_images(q, torch.zeros(1, 2, 2, dtype=torch.long), gen()).eq(1.0).all()


def test_queue_lengths_and_validation() -> None:
    q = FalsePixelQueues(m=5, n=7, num_classes=3)
    assert q.lengths == [7, 5, 5]
    with pytest.raises(ValueError, match=r"FalsePixelQueues\.num_classes must be an integer >= 2"):
        FalsePixelQueues(num_classes=1)
    with pytest.raises(ValueError, match="images must have shape"):
        q.push(
            torch.rand(1, 1, 2, 2),
            torch.zeros(1, 2, 2).long(),
            torch.zeros(1, 2, 2).long(),
            1,
            gen(),
        )


def test_config_validation() -> None:
    with pytest.raises(ValueError, match=r"FIGConfig\.pixels_per_image must be an integer >= 1"):
        FIGConfig(pixels_per_image=0)
    with pytest.raises(ValueError, match=r"FIGConfig.real_fraction must lie in \[0, 1\]"):
        FIGConfig(real_fraction=1.5)


def real_batch(g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    images = torch.rand(2, 3, 6, 6, generator=g)
    gts = torch.zeros(2, 6, 6, dtype=torch.long)
    gts[:, 1:4, 1:4] = 1
    preds = 1 - gts  # all false
    return images, preds, gts


def test_sampler_phases() -> None:
    cfg = FIGConfig(queue_len_pos=20, queue_len_neg=30, pixels_per_image=5)
    sampler = FIGSampler(cfg, num_classes=2, generator=gen(0))
    g = gen(1)
    with pytest.raises(RuntimeError, match="not ready yet"):
        sampler.make_batch(torch.zeros(1, 6, 6, dtype=torch.long))
    outputs = [sampler.step(*real_batch(g)) for _ in range(5)]
    # 10 pushes of 5 per class per step: Q+ (20) full after 2 steps, Q- (30) after 3.
    assert [o is None for o in outputs] == [True, True, False, False, False]
    assert sampler.observations == 5 and sampler.constructions == 3
    synth, masks = outputs[-1]
    assert synth.shape == (2, 3, 6, 6) and masks.shape == (2, 6, 6)
    assert rows(synth.permute(0, 2, 3, 1)[masks == 1]) <= rows(sampler.queues.values(1))


def test_sampler_returns_the_masks_passed_in_and_is_reproducible() -> None:
    cfg = FIGConfig(queue_len_pos=9, queue_len_neg=9, pixels_per_image=9)
    results = []
    for _ in range(2):
        sampler = FIGSampler(cfg, 2, gen(5))
        sampler.observe(*real_batch(gen(6)))
        assert sampler.ready
        masks = torch.randint(0, 2, (3, 6, 6), generator=gen(9))
        synth, out_masks = sampler.make_batch(masks)
        assert out_masks is masks
        results.append(synth)
    assert torch.equal(results[0], results[1])


def test_sampler_real_fraction_mixes_real_images() -> None:
    cfg = FIGConfig(queue_len_pos=9, queue_len_neg=9, pixels_per_image=9, real_fraction=0.5)
    sampler = FIGSampler(cfg, 2, gen(5))
    images, preds, gts = real_batch(gen(6))
    sampler.observe(images, preds, gts)
    with pytest.raises(ValueError, match="needs the real images"):
        sampler.make_batch(gts)
    real = torch.rand(4, 3, 6, 6, generator=gen(2)) + 10.0  # not in any queue
    synth, _ = sampler.make_batch(torch.ones(4, 6, 6, dtype=torch.long), real)
    kept = [bool(torch.equal(synth[i], real[i])) for i in range(4)]
    assert sum(kept) == 2


def test_sampler_warmup_cap() -> None:
    cfg = FIGConfig(
        queue_len_pos=1000, queue_len_neg=1000, pixels_per_image=5, max_warmup_observations=2
    )
    sampler = FIGSampler(cfg, 2, gen(0))
    g = gen(1)
    assert sampler.step(*real_batch(g)) is None
    assert sampler.step(*real_batch(g)) is not None  # cap reached, both queues non-empty
