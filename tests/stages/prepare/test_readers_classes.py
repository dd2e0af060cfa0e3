"""Multi-class masks: the --classes syntax, value and colour maps, and unknown values."""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from raw_trees import H, W, class_mask, photo, write

from stages.prepare.readers import RawPair, load_pair, parse_classes
from stages.prepare.readers.classes import ClassMap, read_class_mask
from stages.prepare.readers.imageio import ReadError, resize_mask

# ---------------------------------------------------------------- syntax


def test_gray_and_colour_forms_parse_in_order() -> None:
    gray = parse_classes("background=0, lesion_a=1,lesion_b=2")
    assert gray == ClassMap(("background", "lesion_a", "lesion_b"), (0, 1, 2))
    assert not gray.colour and gray.spec() == "background=0,lesion_a=1,lesion_b=2"
    colour = parse_classes("background=#000000,a=#FF0000,b=#00ff00")
    assert colour.values == ((0, 0, 0), (255, 0, 0), (0, 255, 0)) and colour.colour
    assert colour.spec() == "background=#000000,a=#ff0000,b=#00ff00"
    assert parse_classes("bg=0,lesion=255").values == (0, 255)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("background=0", "needs at least two entries"),
        ("", "needs at least two entries"),
        ("background=0,lesion", "entry 'lesion' is not name=value"),
        ("background=0,bad name=1", "entry 'bad name=1' is not name=value"),
        ("background=0,a=#ff00", r"the value must be 0..65535 or #rrggbb, got '#ff00'"),
        ("background=0,a=70000", "got '70000'"),
        ("background=0,a=#ff0000", "mixes gray values and #rrggbb colours"),
        ("background=0,a=1,a=2", "repeats the name 'a'"),
        ("background=0,a=1,b=1", "repeats the value '1'"),
        ("bg=#000000,a=#FF0000,b=#ff0000", "repeats the value '#ff0000'"),
    ],
)
def test_bad_specs_name_the_option_and_the_entry(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as err:
        parse_classes(spec)
    assert str(err.value).startswith("--classes")


# ---------------------------------------------------------------- reading


def _png(array: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", array)
    assert ok
    return data.tobytes()


def test_gray_values_map_to_their_class_ids() -> None:
    mask = class_mask(3, values=(0, 128, 255))
    ids = read_class_mask(_png(mask), parse_classes("bg=0,a=128,b=255"))
    np.testing.assert_array_equal(ids, class_mask(3, values=(0, 1, 2)))
    swapped = read_class_mask(_png(mask), parse_classes("bg=0,b=255,a=128"))
    np.testing.assert_array_equal(swapped, class_mask(3, values=(0, 2, 1)))


def test_sixteen_bit_values_are_used_as_stored() -> None:
    mask = np.zeros((H, W), np.uint16)
    mask[class_mask(4) == 1], mask[class_mask(4) == 2] = 1000, 2000
    ids = read_class_mask(_png(mask), parse_classes("bg=0,a=1000,b=2000"))
    np.testing.assert_array_equal(ids, class_mask(4))


def test_palette_png_values_are_its_indices() -> None:
    pal = Image.new("P", (W, H))
    pal.putdata(class_mask(5).flatten().tolist())
    pal.putpalette([0, 0, 0, 200, 30, 30, 30, 200, 30])  # the colours are not the values
    buf = io.BytesIO()
    pal.save(buf, "PNG")
    ids = read_class_mask(buf.getvalue(), parse_classes("bg=0,a=1,b=2"))
    np.testing.assert_array_equal(ids, class_mask(5))


def test_colour_masks_map_by_rgb() -> None:
    ids = class_mask(6)
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[ids == 1], rgb[ids == 2] = (255, 0, 0), (0, 255, 0)
    data = _png(rgb[..., ::-1])  # OpenCV writes BGR: the file holds red and green
    got = read_class_mask(data, parse_classes("background=#000000,a=#ff0000,b=#00ff00"))
    np.testing.assert_array_equal(got, ids)


def test_unknown_value_names_the_value_and_its_pixels() -> None:
    mask = class_mask(7)
    mask[0, :5] = 7  # five stray pixels
    with pytest.raises(ReadError) as err:
        read_class_mask(_png(mask), parse_classes("background=0,lesion_a=1,lesion_b=2"))
    assert str(err.value) == (
        "mask value(s) not in --classes background=0,lesion_a=1,lesion_b=2: 7 (5 px)"
    )


def test_unknown_colour_and_jpeg_masks_say_why() -> None:
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[class_mask(8) == 1] = (255, 0, 0)
    rgb[:2, :2] = (0, 0, 255)
    cmap = parse_classes("bg=#000000,a=#ff0000")
    with pytest.raises(ReadError, match=r"not in --classes bg=#000000,a=#ff0000: #0000ff \(4 px\)"):
        read_class_mask(_png(rgb[..., ::-1]), cmap)
    _, jpeg = cv2.imencode(".jpg", class_mask(8, values=(0, 100, 200)))
    with pytest.raises(ReadError, match="JPEG masks are lossy, use PNG"):
        read_class_mask(jpeg.tobytes(), parse_classes("bg=0,a=100,b=200"))


def test_colour_mask_under_a_gray_map_asks_for_colours() -> None:
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[class_mask(9) == 1] = (0, 0, 255)
    with pytest.raises(ReadError, match="mask has colours but --classes maps gray values"):
        read_class_mask(_png(rgb), parse_classes("bg=0,a=1"))


def test_gray_stored_as_rgb_reads_under_a_gray_map() -> None:
    mask = class_mask(10)
    got = read_class_mask(_png(cv2.merge([mask] * 3)), parse_classes("bg=0,a=1,b=2"))
    np.testing.assert_array_equal(got, mask)


def test_load_pair_with_a_class_map(tmp_path: Path) -> None:
    image = write(tmp_path / "i.jpg", photo(1))
    mask = write(tmp_path / "m.png", class_mask(1, values=(0, 10, 20)))
    loaded, problems = load_pair(RawPair("i", image, mask), 32, parse_classes("bg=0,a=10,b=20"))
    assert problems == [] and loaded is not None
    expected = resize_mask(class_mask(1), 32)
    np.testing.assert_array_equal(loaded.mask, expected)
    assert set(np.unique(loaded.mask)) == {0, 1, 2}
    assert loaded.fg_fraction == pytest.approx(np.count_nonzero(expected) / expected.size)
    bad, problems = load_pair(RawPair("i", image, mask), 32, parse_classes("bg=0,a=10"))
    assert bad is None
    assert [str(p) for p in problems] == [
        f"{mask}: mask value(s) not in --classes bg=0,a=10: 20 "
        f"({int((class_mask(1) == 2).sum())} px)"
    ]
