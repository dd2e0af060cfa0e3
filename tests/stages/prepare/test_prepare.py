"""Stage `prepare`: config checks, every layout end to end, fail-once validation, reruns."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from raw_trees import (  # tests/ helper dirs are on pythonpath (pyproject)
    ISIC_TEST,
    ISIC_TRAIN,
    blob,
    cvc_tree,
    folder_tree,
    idrid_tree,
    isic_tree,
    kvasir_tree,
    truncate,
    write,
)

from stages.prepare.readers import LAYOUTS, DatasetError
from stages.prepare.readers.imageio import resize_mask
from stages.prepare.stage import PrepareConfig, run
from storage_schema import open_dataset_store


def _cfg(tmp_path: Path, dataset: str, root: Path | None, **kw: object) -> PrepareConfig:
    kw = {"progress": False} | kw
    return PrepareConfig(dataset, tmp_path / "out" / "ds.zarr", root=root, **kw)  # type: ignore[arg-type]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"size": 40}, "--size must be a multiple of 16 between 32 and 2048, got 40"),
        ({"size": 16}, "--size must be >= 32 and <= 2048, got 16"),
        ({"size": 4096}, "--size must be >= 32 and <= 2048, got 4096"),
        ({"split": 0.0}, "--split must be > 0 and < 1, got 0.0"),
        ({"split": 1.0}, "--split must be > 0 and < 1, got 1.0"),
        ({"count": 1}, "--count must be >= 2, got 1"),
        ({"seed": -1}, "--seed must be >= 0"),
        (
            {"dataset": "kvasr"},
            "--dataset must be one of synthetic, folder, kvasir, cvc, isic, idrid",
        ),
        ({"dataset": "folder"}, "--root is required for dataset 'folder'"),
        ({"dataset": "folder", "root": Path("/no/such/dir")}, "--root /no/such/dir does not exist"),
        (
            {"include_negatives": True},
            r"--include-negatives is only supported by dataset\(s\): folder",
        ),
        ({"out": Path("data/my data.zarr")}, "--out's name 'my data' must use only letters"),
        ({"chunk_images": 3}, "--chunk-images must divide the shard size 64"),
    ],
)
def test_config_is_validated(tmp_path: Path, kwargs: dict, message: str) -> None:
    args = {"dataset": "synthetic", "out": tmp_path / "s.zarr"} | kwargs
    with pytest.raises(ValueError, match=message):
        PrepareConfig(**args)


def test_identity_ignores_how_the_stage_runs(tmp_path: Path) -> None:
    a = PrepareConfig("synthetic", tmp_path / "a.zarr", progress=False)
    b = PrepareConfig("synthetic", tmp_path / "b.zarr", overwrite=True, root=tmp_path)
    assert a.digest() == b.digest()  # out, overwrite, progress (and synthetic's root) excluded
    assert a.digest() != PrepareConfig("synthetic", tmp_path / "a.zarr", seed=1).digest()


# ---------------------------------------------------------------- synthetic


def test_synthetic_store_manifest_and_rerun(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, "synthetic", None, size=32, count=20, seed=3)
    path = run(cfg)
    store = open_dataset_store(path)
    assert store.name == "ds" and store.size == (32, 32) and len(store) == 20
    assert store.classes == ["background", "lesion"]
    rows = store.manifest.to_pylist()
    assert rows[0]["image_path"] == "synthetic/synth_00000/image"
    assert rows[0]["mask_path"] == "synthetic/synth_00000/mask"
    images, masks = np.asarray(store.images[:]), np.asarray(store.masks[:])
    for i, row in enumerate(rows):
        assert row["image_sha256"] == hashlib.sha256(images[i].tobytes()).hexdigest()
        assert row["mask_sha256"] == hashlib.sha256(masks[i].tobytes()).hexdigest()
        assert row["fg_fraction"] == pytest.approx(masks[i].mean())
        assert row["empty_mask"] == (row["flags"] == "empty_mask") == (not masks[i].any())
    assert sum(r["empty_mask"] for r in rows) == 1  # round(0.05 * 20)
    assert [r["split"] for r in rows].count("train") == 16
    source = store.attrs["source"]
    assert source["config_sha256"] == cfg.digest() and source["config"]["count"] == 20
    created = store.attrs["created"]
    assert run(cfg) == path  # same config: nothing rewritten
    assert open_dataset_store(path).attrs["created"] == created


def test_chunk_images_stores_the_same_images_in_larger_chunks(tmp_path: Path) -> None:
    one = open_dataset_store(run(_cfg(tmp_path / "a", "synthetic", None, size=32, count=20)))
    cfg = _cfg(tmp_path / "b", "synthetic", None, size=32, count=20, chunk_images=8)
    eight = open_dataset_store(run(cfg))
    assert eight.images.chunks[0] == 8 and one.images.chunks[0] == 1
    assert eight.attrs["chunk_images"] == 8 and "chunk_images" not in one.attrs
    assert np.array_equal(eight.read_images(slice(None)), one.read_images(slice(None)))
    assert np.array_equal(eight.read_masks(slice(3, 17)), one.read_masks(slice(3, 17)))
    assert eight.manifest_sha256 == one.manifest_sha256  # same content, another layout
    assert cfg.digest() != _cfg(tmp_path / "b", "synthetic", None, size=32, count=20).digest()


def test_changed_config_refuses_then_overwrites(tmp_path: Path) -> None:
    run(_cfg(tmp_path, "synthetic", None, size=32, count=4))
    with pytest.raises(FileExistsError, match=r"different config \(changed: size, seed\)"):
        run(_cfg(tmp_path, "synthetic", None, size=48, count=4, seed=1))
    assert open_dataset_store(tmp_path / "out" / "ds.zarr").size == (32, 32)
    run(_cfg(tmp_path, "synthetic", None, size=48, count=4, seed=1, overwrite=True))
    assert open_dataset_store(tmp_path / "out" / "ds.zarr").size == (48, 48)


def test_non_store_at_out_is_refused(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, "synthetic", None, size=32, count=4)
    cfg.out.mkdir(parents=True)
    with pytest.raises(FileExistsError, match="exists but is not a readable dataset store"):
        run(cfg)


# ---------------------------------------------------------------- layouts end to end


def test_folder_end_to_end_with_negatives(tmp_path: Path) -> None:
    root = folder_tree(tmp_path / "raw", n=5, negatives=2)
    store = open_dataset_store(
        run(_cfg(tmp_path, "folder", root, size=32, include_negatives=True, progress=True))
    )
    rows = store.manifest.to_pylist()
    assert [r["id"] for r in rows] == [f"img{i:02d}" for i in range(5)] + ["neg_neg00", "neg_neg01"]
    first = rows[0]
    assert first["image_path"] == "images/img00.jpg" and first["mask_path"] == "masks/img00.png"
    assert first["image_sha256"] == _sha(root / "images" / "img00.jpg")
    assert first["mask_sha256"] == _sha(root / "masks" / "img00.png")
    assert (first["orig_height"], first["orig_width"]) == (40, 48)
    assert first["flags"] == "resized"
    assert rows[5]["flags"] == "empty_mask,negative,resized" and rows[5]["fg_fraction"] == 0.0
    expected_mask = resize_mask((blob(0) > 127).astype(np.uint8), 32)
    np.testing.assert_array_equal(store.masks[0], expected_mask)
    rgb = cv2.cvtColor(cv2.imread(str(root / "images" / "img00.jpg")), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(
        store.images[0], cv2.resize(rgb, (32, 32), interpolation=cv2.INTER_AREA)
    )
    assert [r["split"] for r in rows[:5]].count("train") == 4  # round(0.8 * 5), per stratum
    assert [r["split"] for r in rows[5:]].count("train") == 1


def test_seeded_split_is_reproducible_and_recorded(tmp_path: Path) -> None:
    root = folder_tree(tmp_path / "raw", n=10)

    def splits(seed: int, name: str) -> tuple[list[str], dict]:
        cfg = PrepareConfig("folder", tmp_path / f"{name}.zarr", root=root, size=32, seed=seed,
                            split=0.7, progress=False)  # fmt: skip
        store = open_dataset_store(run(cfg))
        return store.manifest.column("split").to_pylist(), store.attrs["source"]["split"]

    first, source = splits(7, "a")
    assert splits(7, "b")[0] == first and splits(8, "c")[0] != first
    assert first.count("train") == 7
    assert source == {"official": 0, "seeded": 10, "train_fraction": 0.7, "seed": 7,
                      "counts": {"train": 7, "val": 0, "test": 3}}  # fmt: skip


def test_kvasir_jpeg_masks(tmp_path: Path) -> None:
    store = open_dataset_store(
        run(_cfg(tmp_path, "kvasir", kvasir_tree(tmp_path / "raw"), size=32))
    )
    assert store.ids() == ["cju0000", "cju0001", "cju0002"]
    assert store.manifest.column("mask_path").to_pylist()[0] == "Kvasir-SEG/masks/cju0000.jpg"
    assert 0 < store.manifest.column("fg_fraction").to_pylist()[0] < 1


def test_cvc_official_split(tmp_path: Path) -> None:
    store = open_dataset_store(run(_cfg(tmp_path, "cvc", cvc_tree(tmp_path / "raw"), size=32)))
    assert [len(store.indices(s)) for s in ("train", "val", "test")] == [3, 2, 2]
    assert store.attrs["source"]["split"]["official"] == 7


def test_isic_with_test_set(tmp_path: Path) -> None:
    root = isic_tree(tmp_path / "raw", n=2, sets=(ISIC_TRAIN, ISIC_TEST))
    store = open_dataset_store(run(_cfg(tmp_path, "isic", root, size=32)))
    assert store.manifest.column("split").to_pylist() == ["train", "train", "test", "test"]


def test_idrid_classes_and_split(tmp_path: Path) -> None:
    store = open_dataset_store(run(_cfg(tmp_path, "idrid", idrid_tree(tmp_path / "raw"), size=32)))
    assert store.classes == ["background", "optic_disc"]
    assert store.manifest.column("split").to_pylist() == ["train"] * 3 + ["test"] * 2
    truth = "A. Segmentation/2. All Segmentation Groundtruths/a. Training Set/5. Optic Disc"
    assert store.manifest.column("mask_path").to_pylist()[0] == f"{truth}/IDRiD_01_OD.tif"


# ---------------------------------------------------------------- bad inputs: one error, no output


def _fails(cfg: PrepareConfig, *expected: str) -> str:
    with pytest.raises(DatasetError) as err:
        run(cfg)
    message = str(err.value)
    for text in expected:
        assert text in message, message
    assert not cfg.out.exists() and not cfg.out.parent.exists()
    return message


def test_every_bad_file_is_reported_at_once(tmp_path: Path) -> None:
    root = folder_tree(tmp_path / "raw", n=8)
    truncate(root / "images" / "img00.jpg")
    (root / "masks" / "img01.png").unlink()
    write(root / "masks" / "orphan.png", blob(1))
    write(root / "masks" / "img02.png", blob(2, h=30))  # wrong size
    ramp = np.tile(np.linspace(0, 255, 48).astype(np.uint8), (40, 1))
    write(root / "masks" / "img03.png", ramp)  # grey ramp
    (root / "masks" / "img04.png").write_bytes(b"\x89PNG\r\n\x1a\ngarbage")
    message = _fails(
        _cfg(tmp_path, "folder", root, size=32),
        "has 6 problem(s); fix them and rerun (nothing was written):",
        f"{root / 'images' / 'img00.jpg'}: truncated JPEG",
        f"{root / 'images' / 'img01.jpg'}: image has no mask",
        f"{root / 'masks' / 'orphan.png'}: mask has no image",
        f"{root / 'masks' / 'img02.png'}: mask is 48×30 but its image is 48×40 (W×H)",
        f"{root / 'masks' / 'img03.png'}: non-binary mask values",
        f"{root / 'masks' / 'img04.png'}: truncated PNG",
    )
    assert len(message.splitlines()) == 7


def test_negative_with_a_lesion_is_refused(tmp_path: Path) -> None:
    root = folder_tree(tmp_path / "raw", n=2, negatives=1)
    write(root / "ood_negatives" / "masks" / "neg00.png", blob(0))
    _fails(
        _cfg(tmp_path, "folder", root, size=32, include_negatives=True),
        f"{root / 'ood_negatives' / 'masks' / 'neg00.png'}: mask of a negative",
    )


def test_empty_folders_are_refused(tmp_path: Path) -> None:
    (tmp_path / "raw" / "images").mkdir(parents=True)
    (tmp_path / "raw" / "masks").mkdir()
    _fails(_cfg(tmp_path, "folder", tmp_path / "raw"), f"{tmp_path / 'raw' / 'images'}: no image")


def test_wrong_tree_for_the_layout_is_refused(tmp_path: Path) -> None:
    root = folder_tree(tmp_path / "raw", n=2)
    _fails(
        _cfg(tmp_path, "idrid", root),
        f"{root / '1. Original Images' / 'a. Training Set'}: missing images folder",
    )


def test_wrong_layout_name_lists_choices(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="must be one of " + ", ".join(LAYOUTS)):
        _cfg(tmp_path, "endoscene", tmp_path)


# ---------------------------------------------------------------- the real polyp dataset


@pytest.mark.data
def test_real_polyp_dataset(polyp_root: Path, tmp_path: Path) -> None:
    assert len(LAYOUTS["folder"].scan(polyp_root).pairs) == 200
    store = open_dataset_store(
        run(_cfg(tmp_path, "folder", polyp_root, size=64, include_negatives=True))
    )
    assert len(store) == 220 and store.size == (64, 64)
    flags = store.manifest.column("flags").to_pylist()
    assert sum("negative" in f for f in flags) == 20
    fg = np.array(store.manifest.column("fg_fraction").to_pylist())
    assert (fg[:200] > 0).all() and (fg[200:] == 0).all()
    assert 0.10 < fg[:200].mean() < 0.20  # the README says 14.5 % on average


@pytest.mark.data
def test_real_files_truncated_and_unpaired_fail_together(polyp_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "raw"
    stems = sorted(p.stem for p in (polyp_root / "images").glob("*.jpg"))[:4]
    for folder, ext in (("images", ".jpg"), ("masks", ".png")):
        (root / folder).mkdir(parents=True)
        for stem in stems:
            shutil.copy(polyp_root / folder / f"{stem}{ext}", root / folder / f"{stem}{ext}")
    truncate(root / "images" / f"{stems[0]}.jpg", keep=0.7)
    (root / "masks" / f"{stems[1]}.png").unlink()
    _fails(
        _cfg(tmp_path, "folder", root, size=64),
        "has 2 problem(s)",
        f"{root / 'images' / f'{stems[0]}.jpg'}: truncated JPEG",
        f"{root / 'images' / f'{stems[1]}.jpg'}: image has no mask",
    )
