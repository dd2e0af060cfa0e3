"""Mask naming: --mask-suffix / --image-suffix for `folder`, the `glob` layout, and the
suggestion when nothing pairs — on tiny trees laid out like the published sets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from raw_trees import PH2_IMAGES, blob, chase_tree, ph2_tree, photo, suffix_tree, write

from stages.prepare.readers import LAYOUTS, DatasetError, Naming, load_pair
from stages.prepare.readers.naming import suggest_naming

SUFFIXES = ("_segmentation", "_mask", "_lesion", "_1stHO", "_OD")
PH2_IMAGES_GLOB = "PH2Dataset/*/*/*_Dermoscopic_Image/*.bmp"
PH2_MASKS_GLOB = "PH2Dataset/*/*/*_lesion/*.bmp"


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_folder_with_mask_suffix_pairs_by_key(tmp_path: Path, suffix: str) -> None:
    suffix_tree(tmp_path, suffix, n=3)
    listing = LAYOUTS["folder"].scan(tmp_path, naming=Naming(mask_suffix=suffix))
    assert listing.problems == [] and listing.hint is None
    assert [p.id for p in listing.pairs] == ["case_000", "case_001", "case_002"]
    assert [p.mask_path.name for p in listing.pairs] == [
        f"case_00{i}{suffix}.png" for i in range(3)
    ]


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_folder_without_the_suffix_says_which_option_pairs(tmp_path: Path, suffix: str) -> None:
    suffix_tree(tmp_path, suffix, n=4)
    listing = LAYOUTS["folder"].scan(tmp_path)
    assert listing.pairs == []
    assert listing.hint == (
        f"nothing paired (4 images, 4 masks): every mask stem is an image stem + "
        f"'{suffix}': try --mask-suffix {suffix}"
    )
    assert len(listing.problems) == 8  # the per-file list still follows


def test_ph2_per_case_tree_pairs_with_glob_and_mask_suffix(tmp_path: Path) -> None:
    ph2_tree(tmp_path, n=3)
    naming = Naming(mask_suffix="_lesion", images=PH2_IMAGES_GLOB, masks=PH2_MASKS_GLOB)
    listing = LAYOUTS["glob"].scan(tmp_path, naming=naming)
    assert listing.problems == []
    assert [p.id for p in listing.pairs] == ["IMD002", "IMD003", "IMD004"]
    first = listing.pairs[0]
    assert first.image_path == tmp_path / PH2_IMAGES / "IMD002/IMD002_Dermoscopic_Image/IMD002.bmp"
    assert first.mask_path == tmp_path / PH2_IMAGES / "IMD002/IMD002_lesion/IMD002_lesion.bmp"
    loaded, problems = load_pair(first, 32)
    assert problems == [] and loaded is not None and loaded.mask.any()


def test_ph2_glob_without_suffix_suggests_it(tmp_path: Path) -> None:
    ph2_tree(tmp_path, n=3)
    naming = Naming(images=PH2_IMAGES_GLOB, masks=PH2_MASKS_GLOB)
    listing = LAYOUTS["glob"].scan(tmp_path, naming=naming)
    assert listing.pairs == []
    assert listing.hint == (
        "nothing paired (3 images, 3 masks): every mask stem is an image stem + '_lesion': "
        "try --mask-suffix _lesion"
    )
    missing = next(p for p in listing.problems if p.reason.startswith("image has no mask"))
    assert missing.reason == (
        f"image has no mask (expected a file IMD002.* matching --masks '{PH2_MASKS_GLOB}')"
    )


def test_glob_never_takes_a_mask_as_an_image(tmp_path: Path) -> None:
    chase_tree(tmp_path, n=2)  # images and both observers' masks in one folder
    naming = Naming(mask_suffix="_1stHO", images="*.jpg", masks="*_1stHO.png")
    listing = LAYOUTS["glob"].scan(tmp_path, naming=naming)
    assert listing.problems == []
    assert [p.id for p in listing.pairs] == ["Image_01L", "Image_01R", "Image_02L", "Image_02R"]
    same_folder = Naming(mask_suffix="_1stHO", images="*", masks="*_1stHO.png")
    listing = LAYOUTS["glob"].scan(tmp_path, naming=same_folder)
    assert len(listing.pairs) == 4  # the _1stHO masks are not images; the _2ndHO ones are
    assert {p.path.name for p in listing.problems} == {
        "Image_01L_2ndHO.png", "Image_01R_2ndHO.png", "Image_02L_2ndHO.png", "Image_02R_2ndHO.png"
    }  # fmt: skip
    assert {p.reason.split(" (")[0] for p in listing.problems} == {"image has no mask"}


def test_glob_same_key_in_two_case_folders_is_a_problem(tmp_path: Path) -> None:
    for case in ("a", "b"):
        write(tmp_path / case / "image.png", photo(1))
        write(tmp_path / case / "label.png", blob(1))
    listing = LAYOUTS["glob"].scan(tmp_path, naming=Naming(images="*/image.png",
                                                           masks="*/label.png"))  # fmt: skip
    dup = [p for p in listing.problems if "same pairing key" in p.reason]
    assert [str(p) for p in dup] == [
        f"{tmp_path / 'b' / 'image.png'}: has the same pairing key 'image' as "
        f"{tmp_path / 'a' / 'image.png'}; keep only one",
        f"{tmp_path / 'b' / 'label.png'}: has the same pairing key 'label' as "
        f"{tmp_path / 'a' / 'label.png'}; keep only one",
    ]


def test_glob_needs_both_globs_and_matches(tmp_path: Path) -> None:
    suffix_tree(tmp_path, "_mask", n=2)
    listing = LAYOUTS["glob"].scan(tmp_path, naming=Naming(images="images/*"))
    assert [p.reason for p in listing.problems] == [
        "layout 'glob' needs both --images GLOB and --masks GLOB"
    ]
    listing = LAYOUTS["glob"].scan(tmp_path, naming=Naming(images="imgs/*", masks="masks/*"))
    assert [p.reason for p in listing.problems] == [
        "no image files match --images 'imgs/*' under the root"
    ]


def test_both_suffixes_are_suggested_and_then_pair(tmp_path: Path) -> None:
    for i in (21, 22, 23):  # DRIVE-style: 21_training.tif + 21_manual1.png
        write(tmp_path / "images" / f"{i}_training.tif", photo(i))
        write(tmp_path / "masks" / f"{i}_manual1.png", blob(i))
    listing = LAYOUTS["folder"].scan(tmp_path)
    assert listing.hint == (
        "nothing paired (3 images, 3 masks): every image stem is a key + '_training' and the "
        "mask's stem that key + '_manual1': try --image-suffix _training --mask-suffix _manual1"
    )
    naming = Naming(image_suffix="_training", mask_suffix="_manual1")
    listing = LAYOUTS["folder"].scan(tmp_path, naming=naming)
    assert listing.problems == [] and [p.id for p in listing.pairs] == ["21", "22", "23"]


def test_wrong_suffix_names_the_files_and_suggests_the_right_one(tmp_path: Path) -> None:
    suffix_tree(tmp_path, "_lesion", n=2)
    listing = LAYOUTS["folder"].scan(tmp_path, naming=Naming(mask_suffix="_mask"))
    assert listing.hint == (
        "nothing paired (2 images, 2 masks): every mask stem is an image stem + '_lesion': "
        "try --mask-suffix _lesion"
    )
    reasons = {p.reason for p in listing.problems}
    assert "mask name does not end with --mask-suffix _mask" in reasons


def test_suffix_given_but_stems_already_match_suggests_dropping_it(tmp_path: Path) -> None:
    suffix_tree(tmp_path, "", n=2)
    listing = LAYOUTS["folder"].scan(tmp_path, naming=Naming(image_suffix="_img"))
    assert listing.hint == (
        "nothing paired (2 images, 2 masks): every mask stem equals an image stem: "
        "try no --image-suffix / --mask-suffix"
    )


def test_partial_pairing_lists_problems_without_a_hint(tmp_path: Path) -> None:
    suffix_tree(tmp_path, "_mask", n=3)
    (tmp_path / "masks" / "case_001_mask.png").unlink()
    listing = LAYOUTS["folder"].scan(tmp_path, naming=Naming(mask_suffix="_mask"))
    assert listing.hint is None and [p.id for p in listing.pairs] == ["case_000", "case_002"]
    assert [str(p) for p in listing.problems] == [
        f"{tmp_path / 'images' / 'case_001.jpg'}: image has no mask "
        f"(expected {tmp_path / 'masks' / 'case_001_mask'}.*)"
    ]


def test_naming_options_refused_by_fixed_layouts(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"layout 'kvasir' does not take naming .*mask_suffix"):
        LAYOUTS["kvasir"].scan(tmp_path, naming=Naming(mask_suffix="_mask"))
    with pytest.raises(DatasetError, match=r"layout 'folder' does not take naming .*images"):
        LAYOUTS["folder"].scan(tmp_path, naming=Naming(images="*.png"))


def test_negatives_follow_the_same_naming(tmp_path: Path) -> None:
    suffix_tree(tmp_path, "_mask", n=2)
    write(tmp_path / "ood_negatives" / "images" / "n0.jpg", photo(7))
    write(tmp_path / "ood_negatives" / "masks" / "n0_mask.png", blob(7) * 0)
    naming = Naming(mask_suffix="_mask")
    listing = LAYOUTS["folder"].scan(tmp_path, include_negatives=True, naming=naming)
    assert listing.problems == []
    assert [p.id for p in listing.pairs if p.negative] == ["neg_n0"]


@pytest.mark.parametrize(
    ("images", "masks", "expected"),
    [
        (["1", "11", "2"], ["1_mask", "11_mask", "2_mask"], ("", "_mask", 3)),
        (["a_img", "b_img"], ["a", "b"], ("_img", "", 2)),
        (["x", "y", "z", "w"], ["x_m", "y_m", "q_n", "r_n"], ("", "_m", 2)),
        (["x", "y", "z", "w"], ["x_m", "q_n", "r_o", "s_p"], None),  # 1 of 4: below half
        (["abc"], ["def"], None),
    ],
)
def test_suggest_naming_picks_the_suffix_pairing_most(
    images: list[str], masks: list[str], expected: tuple[str, str, int] | None
) -> None:
    assert suggest_naming(images, masks) == expected


def test_partial_suggestion_names_the_share(tmp_path: Path) -> None:
    suffix_tree(tmp_path, "_lesion", n=3)
    write(tmp_path / "masks" / "other_thing.png", blob(9))
    write(tmp_path / "images" / "lonely.jpg", photo(9))
    listing = LAYOUTS["folder"].scan(tmp_path)
    assert listing.hint == (
        "nothing paired (4 images, 4 masks): 3 of 4 mask stems are an image stem + '_lesion': "
        "try --mask-suffix _lesion"
    )


def test_glob_reports_links_and_fifos_it_matches(tmp_path: Path) -> None:
    suffix_tree(tmp_path, "_mask", n=2)
    (tmp_path / "images" / "gone.png").symlink_to(tmp_path / "nowhere.png")
    os.mkfifo(tmp_path / "masks" / "pipe_mask.png")
    naming = Naming(mask_suffix="_mask", images="images/*", masks="masks/*")
    listing = LAYOUTS["glob"].scan(tmp_path, naming=naming)
    assert [p.id for p in listing.pairs] == ["case_000", "case_001"]
    reasons = {p.path.name: p.reason for p in listing.problems}
    assert reasons.keys() == {"gone.png", "pipe_mask.png"}
    assert reasons["gone.png"].startswith("broken symlink")
    assert reasons["pipe_mask.png"].startswith("not a regular file")
