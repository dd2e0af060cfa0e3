"""Joint augmentation: exact flips/rot90, label consistency, photometric isolation, seeding."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.augment import AugmentConfig, augment_batch

GEOMETRY_OFF = {"flip": False, "rot90": False, "scale_crop": None, "rotate_deg": 0.0}
PHOTO_OFF = {"brightness": 0.0, "contrast": 0.0, "noise_std": 0.0}


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _random_batch(b: int = 8, c: int = 3, h: int = 16, w: int = 16, seed: int = 1):
    g = _gen(seed)
    images = torch.rand(b, 3, h, w, generator=g)
    masks = torch.randint(0, c, (b, h, w), generator=g)
    soft = torch.softmax(3 * torch.randn(b, c, h, w, generator=g), dim=1)
    return images, masks, soft


def _blob_batch(b: int = 6, size: int = 48):
    """Disc masks with a smooth soft label whose argmax equals the mask everywhere."""
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    centres = torch.tensor([[20.3, 24.1], [26.7, 22.2], [23.5, 27.4]]).repeat(b, 1)[:b]
    dist = ((yy - centres[:, 0, None, None]) ** 2 + (xx - centres[:, 1, None, None]) ** 2).sqrt()
    signed = 11.3 - dist  # (B, H, W) > 0 inside the disc; never 0 on a pixel centre
    masks = (signed > 0).long()
    p_fg = torch.sigmoid(signed / 2.0)
    soft = torch.stack([1 - p_fg, p_fg], dim=1)  # (B, 2, H, W)
    images = torch.stack([p_fg, 1 - p_fg, 0.5 * torch.ones_like(p_fg)], dim=1)
    assert torch.equal(soft.argmax(1), masks)
    return images, masks, soft


def _flip_candidates(x: torch.Tensor) -> list[torch.Tensor]:
    return [x, x.flip(-1), x.flip(-2), x.flip(-2).flip(-1)]


def test_flips_are_exact_and_shared_by_image_mask_soft() -> None:
    images, masks, soft = _random_batch(b=32)
    cfg = AugmentConfig(**{**GEOMETRY_OFF, "flip": True}, **PHOTO_OFF)
    out_i, out_m, out_s = augment_batch(images, masks, soft, cfg, _gen())
    used = set()
    for i in range(len(images)):
        matches = [k for k, c in enumerate(_flip_candidates(images[i])) if torch.equal(c, out_i[i])]
        assert len(matches) == 1
        k = matches[0]
        used.add(k)
        assert torch.equal(_flip_candidates(masks[i])[k], out_m[i])
        assert torch.equal(_flip_candidates(soft[i])[k], out_s[i])
    assert used == {0, 1, 2, 3}  # 32 samples exercise every flip combination


def test_rot90_is_exact_and_shared() -> None:
    images, masks, soft = _random_batch(b=32)
    cfg = AugmentConfig(**{**GEOMETRY_OFF, "rot90": True}, **PHOTO_OFF)
    out_i, out_m, out_s = augment_batch(images, masks, soft, cfg, _gen())
    used = set()
    for i in range(len(images)):
        rots = [torch.rot90(images[i], k, dims=(-2, -1)) for k in range(4)]
        k = next(k for k, r in enumerate(rots) if torch.equal(r, out_i[i]))
        used.add(k)
        assert torch.equal(torch.rot90(masks[i], k, dims=(-2, -1)), out_m[i])
        assert torch.equal(torch.rot90(soft[i], k, dims=(-2, -1)), out_s[i])
    assert used == {0, 1, 2, 3}


def test_rot90_on_non_square_keeps_shape_with_half_turns() -> None:
    images, masks, soft = _random_batch(b=16, h=8, w=12)
    cfg = AugmentConfig(**{**GEOMETRY_OFF, "rot90": True}, **PHOTO_OFF)
    out_i, out_m, out_s = augment_batch(images, masks, soft, cfg, _gen())
    assert out_i.shape == images.shape and out_m.shape == masks.shape
    assert out_s.shape == soft.shape
    for i in range(len(images)):
        assert torch.equal(out_i[i], images[i]) or torch.equal(out_i[i], images[i].flip(-1, -2))


def test_identity_config_returns_inputs() -> None:
    images, masks, soft = _random_batch()
    out = augment_batch(images, masks, soft, AugmentConfig(**GEOMETRY_OFF, **PHOTO_OFF), _gen())
    assert torch.equal(out[0], images) and torch.equal(out[1], masks) and torch.equal(out[2], soft)


def test_zero_angle_full_crop_affine_is_identity_up_to_rounding() -> None:
    images, masks, soft = _random_batch()
    cfg = AugmentConfig(**{**GEOMETRY_OFF, "scale_crop": (1.0, 1.0)}, **PHOTO_OFF)
    out_i, out_m, out_s = augment_batch(images, masks, soft, cfg, _gen())
    torch.testing.assert_close(out_i, images)
    torch.testing.assert_close(out_s, soft)
    assert torch.equal(out_m, masks)


def test_soft_argmax_agrees_with_mask_away_from_edges() -> None:
    images, masks, soft = _blob_batch()
    cfg = AugmentConfig(scale_crop=(0.6, 1.0), rotate_deg=30.0)
    for seed in range(5):
        _, out_m, out_s = augment_batch(images, masks, soft, cfg, _gen(seed))
        m = out_m.unsqueeze(1).float()  # (B, 1, H, W)
        uniform = (F.max_pool2d(m, 3, 1, 1) == -F.max_pool2d(-m, 3, 1, 1)).squeeze(1)
        assert uniform.float().mean() > 0.8
        assert torch.equal(out_s.argmax(1)[uniform], out_m[uniform])
        assert 0 < out_m.float().mean() < 1  # the blob is still in view


@pytest.mark.parametrize("seed", range(4))
def test_all_correct_soft_label_stays_all_correct_exactly(seed: int) -> None:
    images, masks, soft = _blob_batch()
    cfg = AugmentConfig(scale_crop=(0.6, 1.0), rotate_deg=30.0)
    _, out_m, out_s = augment_batch(images, masks, soft, cfg, _gen(seed))
    assert torch.equal(out_s.argmax(1), out_m)  # 100 % of pixels, edges included
    # The same draws with a mask that never agrees with the soft label: nothing is repaired,
    # so this is the plain bilinear resampling of the soft label.
    _, _, plain = augment_batch(images, 1 - masks, soft, cfg, _gen(seed))
    flipped = plain.argmax(1) != out_m  # (B, H, W) where bilinear mixing changed the argmax
    assert 0 < flipped.float().mean() < 0.05  # the repair was needed, and only on edges
    changed = (out_s != plain).any(1)
    assert torch.equal(changed, flipped)  # the repair touched exactly those pixels
    inputs = soft.permute(0, 2, 3, 1).reshape(-1, 2)  # every source vector
    for vec in out_s.permute(0, 2, 3, 1)[flipped]:  # a repaired pixel copies a source pixel
        assert (inputs == vec).all(1).any()


def test_soft_is_a_distribution_and_mask_values_stay() -> None:
    images, masks, soft = _random_batch(c=4)
    masks = masks * 2  # values {0, 2, 4, 6}: the mask must not be interpolated
    cfg = AugmentConfig(scale_crop=(0.5, 0.9), rotate_deg=45.0, noise_std=0.1)
    out_i, out_m, out_s = augment_batch(images, masks, soft, cfg, _gen(3))
    assert out_s.min() >= 0 and out_s.max() <= 1
    torch.testing.assert_close(out_s.sum(1), torch.ones_like(out_s[:, 0]))
    assert set(out_m.unique().tolist()) <= {0, 2, 4, 6}
    assert out_m.dtype == masks.dtype and out_s.dtype == soft.dtype
    assert out_i.min() >= 0 and out_i.max() <= 1


def test_photometric_changes_image_only() -> None:
    images, masks, soft = _random_batch()
    cfg = AugmentConfig(**GEOMETRY_OFF, brightness=0.3, contrast=0.3, noise_std=0.05)
    out_i, out_m, out_s = augment_batch(images, masks, soft, cfg, _gen())
    assert torch.equal(out_m, masks) and torch.equal(out_s, soft)
    assert not torch.allclose(out_i, images)
    assert out_i.min() >= 0 and out_i.max() <= 1


def test_brightness_offset_matches_hand_computation() -> None:
    images = torch.full((4, 3, 5, 5), 0.5)
    masks = torch.zeros(4, 5, 5, dtype=torch.long)
    cfg = AugmentConfig(**GEOMETRY_OFF, brightness=0.2, contrast=0.0)
    out_i, _, _ = augment_batch(images, masks, None, cfg, _gen(7))
    offsets = out_i[:, 0, 0, 0] - 0.5
    assert torch.all(offsets.abs() <= 0.2 + 1e-6)
    assert torch.equal(out_i, 0.5 + offsets.view(-1, 1, 1, 1).expand_as(out_i))  # uniform shift


def test_same_seed_same_output_and_different_seed_differs() -> None:
    images, masks, soft = _random_batch()
    cfg = AugmentConfig(noise_std=0.05)
    a = augment_batch(images, masks, soft, cfg, _gen(5))
    b = augment_batch(images, masks, soft, cfg, _gen(5))
    c = augment_batch(images, masks, soft, cfg, _gen(6))
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x, y)
    assert not torch.equal(a[0], c[0])


def test_soft_none_gives_the_same_image_and_mask() -> None:
    images, masks, soft = _random_batch()
    cfg = AugmentConfig(rotate_deg=20.0)
    with_soft = augment_batch(images, masks, soft, cfg, _gen(2))
    without = augment_batch(images, masks, None, cfg, _gen(2))
    assert without[2] is None
    assert torch.equal(with_soft[0], without[0]) and torch.equal(with_soft[1], without[1])


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"scale_crop": (0.0, 1.0)}, "scale_crop"),
        ({"scale_crop": (0.9, 0.8)}, "scale_crop"),
        ({"scale_crop": (0.5, 1.2)}, "scale_crop"),
        ({"rotate_deg": -1.0}, "rotate_deg"),
        ({"brightness": 1.5}, "brightness"),
        ({"contrast": -0.1}, "contrast"),
        ({"noise_std": -0.1}, "noise_std"),
    ],
)
def test_config_validation_names_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        AugmentConfig(**kwargs)


def test_shape_mismatch_is_refused() -> None:
    images, masks, soft = _random_batch()
    with pytest.raises(ValueError, match="masks must have shape"):
        augment_batch(images, masks[:, :8], soft, AugmentConfig(), _gen())
    with pytest.raises(ValueError, match="soft must have shape"):
        augment_batch(images, masks, soft[:2], AugmentConfig(), _gen())
    with pytest.raises(ValueError, match="masks must hold integer"):
        augment_batch(images, masks.float(), soft, AugmentConfig(), _gen())


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    h=st.integers(4, 20),
    w=st.integers(4, 20),
    classes=st.integers(1, 4),
    rotate=st.floats(0, 90),
    lo=st.floats(0.2, 1.0),
)
def test_property_shapes_and_label_invariants(
    seed: int, h: int, w: int, classes: int, rotate: float, lo: float
) -> None:
    images, masks, soft = _random_batch(b=3, c=classes, h=h, w=w, seed=seed)
    cfg = AugmentConfig(scale_crop=(lo, 1.0), rotate_deg=rotate, noise_std=0.02)
    out_i, out_m, out_s = augment_batch(images, masks, soft, cfg, _gen(seed))
    assert out_i.shape == images.shape and out_m.shape == masks.shape
    assert out_s.shape == soft.shape
    assert set(out_m.unique().tolist()) <= set(masks.unique().tolist())
    torch.testing.assert_close(out_s.sum(1), torch.ones(3, h, w))
    assert out_i.min() >= 0 and out_i.max() <= 1


def test_scale_crop_zooms_by_the_side_of_the_area_fraction() -> None:
    w = 32
    ramp = torch.linspace(0, 1, w).expand(2, 3, 16, w).clone()  # (B, 3, H, W) rising along x
    masks = torch.zeros(2, 16, w, dtype=torch.long)
    cfg = AugmentConfig(**{**GEOMETRY_OFF, "scale_crop": (0.25, 0.25)}, **PHOTO_OFF)
    out_i, _, _ = augment_batch(ramp, masks, None, cfg, _gen())
    step_in = 1 / (w - 1)
    torch.testing.assert_close(out_i.diff(dim=-1), torch.full_like(out_i[..., 1:], step_in / 2))


@pytest.mark.parametrize(("h", "w"), [(24, 24), (16, 32)])
def test_rotation_is_a_true_rotation_in_pixel_space(h: int, w: int) -> None:
    yy, xx = torch.meshgrid(
        torch.arange(h) - (h - 1) / 2, torch.arange(w) - (w - 1) / 2, indexing="ij"
    )
    radius = (yy**2 + xx**2).sqrt()  # (H, W) pixels from the centre: rotation-invariant
    images = (radius / 20).expand(4, 3, h, w).clone()
    masks = torch.zeros(4, h, w, dtype=torch.long)
    cfg = AugmentConfig(**{**GEOMETRY_OFF, "rotate_deg": 60.0}, **PHOTO_OFF)
    out_i, _, _ = augment_batch(images, masks, None, cfg, _gen(1))
    inner = (radius > 1.5) & (radius < min(h, w) / 2 - 1)
    err = (out_i - images)[..., inner].abs().max() * 20  # in pixels
    assert err < 0.1


@pytest.mark.gpu
def test_cuda_matches_cpu_with_a_cpu_generator() -> None:
    images, masks, soft = _random_batch()
    cfg = AugmentConfig(rotate_deg=20.0, noise_std=0.05)
    cpu = augment_batch(images, masks, soft, cfg, _gen(4))
    cuda = augment_batch(images.cuda(), masks.cuda(), soft.cuda(), cfg, _gen(4))
    torch.testing.assert_close(cuda[0].cpu(), cpu[0], atol=1e-4, rtol=0)
    torch.testing.assert_close(cuda[2].cpu(), cpu[2], atol=1e-4, rtol=0)
    assert (cuda[1].cpu() != cpu[1]).float().mean() < 0.01  # nearest ties may round apart
