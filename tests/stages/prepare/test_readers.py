"""Raw-layout readers: listing each published tree, problems, and the seeded split."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from raw_trees import (  # tests/ helper dirs are on pythonpath (pyproject)
    IDRID,
    ISIC_TEST,
    ISIC_TRAIN,
    ISIC_VAL,
    blob,
    cvc_tree,
    folder_tree,
    idrid_tree,
    isic_tree,
    kvasir_tree,
    photo,
    write,
)

from stages.prepare.readers import (
    LAYOUTS,
    DatasetError,
    RawPair,
    get_layout,
    load_pair,
    seeded_split,
)
from stages.prepare.readers.imageio import (
    resize_mask,
)

# ---------------------------------------------------------------- layouts


def test_registry_is_a_literal_dict_with_every_layout() -> None:
    assert list(LAYOUTS) == ["synthetic", "folder", "kvasir", "cvc", "isic", "idrid", "glob"]
    assert not LAYOUTS["synthetic"].needs_root
    assert LAYOUTS["idrid"].classes == ("background", "optic_disc")
    assert LAYOUTS["folder"].classes == ("background", "lesion")


def test_unknown_layout_lists_the_choices() -> None:
    with pytest.raises(DatasetError, match="unknown dataset layout 'kvasr'") as err:
        get_layout("kvasr")
    assert "synthetic, folder, kvasir, cvc, isic, idrid, glob" in str(err.value)


def test_folder_pairs_by_stem_across_formats(tmp_path: Path) -> None:
    formats = [(".jpg", ".png"), (".jpeg", ".bmp"), (".png", ".tif"), (".bmp", ".tiff")]
    for i, (img_ext, mask_ext) in enumerate(formats):
        write(tmp_path / "images" / f"case{i}{img_ext}", photo(i))
        write(tmp_path / "masks" / f"case{i}{mask_ext}", blob(i))
    (tmp_path / "images" / "README.txt").write_text("not an image")
    (tmp_path / "images" / ".DS_Store").write_bytes(b"junk")
    listing = LAYOUTS["folder"].scan(tmp_path)
    assert listing.problems == []
    assert [p.id for p in listing.pairs] == ["case0", "case1", "case2", "case3"]
    assert [p.mask_path.suffix for p in listing.pairs] == [m for _, m in formats]
    assert all(p.split is None and not p.negative for p in listing.pairs)


def test_folder_negatives_only_when_asked(tmp_path: Path) -> None:
    folder_tree(tmp_path, n=3, negatives=2)
    assert len(LAYOUTS["folder"].scan(tmp_path).pairs) == 3
    listing = LAYOUTS["folder"].scan(tmp_path, include_negatives=True)
    negatives = [p for p in listing.pairs if p.negative]
    assert [p.id for p in negatives] == ["neg_neg00", "neg_neg01"]
    assert all(p.mask_path is not None for p in negatives)


def test_folder_negatives_without_masks_get_empty_masks(tmp_path: Path) -> None:
    folder_tree(tmp_path, n=2, negatives=2, masks_for_negatives=False)
    listing = LAYOUTS["folder"].scan(tmp_path, include_negatives=True)
    negative = next(p for p in listing.pairs if p.negative)
    assert negative.mask_path is None
    loaded, problems = load_pair(negative, 32)
    assert problems == [] and loaded is not None
    assert loaded.mask.shape == (32, 32) and not loaded.mask.any()
    assert loaded.mask_sha256 is None
    assert loaded.flags == ("empty_mask", "negative", "resized")


def test_folder_missing_negatives_folder_is_a_problem(tmp_path: Path) -> None:
    folder_tree(tmp_path, n=2)
    listing = LAYOUTS["folder"].scan(tmp_path, include_negatives=True)
    assert [str(p) for p in listing.problems] == [
        f"{tmp_path / 'ood_negatives' / 'images'}: missing negatives folder "
        "(include_negatives=True expects ood_negatives/images)"
    ]


def test_negatives_refused_for_layouts_without_them(tmp_path: Path) -> None:
    kvasir_tree(tmp_path)
    with pytest.raises(DatasetError, match=r"layout 'kvasir' has no negatives.*folder"):
        LAYOUTS["kvasir"].scan(tmp_path, include_negatives=True)


@pytest.mark.parametrize("inside", [False, True], ids=["parent", "Kvasir-SEG"])
def test_kvasir_accepts_parent_or_the_folder(tmp_path: Path, inside: bool) -> None:
    kvasir_tree(tmp_path, n=3)
    root = tmp_path / "Kvasir-SEG" if inside else tmp_path
    listing = LAYOUTS["kvasir"].scan(root)
    assert listing.problems == []
    assert [p.id for p in listing.pairs] == ["cju0000", "cju0001", "cju0002"]
    assert listing.pairs[0].image_path.relative_to(root).parts[-2:] == ("images", "cju0000.jpg")


def test_cvc_official_split_with_valid_as_val(tmp_path: Path) -> None:
    cvc_tree(tmp_path, counts=(3, 2, 2))
    listing = LAYOUTS["cvc"].scan(tmp_path)
    assert listing.problems == []
    assert [(p.id, p.split) for p in listing.pairs] == [
        ("train_1", "train"),
        ("train_2", "train"),
        ("train_3", "train"),
        ("val_4", "val"),
        ("val_5", "val"),
        ("test_6", "test"),
        ("test_7", "test"),
    ]


def test_cvc_accepts_the_named_parent_and_reports_a_missing_split(tmp_path: Path) -> None:
    cvc_tree(tmp_path / "CVC-EndoSceneStill", counts=(2, 0, 1))
    listing = LAYOUTS["cvc"].scan(tmp_path)
    assert len(listing.pairs) == 3
    missing = tmp_path / "CVC-EndoSceneStill" / "ValidationDataset" / "images"
    assert f"{missing}: missing images folder" in [str(p) for p in listing.problems]


def test_isic_without_test_set_has_no_official_split(tmp_path: Path) -> None:
    isic_tree(tmp_path, n=4)
    listing = LAYOUTS["isic"].scan(tmp_path)
    assert listing.problems == []
    assert [p.id for p in listing.pairs] == [f"ISIC_{i:07d}" for i in range(4)]
    assert {p.split for p in listing.pairs} == {None}
    assert listing.pairs[0].mask_path.name == "ISIC_0000000_segmentation.png"


def test_isic_with_validation_and_test_sets_is_official(tmp_path: Path) -> None:
    isic_tree(tmp_path, n=2, sets=(ISIC_TRAIN, ISIC_VAL, ISIC_TEST))
    listing = LAYOUTS["isic"].scan(tmp_path)
    assert listing.problems == []
    assert [p.split for p in listing.pairs] == ["train"] * 2 + ["val"] * 2 + ["test"] * 2


def test_isic_test_inputs_without_ground_truth_is_one_problem(tmp_path: Path) -> None:
    isic_tree(tmp_path, n=2, sets=(ISIC_TRAIN, ISIC_TEST))
    shutil.rmtree(tmp_path / ISIC_TEST[1])
    listing = LAYOUTS["isic"].scan(tmp_path)
    assert [str(p) for p in listing.problems] == [
        f"{tmp_path / ISIC_TEST[1]}: missing masks folder"
    ]


@pytest.mark.parametrize("inside", [False, True], ids=["parent", "A. Segmentation"])
def test_idrid_official_split_and_red_masks(tmp_path: Path, inside: bool) -> None:
    idrid_tree(tmp_path, n_train=3, n_test=2)
    root = tmp_path / IDRID if inside else tmp_path
    listing = LAYOUTS["idrid"].scan(root)
    assert listing.problems == []
    assert [(p.id, p.split) for p in listing.pairs] == [
        ("IDRiD_01", "train"),
        ("IDRiD_02", "train"),
        ("IDRiD_03", "train"),
        ("IDRiD_04", "test"),
        ("IDRiD_05", "test"),
    ]
    loaded, problems = load_pair(listing.pairs[0], 48)
    assert problems == [] and loaded is not None
    expected = resize_mask((blob(1) > 0).astype(np.uint8), 48)  # red (255, 0, 0) → 1
    np.testing.assert_array_equal(loaded.mask, expected)


def test_missing_mask_orphan_mask_and_duplicate_stem_are_problems(tmp_path: Path) -> None:
    folder_tree(tmp_path, n=3)
    (tmp_path / "masks" / "img01.png").rename(tmp_path / "masks" / "stray.png")
    write(tmp_path / "images" / "img02.png", photo(9))
    listing = LAYOUTS["folder"].scan(tmp_path)
    lines = {str(p) for p in listing.problems}
    assert lines == {
        f"{tmp_path / 'images' / 'img01.jpg'}: image has no mask "
        f"(expected {tmp_path / 'masks' / 'img01'}.*)",
        f"{tmp_path / 'masks' / 'stray.png'}: mask has no image",
        f"{tmp_path / 'images' / 'img02.png'}: has the same stem as img02.jpg; keep only one",
    }
    assert [p.id for p in listing.pairs] == ["img00", "img02"]


def test_empty_images_folder_and_missing_root(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    listing = LAYOUTS["folder"].scan(tmp_path)
    assert listing.problems[0].reason.startswith("no image files")
    with pytest.raises(DatasetError, match="is not a folder"):
        LAYOUTS["folder"].scan(tmp_path / "nowhere")


# ---------------------------------------------------------------- seeded split


def _pairs(n: int, negatives: int = 0) -> list[RawPair]:
    pos = [RawPair(f"p{i}", Path(f"p{i}.png"), None) for i in range(n)]
    return pos + [
        RawPair(f"n{i}", Path(f"n{i}.png"), None, negative=True) for i in range(negatives)
    ]


def test_seeded_split_is_reproducible_stratified_and_keeps_official() -> None:
    pairs = _pairs(20, negatives=5)
    first, again = seeded_split(pairs, 0.8, seed=3), seeded_split(pairs, 0.8, seed=3)
    assert first == again
    assert first != seeded_split(pairs, 0.8, seed=4)
    assert first[:20].count("train") == 16 and first[20:].count("train") == 4
    official = [RawPair("o", Path("o.png"), None, split="val"), *pairs]
    assert seeded_split(official, 0.8, seed=3) == ["val", *first]


def test_seeded_split_keeps_both_sides_non_empty() -> None:
    assert sorted(seeded_split(_pairs(2), 0.99, seed=0)) == ["test", "train"]
    assert sorted(seeded_split(_pairs(3), 0.01, seed=0)) == ["test", "test", "train"]
    assert seeded_split(_pairs(1), 0.5, seed=0) == ["train"]
