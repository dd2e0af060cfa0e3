"""`plc prepare` with users' naming and classes: --mask-suffix, --dataset glob, the
nothing-paired suggestion, --classes and --synthetic-classes, through the real CLI."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from raw_trees import PH2_IMAGES, class_mask, ph2_tree, photo, suffix_tree, write
from typer.testing import CliRunner

from stages.cli import app
from stages.prepare.config import PrepareConfig
from stages.prepare.readers.imageio import resize_mask
from storage_schema import open_dataset_store

runner = CliRunner()
PH2 = ("--images", "PH2Dataset/*/*/*_Dermoscopic_Image/*.bmp",
       "--masks", "PH2Dataset/*/*/*_lesion/*.bmp")  # fmt: skip


def prepare(*args: object) -> tuple[int, str]:
    result = runner.invoke(app, ["prepare", "--no-progress", "--size", "32", *map(str, args)])
    return result.exit_code, result.output


def _masks(store_path: Path) -> np.ndarray:
    return np.asarray(open_dataset_store(store_path).masks[:])


def test_mask_suffix_prepares_a_folder_of_lesion_masks(tmp_path: Path) -> None:
    suffix_tree(tmp_path / "raw", "_lesion", n=4)
    out = tmp_path / "ds.zarr"
    code, output = prepare("--dataset", "folder", "--root", tmp_path / "raw", "--out", out,
                           "--mask-suffix", "_lesion")  # fmt: skip
    assert code == 0, output
    store = open_dataset_store(out)
    assert store.ids() == ["case_000", "case_001", "case_002", "case_003"]
    assert store.attrs["source"]["config"]["mask_suffix"] == "_lesion"


def test_nothing_paired_says_so_first_and_the_suggestion_works(tmp_path: Path) -> None:
    suffix_tree(tmp_path / "raw", "_lesion", n=4)
    out = tmp_path / "ds.zarr"
    code, output = prepare("--dataset", "folder", "--root", tmp_path / "raw", "--out", out)
    assert code == 1 and not out.exists()
    assert "Traceback" not in output
    lines = output.strip().splitlines()
    assert "nothing paired (4 images, 4 masks): every mask stem is an image stem + '_lesion': " \
           "try --mask-suffix _lesion; 8 problem(s) below, nothing was written:" in lines[0]  # fmt: skip
    assert sum("image has no mask" in line for line in lines[1:]) == 4
    suggested = lines[0].split("try ")[1].split(";")[0].split()  # run what it suggests
    code, output = prepare("--dataset", "folder", "--root", tmp_path / "raw", "--out", out,
                           *suggested)  # fmt: skip
    assert code == 0, output


def test_ph2_per_case_tree_with_glob(tmp_path: Path) -> None:
    ph2_tree(tmp_path / "raw", n=3)
    out = tmp_path / "ph2.zarr"
    code, output = prepare("--dataset", "glob", "--root", tmp_path / "raw", "--out", out, *PH2)
    assert code == 1 and "try --mask-suffix _lesion" in output.splitlines()[0]
    code, output = prepare("--dataset", "glob", "--root", tmp_path / "raw", "--out", out, *PH2,
                           "--mask-suffix", "_lesion")  # fmt: skip
    assert code == 0, output
    store = open_dataset_store(out)
    assert store.ids() == ["IMD002", "IMD003", "IMD004"]
    manifest = store.manifest.to_pylist()
    assert (
        manifest[0]["image_path"]
        == (PH2_IMAGES / "IMD002" / "IMD002_Dermoscopic_Image" / "IMD002.bmp").as_posix()
    )
    assert manifest[0]["mask_path"].endswith("IMD002_lesion/IMD002_lesion.bmp")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--dataset", "kvasir", "--mask-suffix", "_m"),
         "--mask-suffix is only for --dataset folder, glob, not 'kvasir'."),
        (("--dataset", "folder", "--images", "*.png"),
         "--images is only for --dataset glob, not 'folder'."),
        (("--dataset", "glob", "--images", "*.png"), "--dataset glob needs --images GLOB and --masks GLOB"),
        (("--dataset", "folder", "--classes", "bg=0"), "--classes needs at least two entries"),
        (("--dataset", "synthetic", "--classes", "bg=0,a=1"), "for 'synthetic' use --synthetic-classes"),
        (("--dataset", "folder", "--synthetic-classes", "3"), "--synthetic-classes is only for --dataset synthetic"),
        (("--dataset", "synthetic", "--synthetic-classes", "9"), "--synthetic-classes"),
        (("--dataset", "folder", "--synthetic-stripes", "4"), "--synthetic-stripes is only for --dataset synthetic"),
        (("--dataset", "synthetic", "--synthetic-stripes", "1"), "--synthetic-stripes takes 0 or 2..8"),
        (("--dataset", "synthetic", "--synthetic-stripes", "4", "--synthetic-classes", "3"),
         "needs --synthetic-classes 2, got 4 with 3 classes"),
        (("--dataset", "synthetic", "--synthetic-stripes", "9"), "--synthetic-stripes"),
    ],
)  # fmt: skip
def test_bad_options_are_one_message_naming_the_flag(
    tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    (tmp_path / "raw").mkdir()
    code, output = prepare("--root", tmp_path / "raw", "--out", tmp_path / "x.zarr", *args)
    assert code == 1 and message in output and "Traceback" not in output
    assert not (tmp_path / "x.zarr").exists()


def _class_tree(root: Path, n: int = 4, values: tuple[int, int, int] = (0, 1, 2)) -> Path:
    for i in range(n):
        write(root / "images" / f"c{i}.jpg", photo(i))
        write(root / "masks" / f"c{i}.png", class_mask(i, values))
    return root


def test_classes_map_values_to_class_ids(tmp_path: Path) -> None:
    _class_tree(tmp_path / "raw", values=(0, 128, 255))
    out = tmp_path / "mc.zarr"
    code, output = prepare("--dataset", "folder", "--root", tmp_path / "raw", "--out", out,
                           "--classes", "background=0,lesion_a=128,lesion_b=255")  # fmt: skip
    assert code == 0, output
    store = open_dataset_store(out)
    assert store.classes == ["background", "lesion_a", "lesion_b"]
    expected = np.stack([resize_mask(class_mask(i), 32) for i in range(4)])
    np.testing.assert_array_equal(_masks(out), expected)
    fg = [r["fg_fraction"] for r in store.manifest.to_pylist()]
    np.testing.assert_allclose(fg, [(m > 0).mean() for m in expected], rtol=1e-6)


def test_colour_classes(tmp_path: Path) -> None:
    for i in range(3):
        ids = class_mask(i)
        rgb = np.zeros((*ids.shape, 3), np.uint8)
        rgb[ids == 1], rgb[ids == 2] = (255, 0, 0), (0, 255, 0)
        write(tmp_path / "raw" / "images" / f"c{i}.png", photo(i))
        write(tmp_path / "raw" / "masks" / f"c{i}.png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    out = tmp_path / "rgb.zarr"
    code, output = prepare("--dataset", "folder", "--root", tmp_path / "raw", "--out", out,
                           "--classes", "background=#000000,a=#ff0000,b=#00ff00")  # fmt: skip
    assert code == 0, output
    expected = np.stack([resize_mask(class_mask(i), 32) for i in range(3)])
    np.testing.assert_array_equal(_masks(out), expected)


def test_unknown_mask_value_names_the_file_and_value(tmp_path: Path) -> None:
    root = _class_tree(tmp_path / "raw", n=3)
    bad = class_mask(1)
    bad[:3, :3] = 9
    write(root / "masks" / "c1.png", bad)
    out = tmp_path / "mc.zarr"
    code, output = prepare("--dataset", "folder", "--root", root, "--out", out,
                           "--classes", "background=0,lesion_a=1,lesion_b=2")  # fmt: skip
    assert code == 1 and not out.exists()
    assert (f"{root / 'masks' / 'c1.png'}: mask value(s) not in --classes "
            "background=0,lesion_a=1,lesion_b=2: 9 (9 px)") in output  # fmt: skip


def test_without_classes_a_class_index_mask_is_refused(tmp_path: Path) -> None:
    root = _class_tree(tmp_path / "raw", n=2)
    code, output = prepare("--dataset", "folder", "--root", root, "--out", tmp_path / "b.zarr")
    assert code == 1 and "looks like class indices" in output
    assert "or pass --classes for multi-class masks" in output


def test_synthetic_classes(tmp_path: Path) -> None:
    out = tmp_path / "s3.zarr"
    code, output = prepare("--dataset", "synthetic", "--out", out, "--count", 12,
                           "--synthetic-classes", 3)  # fmt: skip
    assert code == 0, output
    store = open_dataset_store(out)
    assert store.classes == ["background", "lesion_a", "lesion_b"]
    assert set(np.unique(_masks(out))) == {0, 1, 2}


def test_synthetic_stripes(tmp_path: Path) -> None:
    from pipeline.synthetic import generate_dataset

    out = tmp_path / "stripes.zarr"
    code, output = prepare("--dataset", "synthetic", "--out", out, "--count", 10, "--seed", 3,
                           "--synthetic-stripes", 4)  # fmt: skip
    assert code == 0, output
    store = open_dataset_store(out)
    assert store.classes == ["background", "lesion"]
    images, masks = generate_dataset(10, 32, seed=3, stripes=4)  # the generator's own arrays
    np.testing.assert_array_equal(np.asarray(store.images[:]), images)
    np.testing.assert_array_equal(_masks(out), masks)


def test_new_options_leave_existing_digests_alone_and_count_when_set(tmp_path: Path) -> None:
    plain = PrepareConfig("synthetic", tmp_path / "a.zarr")
    assert set(plain.identity()) == {
        "dataset", "root", "size", "split", "seed", "count", "include_negatives"
    }  # fmt: skip
    three = PrepareConfig("synthetic", tmp_path / "a.zarr", synthetic_classes=3)
    assert three.identity()["synthetic_classes"] == 3 and three.digest() != plain.digest()
    striped = PrepareConfig("synthetic", tmp_path / "a.zarr", synthetic_stripes=4)
    assert striped.identity()["synthetic_stripes"] == 4 and striped.digest() != plain.digest()
    suffix_tree(tmp_path / "raw", "_mask", n=2)
    a = PrepareConfig("folder", tmp_path / "f.zarr", root=tmp_path / "raw", mask_suffix="_mask")
    b = PrepareConfig("folder", tmp_path / "f.zarr", root=tmp_path / "raw", mask_suffix="_m")
    assert a.digest() != b.digest()
    spaced = PrepareConfig("folder", tmp_path / "f.zarr", root=tmp_path / "raw",
                           classes="bg=#FF0000, a=#00ff00")  # fmt: skip
    assert spaced.identity()["classes"] == "bg=#ff0000,a=#00ff00"  # canonical text
