"""Raw-file decoding: image and mask normalisation, broken files, one pair, resizing."""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from raw_trees import (  # tests/ helper dirs are on pythonpath (pyproject)
    H,
    W,
    blob,
    photo,
    truncate,
    write,
)

from stages.prepare.readers import RawPair, load_pair
from stages.prepare.readers.imageio import (
    ReadError,
    check_complete,
    read_image,
    read_mask,
    resize_image,
    resize_mask,
)


def _encode(array: np.ndarray, ext: str, params: tuple[int, ...] = ()) -> bytes:
    ok, buf = cv2.imencode(ext, array, list(params))
    assert ok
    return buf.tobytes()


def _pil_bytes(img: Image.Image, fmt: str = "PNG") -> bytes:
    out = io.BytesIO()
    img.save(out, fmt)
    return out.getvalue()


# ---------------------------------------------------------------- image normalisation


def test_bgr_file_reads_as_rgb() -> None:
    bgr = np.zeros((4, 5, 3), np.uint8)
    bgr[..., 2] = 255  # pure red in OpenCV's order
    rgb = read_image(_encode(bgr, ".png"))
    assert rgb.shape == (4, 5, 3) and (rgb == [255, 0, 0]).all()


def test_gray_image_becomes_three_equal_channels() -> None:
    gray = np.arange(20, dtype=np.uint8).reshape(4, 5) * 10
    rgb = read_image(_encode(gray, ".png"))
    for c in range(3):
        np.testing.assert_array_equal(rgb[..., c], gray)


def test_rgba_drops_alpha() -> None:
    bgra = np.zeros((3, 3, 4), np.uint8)
    bgra[..., 0], bgra[..., 3] = 200, 7  # blue, nearly transparent
    rgb = read_image(_encode(bgra, ".png"))
    assert rgb.shape == (3, 3, 3) and (rgb == [0, 0, 200]).all()


@pytest.mark.parametrize("ext", [".png", ".tif"])
def test_16_bit_is_scaled_to_8_bit(ext: str) -> None:
    deep = np.array([[0, 257, 65535], [32896, 65280, 128]], np.uint16)
    rgb = read_image(_encode(deep, ext))
    np.testing.assert_array_equal(rgb[..., 0], [[0, 1, 255], [128, 254, 0]])


def test_palette_image_becomes_its_colours() -> None:
    img = Image.fromarray(np.array([[0, 1], [1, 2]], np.uint8), mode="P")
    img.putpalette([0, 0, 0, 255, 0, 0, 0, 0, 255] + [0] * 759)
    rgb = read_image(_pil_bytes(img))
    np.testing.assert_array_equal(rgb[1, 1], [0, 0, 255])
    np.testing.assert_array_equal(rgb[0, 1], [255, 0, 0])


def test_format_opencv_cannot_read_falls_back_to_pillow() -> None:
    img = Image.fromarray(np.full((3, 4, 3), (10, 20, 30), np.uint8))
    data = _pil_bytes(img, "TGA")
    assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) is None
    assert (read_image(data) == [10, 20, 30]).all()  # RGB order from Pillow, not swapped


# ---------------------------------------------------------------- mask normalisation

MASK = blob(5)


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("0/255 png", _encode(MASK, ".png")),
        ("0/1 png", _encode(MASK // 255, ".png")),
        ("rgb gray png", _encode(cv2.merge([MASK] * 3), ".png")),
        ("0/65535 tif", _encode(MASK.astype(np.uint16) * 257, ".tif")),
        ("0/255 bmp", _encode(MASK, ".bmp")),
    ],
)
def test_lossless_masks_normalise_exactly(name: str, data: bytes) -> None:
    np.testing.assert_array_equal(read_mask(data), MASK // 255, err_msg=name)


def test_jpeg_artefacted_mask_thresholds_at_half_max() -> None:
    data = _encode(cv2.merge([MASK] * 3), ".jpg", (cv2.IMWRITE_JPEG_QUALITY, 40))
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
    assert len(np.unique(decoded)) > 2  # the file really has artefacts
    mask = read_mask(data)
    assert set(np.unique(mask)) <= {0, 1}
    assert np.mean(mask != MASK // 255) < 0.01


def test_palette_mask_uses_indices_not_colours() -> None:
    img = Image.fromarray((MASK // 255).astype(np.uint8), mode="P")
    img.putpalette([0, 0, 0, 128, 0, 0] + [0] * 762)  # index 1 is dark red
    np.testing.assert_array_equal(read_mask(_pil_bytes(img)), MASK // 255)


def test_gradient_mask_is_non_binary() -> None:
    ramp = np.tile(np.linspace(0, 255, W).astype(np.uint8), (H, 1))
    with pytest.raises(ReadError, match=r"non-binary mask values: .* mid-grey"):
        read_mask(_encode(ramp, ".png"))


def test_class_index_mask_is_non_binary() -> None:
    labels = np.zeros((8, 8), np.uint8)
    labels[:4], labels[4:6] = 1, 2
    with pytest.raises(ReadError, match="non-binary mask values: the largest value is 2"):
        read_mask(_encode(labels, ".png"))


# ---------------------------------------------------------------- broken files


def test_truncated_files_are_detected(tmp_path: Path) -> None:
    for ext, reason in [(".jpg", "truncated JPEG"), (".png", "truncated PNG"), (".bmp", "BMP")]:
        path = truncate(write(tmp_path / f"x{ext}", photo(1, 64, 64)))
        with pytest.raises(ReadError, match=reason):
            read_image(path.read_bytes())


def test_jpeg_with_junk_after_its_end_marker_is_accepted() -> None:
    data = _encode(photo(2), ".jpg") + b"trailing junk from a camera"
    check_complete(data)
    assert read_image(data).shape == (H, W, 3)


@pytest.mark.parametrize(
    ("data", "reason"),
    [(b"", "file is empty"), (b"not an image at all", "unreadable or corrupt image file")],
)
def test_empty_and_garbage_files(data: bytes, reason: str) -> None:
    with pytest.raises(ReadError, match=reason):
        read_image(data)


def test_load_pair_reports_both_broken_files(tmp_path: Path) -> None:
    image = truncate(write(tmp_path / "a.jpg", photo(3, 64, 64)))
    mask = tmp_path / "a.png"
    mask.write_bytes(b"garbage")
    loaded, problems = load_pair(RawPair("a", image, mask), 32)
    assert loaded is None
    assert [(p.path, p.reason.split(" (")[0]) for p in problems] == [
        (image, "truncated JPEG"),
        (mask, "unreadable or corrupt image file"),
    ]


def test_load_pair_reports_a_file_that_cannot_be_read(tmp_path: Path) -> None:
    image = write(tmp_path / "a.png", photo(1))
    gone = tmp_path / "gone.png"
    _, problems = load_pair(RawPair("a", image, gone), 32)
    assert [str(p) for p in problems] == [f"{gone}: cannot read file (No such file or directory)"]


def test_load_pair_size_mismatch_names_the_mask(tmp_path: Path) -> None:
    image = write(tmp_path / "a.png", photo(1))
    mask = write(tmp_path / "m.png", blob(1, h=H + 2))
    _, problems = load_pair(RawPair("a", image, mask), 32)
    assert [str(p) for p in problems] == [f"{mask}: mask is 48×42 but its image is 48×40 (W×H)"]


# ---------------------------------------------------------------- resizing


def test_shrinking_averages_blocks_and_enlarging_masks_repeats_pixels() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (64, 64, 3)).astype(np.uint8)
    blocks = image.reshape(32, 2, 32, 2, 3).astype(float).mean(axis=(1, 3))  # 2x2 block means
    np.testing.assert_allclose(resize_image(image, 32), blocks, atol=1)
    mask = rng.integers(0, 2, (16, 16)).astype(np.uint8)
    np.testing.assert_array_equal(resize_mask(mask, 32), np.kron(mask, np.ones((2, 2), np.uint8)))


def test_enlarging_an_image_is_bilinear() -> None:
    image = np.zeros((2, 2, 3), np.uint8)
    image[:, 1] = 200
    big = resize_image(image, 32)
    row = big[0, :, 0].astype(int)
    assert row[0] == 0 and row[-1] == 200
    assert np.all(np.diff(row) >= 0) and 0 < row[16] < 200  # a ramp, not a step
