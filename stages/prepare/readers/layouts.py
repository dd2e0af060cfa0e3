"""Listers for the raw dataset layouts: each maps a root folder to pairs and problems.

The exact trees are documented in ``docs/datasets.md``. A lister only looks at names; the
files themselves are checked when they are loaded (``stages.prepare.readers.pairs``).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from stages.prepare.readers.base import (
    IMAGE_SUFFIXES,
    Listing,
    Problem,
    RawPair,
    Split,
    image_files,
    pair_folders,
    require_dir,
)
from stages.prepare.readers.naming import Naming, glob_files, keyed, pair_by_key

logger = logging.getLogger(__name__)

NEGATIVES_DIR = "ood_negatives"
NEGATIVE_PREFIX = "neg_"
KVASIR_DIR = "Kvasir-SEG"
CVC_DIR = "CVC-EndoSceneStill"
CVC_SPLITS: tuple[tuple[str, Split], ...] = (
    ("TrainDataset", "train"),
    ("ValidationDataset", "val"),
    ("TestDataset", "test"),
)
ISIC_SETS: tuple[tuple[str, str, Split], ...] = (
    ("ISIC2018_Task1-2_Training_Input", "ISIC2018_Task1_Training_GroundTruth", "train"),
    ("ISIC2018_Task1-2_Validation_Input", "ISIC2018_Task1_Validation_GroundTruth", "val"),
    ("ISIC2018_Task1-2_Test_Input", "ISIC2018_Task1_Test_GroundTruth", "test"),
)
IDRID_DIR = "A. Segmentation"
IDRID_IMAGES = "1. Original Images"
IDRID_MASKS = "2. All Segmentation Groundtruths"
IDRID_OD = "5. Optic Disc"
IDRID_SETS: tuple[tuple[str, Split], ...] = (
    ("a. Training Set", "train"),
    ("b. Testing Set", "test"),
)


def list_folder(root: Path, naming: Naming) -> Listing:
    """``images/`` + ``masks/`` paired by key (``stages.prepare.readers.naming``); no official split.

    Negatives in ``ood_negatives/`` are listed by :func:`list_folder_negatives` only.
    """
    return _pair_dirs(root, root / "images", root / "masks", naming)


def _pair_dirs(
    root: Path, images_dir: Path, masks_dir: Path, naming: Naming, id_prefix: str = ""
) -> Listing:
    """The image files directly in ``images_dir`` paired with ``masks_dir``'s by key."""
    missing = [p for p in (require_dir(images_dir, "images"), require_dir(masks_dir, "masks")) if p]
    if missing:
        return Listing(root, problems=missing)
    images, problems = image_files(images_dir)
    masks, mask_problems = image_files(masks_dir)
    listing = pair_by_key(
        root, list(images.values()), list(masks.values()), naming,
        lambda stem: f"{masks_dir / stem}.*", id_prefix=id_prefix,
    )  # fmt: skip
    listing.problems[:0] = problems + mask_problems
    if not images and not problems:  # a folder that cannot be listed is already a problem
        listing.problems.append(
            Problem(images_dir, f"no image files ({', '.join(IMAGE_SUFFIXES)})")
        )
    return listing


def list_folder_negatives(root: Path, naming: Naming) -> Listing:
    """``ood_negatives/images`` (+ optional ``ood_negatives/masks``): no-lesion images.

    Ids are the keys prefixed with ``neg_``. Without a masks folder every mask is empty;
    with one, every negative image needs its mask (named as in ``masks/``).
    """
    images_dir, masks_dir = root / NEGATIVES_DIR / "images", root / NEGATIVES_DIR / "masks"
    if not images_dir.is_dir():
        reason = "missing negatives folder (include_negatives=True expects ood_negatives/images)"
        return Listing(root, problems=[Problem(images_dir, reason)])
    if masks_dir.is_dir():
        listing = _pair_dirs(root, images_dir, masks_dir, naming, id_prefix=NEGATIVE_PREFIX)
    else:
        images, problems = image_files(images_dir)
        keys, key_problems = keyed(
            list(images.values()), naming.image_suffix, "image", "--image-suffix"
        )
        pairs = [RawPair(NEGATIVE_PREFIX + key, path, None) for key, path in keys.items()]
        listing = Listing(root, pairs, problems + key_problems)
        if not images and not problems:
            listing.problems.append(Problem(images_dir, "no image files"))
    listing.pairs = [dataclasses.replace(p, negative=True) for p in listing.pairs]
    return listing


def list_glob(root: Path, naming: Naming) -> Listing:
    """Any tree: ``--images GLOB`` and ``--masks GLOB`` relative to the root, paired by key.

    Files matched by the masks glob are never images (both may live in one folder, e.g.
    ``--images '*.png' --masks '*_mask.png' --mask-suffix _mask``). A per-case tree such as
    PH2's ``IMD002/IMD002_Dermoscopic_Image/IMD002.bmp`` +
    ``IMD002/IMD002_lesion/IMD002_lesion.bmp`` reads with ``--images
    '*/*_Dermoscopic_Image/*.bmp' --masks '*/*_lesion/*.bmp' --mask-suffix _lesion``.
    """
    if not naming.images or not naming.masks:
        problem = Problem(root, "layout 'glob' needs both --images GLOB and --masks GLOB")
        return Listing(root, problems=[problem])
    masks, bad_masks = glob_files(root, naming.masks)
    images, bad_images = glob_files(root, naming.images, exclude=frozenset(masks))
    none = [
        Problem(root, f"no image files match --{option} {pattern!r} under the root")
        for option, pattern, files in (("images", naming.images, images),
                                       ("masks", naming.masks, masks))
        if not files
    ]  # fmt: skip
    if none:
        return Listing(root, problems=bad_images + bad_masks + none)
    listing = pair_by_key(
        root, images, masks, naming,
        lambda stem: f"a file {stem}.* matching --masks {naming.masks!r}",
    )  # fmt: skip
    listing.problems[:0] = bad_images + bad_masks
    return listing


def list_kvasir(root: Path) -> Listing:
    """Kvasir-SEG: ``[Kvasir-SEG/]images/*.jpg`` + ``masks/*.jpg``; no official split."""
    base = root / KVASIR_DIR if (root / KVASIR_DIR).is_dir() else root
    return pair_folders(root, base / "images", base / "masks")


def list_cvc(root: Path) -> Listing:
    """CVC-EndoSceneStill with its official train / valid / test split (valid → ``val``).

    ``[CVC-EndoSceneStill/]{TrainDataset,ValidationDataset,TestDataset}/{images,masks}``;
    ids are ``<split>_<stem>`` (the folders may reuse file names).
    """
    base = root / CVC_DIR if (root / CVC_DIR).is_dir() else root
    listing = Listing(root)
    for folder, split in CVC_SPLITS:
        part = base / folder
        listing.extend(
            pair_folders(root, part / "images", part / "masks", split=split, id_prefix=f"{split}_")
        )
    return listing


def list_isic(root: Path) -> Listing:
    """ISIC-2018 Task 1: ``ISIC_<n>.jpg`` with ``ISIC_<n>_segmentation.png``.

    The training set is required; the validation set (→ ``val``) and the test set (→
    ``test``) are used where their folders exist. Without the test set the training images
    get no official split (a seeded split is drawn); with it they are ``train``.
    """
    listing = Listing(root)
    has_test = (root / ISIC_SETS[2][0]).is_dir()
    for index, (inputs, truths, split) in enumerate(ISIC_SETS):
        if index > 0 and not (root / inputs).is_dir():
            continue  # the validation and test sets are optional
        official: Split | None = split if (index > 0 or has_test) else None
        listing.extend(
            pair_folders(
                root,
                root / inputs,
                root / truths,
                mask_stem=lambda stem: f"{stem}_segmentation",
                split=official,
            )
        )
    return listing


def list_idrid(root: Path) -> Listing:
    """IDRiD optic disc: the official 54 training / 27 testing images with ``*_OD.tif`` masks.

    ``root`` is the folder holding ``A. Segmentation`` or ``A. Segmentation`` itself.
    """
    base = root / IDRID_DIR if (root / IDRID_DIR).is_dir() else root
    listing = Listing(root)
    for folder, split in IDRID_SETS:
        listing.extend(
            pair_folders(
                root,
                base / IDRID_IMAGES / folder,
                base / IDRID_MASKS / folder / IDRID_OD,
                mask_stem=lambda stem: f"{stem}_OD",
                split=split,
            )
        )
    return listing
