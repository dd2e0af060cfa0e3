"""Map reading and resampling of ``plc import-teacher``: hand-computed resampled answers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stages.import_teacher.maps import Expected, MapError, read_map, resample

BINARY = Expected(("background", "lesion"), (32, 32), "probabilities", 0.01)


def _binary(p_fg: np.ndarray) -> np.ndarray:
    return np.stack([1.0 - p_fg, p_fg])  # (2, H, W)


def test_shrinking_by_two_averages_each_2x2_block() -> None:
    """INTER_AREA (prepare's choice when both sides shrink) at 64² → 32² is the mean of each
    2×2 block."""
    p = np.random.default_rng(0).random((64, 64))
    want = p.reshape(32, 2, 32, 2).mean(axis=(1, 3))  # (32, 2, 32, 2) -> (32, 32)
    got = resample(_binary(p), (32, 32))
    assert got.dtype == np.float32 and got.shape == (2, 32, 32)
    np.testing.assert_allclose(got[1], want, atol=1e-6)
    np.testing.assert_allclose(got.sum(0), 1.0, atol=1e-6)


def test_enlarging_interpolates_a_ramp_linearly() -> None:
    """INTER_LINEAR (prepare's choice otherwise) at 16² → 32²: output column x samples the
    input at x/2 − 1/4 (pixel centres), clamped at the borders; a ramp stays a ramp."""
    ramp = 0.25 + 0.5 * np.arange(16) / 15  # p(foreground) along x
    got = resample(_binary(np.tile(ramp, (16, 1))), (32, 32))
    x = np.clip(np.arange(32) / 2 - 0.25, 0, 15)
    np.testing.assert_allclose(got[1], np.tile(0.25 + 0.5 * x / 15, (32, 1)), atol=1e-6)


def test_a_map_at_the_images_original_size_is_resampled(tmp_path: Path) -> None:
    p = np.random.default_rng(1).random((64, 64))
    np.save(tmp_path / "a.npy", _binary(p))
    got = read_map(tmp_path / "a.npy", "arrays", BINARY, (64, 64))
    np.testing.assert_allclose(got[1], p.reshape(32, 2, 32, 2).mean(axis=(1, 3)), atol=1e-6)


def test_logits_are_softmaxed(tmp_path: Path) -> None:
    z = np.random.default_rng(2).normal(size=(2, 32, 32)) * 5
    np.save(tmp_path / "a.npy", z)
    got = read_map(tmp_path / "a.npy", "arrays", Expected(BINARY.classes, (32, 32), "logits", 0.01),
                   (32, 32))  # fmt: skip
    np.testing.assert_allclose(got[1], 1 / (1 + np.exp(z[0] - z[1])), atol=1e-6)


@pytest.mark.parametrize(
    ("array", "original", "reason"),
    [
        (np.full((2, 4, 32, 32), 0.5), (32, 32), "is a 3-D volume (2, 4, 32, 32) (C, Z, H, W)"),
        (np.full((3, 32, 32), 1 / 3), (32, 32), "has C = 3 channels, the dataset has 2 classes"),
        (np.full((2, 40, 40), 0.5), (64, 64),
         "is 40×40; expected the image's original size 64×64 or the store's 32×32"),
        (np.full((2, 32, 32), 0.7), (32, 32), "1024 pixel(s) whose probabilities do not sum to 1"),
        (np.full((2, 32, 32), 3.0), (32, 32), "these look like logits: pass --kind logits"),
    ],
)  # fmt: skip
def test_a_bad_map_is_refused_with_its_reason(
    tmp_path: Path, array: np.ndarray, original: tuple[int, int], reason: str
) -> None:
    np.save(tmp_path / "a.npy", array)
    with pytest.raises(MapError) as err:
        read_map(tmp_path / "a.npy", "arrays", BINARY, original)
    assert reason in str(err.value)
