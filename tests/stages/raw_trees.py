"""Tiny raw dataset trees laid out exactly like the published ones, written with OpenCV."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

H, W = 40, 48  # every test image is 48 wide, 40 high (so 32² shrinks it)


def photo(seed: int, h: int = H, w: int = W) -> np.ndarray:
    """A smooth random colour image ``(h, w, 3)`` uint8 (BGR, as OpenCV writes it)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (4, 4, 3)).astype(np.uint8)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def blob(seed: int, h: int = H, w: int = W, value: int = 255) -> np.ndarray:
    """A filled ellipse mask ``(h, w)`` uint8 in {0, value}, never empty."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((h, w), np.uint8)
    centre = (int(rng.integers(w // 3, 2 * w // 3)), int(rng.integers(h // 3, 2 * h // 3)))
    axes = (int(rng.integers(4, w // 3)), int(rng.integers(4, h // 3)))
    cv2.ellipse(mask, centre, axes, float(rng.uniform(0, 180)), 0, 360, value, -1)
    return mask


def write(path: Path, array: np.ndarray, params: tuple[int, ...] = ()) -> Path:
    """Write ``array`` with OpenCV (format from the suffix), creating the folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array, list(params)), path
    return path


def truncate(path: Path, keep: float = 0.6) -> Path:
    """Cut a file to ``keep`` of its bytes (a download that stopped half-way)."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def folder_tree(root: Path, n: int = 4, negatives: int = 0, masks_for_negatives: bool = True):
    """``images/*.jpg`` + ``masks/*.png`` (0/255) and optional ``ood_negatives``."""
    for i in range(n):
        write(root / "images" / f"img{i:02d}.jpg", photo(i))
        write(root / "masks" / f"img{i:02d}.png", blob(i))
    for i in range(negatives):
        write(root / "ood_negatives" / "images" / f"neg{i:02d}.jpg", photo(100 + i))
        if masks_for_negatives:
            write(root / "ood_negatives" / "masks" / f"neg{i:02d}.png", np.zeros((H, W), np.uint8))
    return root


def kvasir_tree(root: Path, n: int = 3) -> Path:
    """``Kvasir-SEG/{images,masks}/*.jpg``; masks are 3-channel JPEGs, as published."""
    base = root / "Kvasir-SEG"
    for i in range(n):
        write(base / "images" / f"cju{i:04d}.jpg", photo(i))
        write(base / "masks" / f"cju{i:04d}.jpg", cv2.merge([blob(i)] * 3))
    (base / "kavsir_bboxes.json").write_text("{}")
    return root


def cvc_tree(root: Path, counts: tuple[int, int, int] = (3, 2, 2)) -> Path:
    """``{TrainDataset,ValidationDataset,TestDataset}/{images,masks}/<n>.bmp``."""
    number = 1
    for folder, count in zip(
        ("TrainDataset", "ValidationDataset", "TestDataset"), counts, strict=True
    ):
        for _ in range(count):
            write(root / folder / "images" / f"{number}.bmp", photo(number))
            write(root / folder / "masks" / f"{number}.bmp", blob(number))
            number += 1
    return root


ISIC_TRAIN = ("ISIC2018_Task1-2_Training_Input", "ISIC2018_Task1_Training_GroundTruth")
ISIC_VAL = ("ISIC2018_Task1-2_Validation_Input", "ISIC2018_Task1_Validation_GroundTruth")
ISIC_TEST = ("ISIC2018_Task1-2_Test_Input", "ISIC2018_Task1_Test_GroundTruth")


def isic_tree(root: Path, n: int = 5, sets: tuple[tuple[str, str], ...] = (ISIC_TRAIN,)) -> Path:
    """ISIC-2018 Task 1: ``ISIC_<7 digits>.jpg`` + ``ISIC_<7 digits>_segmentation.png``."""
    number = 0
    for inputs, truths in sets:
        for _ in range(n):
            stem = f"ISIC_{number:07d}"
            write(root / inputs / f"{stem}.jpg", photo(number))
            write(root / truths / f"{stem}_segmentation.png", blob(number))
            number += 1
        (root / inputs / "LICENSE.txt").write_text("CC-BY-NC")
        (root / truths / "ATTRIBUTION.txt").write_text("ISIC")
    return root


IDRID = Path("A. Segmentation")
IDRID_IMAGES = IDRID / "1. Original Images"
IDRID_MASKS = IDRID / "2. All Segmentation Groundtruths"


def idrid_tree(root: Path, n_train: int = 3, n_test: int = 2) -> Path:
    """IDRiD: ``IDRiD_XX.jpg`` + red-on-black ``IDRiD_XX_OD.tif`` masks, official split."""
    number = 1
    for folder, count in (("a. Training Set", n_train), ("b. Testing Set", n_test)):
        for _ in range(count):
            stem = f"IDRiD_{number:02d}"
            write(root / IDRID_IMAGES / folder / f"{stem}.jpg", photo(number))
            red = cv2.merge([np.zeros((H, W), np.uint8)] * 2 + [blob(number)])  # BGR: red
            write(root / IDRID_MASKS / folder / "5. Optic Disc" / f"{stem}_OD.tif", red)
            number += 1
    return root


def suffix_tree(
    root: Path, mask_suffix: str, n: int = 4, image_ext: str = ".jpg", mask_ext: str = ".png"
) -> Path:
    """``images/<stem><image_ext>`` + ``masks/<stem><mask_suffix><mask_ext>`` (0/255).

    Laid out like the public sets that name masks by suffix: ISIC (``ISIC_0000000`` +
    ``_segmentation``), Kaggle-style ``_mask``, IDRiD ``_OD``, CHASE_DB1 ``_1stHO``.
    """
    for i in range(n):
        stem = f"case_{i:03d}"
        write(root / "images" / f"{stem}{image_ext}", photo(i))
        write(root / "masks" / f"{stem}{mask_suffix}{mask_ext}", blob(i))
    return root


PH2_IMAGES = Path("PH2Dataset") / "PH2 Dataset images"


def ph2_tree(root: Path, n: int = 3) -> Path:
    """PH2's per-case tree: ``IMD<nnn>/IMD<nnn>_Dermoscopic_Image/IMD<nnn>.bmp``, the lesion
    mask in ``IMD<nnn>_lesion/IMD<nnn>_lesion.bmp`` and colour-class masks in ``_roi/``."""
    for i in range(n):
        case = f"IMD{2 + i:03d}"
        base = root / PH2_IMAGES / case
        write(base / f"{case}_Dermoscopic_Image" / f"{case}.bmp", photo(i))
        write(base / f"{case}_lesion" / f"{case}_lesion.bmp", blob(i))
        write(base / f"{case}_roi" / f"{case}_R1_Label4.bmp", blob(50 + i))
    (root / "PH2Dataset" / "PH2_dataset.txt").parent.mkdir(parents=True, exist_ok=True)
    (root / "PH2Dataset" / "PH2_dataset.txt").write_text("|| Name || Histological Diagnosis ||")
    return root


def chase_tree(root: Path, n: int = 2) -> Path:
    """CHASE_DB1: one flat folder of ``Image_<nn><L|R>.jpg`` with two observers' masks,
    ``..._1stHO.png`` and ``..._2ndHO.png``, beside them."""
    for i in range(n):
        for eye in "LR":
            stem = f"Image_{i + 1:02d}{eye}"
            seed = 2 * i + (eye == "R")
            write(root / f"{stem}.jpg", photo(seed))
            write(root / f"{stem}_1stHO.png", blob(seed))
            write(root / f"{stem}_2ndHO.png", blob(seed + 30))
    return root


def class_mask(
    seed: int, values: tuple[int, ...] = (0, 1, 2), h: int = H, w: int = W
) -> np.ndarray:
    """A mask ``(h, w)`` uint8 whose left blob holds ``values[1]``, right blob ``values[2]``,
    background ``values[0]`` (two lesion types side by side)."""
    mask = np.full((h, w), values[0], np.uint8)
    left, right = blob(seed, h, w // 2, 1) > 0, blob(seed + 1, h, w - w // 2, 1) > 0
    mask[:, : w // 2][left] = values[1]
    mask[:, w // 2 :][right] = values[2]
    return mask
