"""``plc import-teacher`` on folders as users hand them over (nnU-Net v2, arrays, PNGs)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from map_folders import noisy_maps, write_arrays, write_nnunet, write_pngs
from precompute_inputs import plc
from typer.testing import CliRunner

from stages.cli import app


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> dict:
    from storage_schema import open_dataset_store

    data = tmp_path_factory.mktemp("import") / "g.zarr"
    plc("prepare", "--dataset", "synthetic", "--out", data, "--size", 32, "--count", 10,
        "--seed", 3, "--no-progress")  # fmt: skip
    s = open_dataset_store(data)
    train = [s.ids()[i] for i in s.indices("train")]
    return {"data": data, "ids": s.ids(), "train": train, "masks": s.read_masks(slice(None))}


def _import(store: dict, probs: Path, out: Path, *extra: object) -> object:
    return CliRunner().invoke(app, [str(a) for a in (
        "import-teacher", "--dataset", "g", "--data", store["data"], "--probs", probs,
        "--out", out, "--no-progress", *extra)])  # fmt: skip


def _normalised(p: np.ndarray) -> np.ndarray:
    p = p.astype(np.float64)
    return (p / p.sum(1, keepdims=True)).astype(np.float32)


def test_nnunet_output_is_imported_as_written(store: dict, tmp_path: Path) -> None:
    from pipeline.imported import open_imported

    probs = noisy_maps(store["masks"])
    write_nnunet(tmp_path / "pred", store["ids"], probs)
    result = _import(store, tmp_path / "pred", tmp_path / "t")
    assert result.exit_code == 0, result.output
    maps = open_imported(tmp_path / "t")
    assert maps.ids == store["ids"]  # train and test maps, manifest order
    a = maps.attrs
    assert (a["layout"], a["kind"], a["size"]) == ("nnunet", "probabilities", [32, 32])
    np.testing.assert_allclose(maps.probs[:], _normalised(probs.astype(np.float16)), atol=1e-6)
    want = {f"{i}.npz": hashlib.sha256((tmp_path / "pred" / f"{i}.npz").read_bytes()).hexdigest()
            for i in store["ids"]}  # fmt: skip
    assert a["files_sha256"] == want


@pytest.mark.parametrize("ext", [".npy", ".npz"])
def test_array_logits_of_the_train_split_only(store: dict, tmp_path: Path, ext: str) -> None:
    from pipeline.imported import open_imported

    rows = [store["ids"].index(i) for i in store["train"]]
    probs = noisy_maps(store["masks"][rows])
    write_arrays(tmp_path / "pred", store["train"], np.log(probs) + 3.0, ext)  # logits
    result = _import(store, tmp_path / "pred", tmp_path / "t", "--kind", "logits")
    assert result.exit_code == 0, result.output
    maps = open_imported(tmp_path / "t")
    assert maps.ids == store["train"] and maps.attrs["kind"] == "logits"
    np.testing.assert_allclose(maps.probs[:], probs, atol=1e-6)


@pytest.mark.parametrize("bits", [8, 16])
def test_pngs_of_the_foreground_probability(store: dict, tmp_path: Path, bits: int) -> None:
    from pipeline.imported import open_imported

    p_fg = write_pngs(tmp_path / "pred", store["ids"], noisy_maps(store["masks"]), bits)
    result = _import(store, tmp_path / "pred", tmp_path / "t")
    assert result.exit_code == 0, result.output
    maps = open_imported(tmp_path / "t")
    assert maps.attrs["layout"] == "png"
    np.testing.assert_allclose(maps.probs[:, 1], p_fg, atol=1e-6)
    np.testing.assert_allclose(maps.probs[:, 0], 1 - p_fg, atol=1e-6)


def test_a_bad_folder_gets_every_problem_in_one_message(store: dict, tmp_path: Path) -> None:
    probs = noisy_maps(store["masks"])
    maps = dict(zip(store["ids"], probs, strict=True))
    missing, nan, wrong_c, volume, logits = store["train"][:5]
    del maps[missing]
    maps[nan] = maps[nan].copy()
    maps[nan][0, 3, 4] = np.nan
    maps[wrong_c] = np.full((3, 32, 32), 1 / 3, np.float32)
    maps[volume] = np.repeat(maps[volume][:, None], 4, axis=1)  # (C, Z=4, H, W)
    maps[logits] = np.log(maps[logits]) * 2
    maps["stranger"] = maps[store["train"][5]]
    write_arrays(tmp_path / "pred", list(maps), list(maps.values()))
    result = _import(store, tmp_path / "pred", tmp_path / "t")
    assert result.exit_code == 1
    text = result.output
    assert "have 6 problem(s); fix them and rerun (nothing was written)" in text
    assert f"no map of 1 train image(s): '{missing}'" in text
    assert f"{nan}.npy: holds 1 NaN and 0 infinite value(s)" in text
    assert f"{wrong_c}.npy: has C = 3 channels, the dataset has 2 classes" in text
    assert f"{volume}.npy: is a 3-D volume (2, 4, 32, 32)" in text
    assert f"{logits}.npy: " in text and "these look like logits: pass --kind logits" in text
    assert "stranger.npy: no image has the id 'stranger'" in text
    assert not (tmp_path / "t").exists() and not list(tmp_path.glob("t.*"))


def test_rerun_is_a_no_op_and_another_teacher_needs_force(store: dict, tmp_path: Path) -> None:
    from pipeline.imported import open_imported

    write_arrays(tmp_path / "pred", store["ids"], noisy_maps(store["masks"]))
    assert _import(store, tmp_path / "pred", tmp_path / "t").exit_code == 0
    digest = open_imported(tmp_path / "t").digest
    again = _import(store, tmp_path / "pred", tmp_path / "t")
    assert again.exit_code == 0 and open_imported(tmp_path / "t").digest == digest
    write_arrays(tmp_path / "pred", store["ids"], noisy_maps(store["masks"], seed=9))
    refused = _import(store, tmp_path / "pred", tmp_path / "t")
    assert refused.exit_code == 1 and "pass --force to replace it" in refused.output
    forced = _import(store, tmp_path / "pred", tmp_path / "t", "--force")
    assert forced.exit_code == 0 and open_imported(tmp_path / "t").digest != digest


def test_test_maps_are_scored_beside_the_teacher_as_a_trained_one_is(
    store: dict, tmp_path: Path
) -> None:
    """teacher.metrics.json: the maps' argmax against the test masks (hand-computed Dice)."""
    import json

    from storage_schema import open_dataset_store

    s = open_dataset_store(store["data"])
    probs = noisy_maps(store["masks"])
    write_arrays(tmp_path / "pred", store["ids"], probs, ".npy")
    out = tmp_path / "models" / "teacher.pt"
    assert _import(store, tmp_path / "pred", out).exit_code == 0
    metrics = json.loads((tmp_path / "models" / "teacher.metrics.json").read_text())
    test = s.indices("test")
    want = []
    for t in test:  # the oracle: foreground Dice of argmax(map) vs the mask, 1 when both empty
        pred, mask = probs[t].argmax(0) == 1, store["masks"][t] == 1
        inter, total = (pred & mask).sum(), pred.sum() + mask.sum()
        want.append(1.0 if total == 0 else 2 * inter / total)
    assert metrics["n_images"] == len(test) and metrics["teacher_kind"] == "imported"
    assert metrics["dice"] == pytest.approx(float(np.mean(want)), abs=1e-9)
    assert (tmp_path / "models" / "teacher.metrics_per_image.csv").exists()
    train_only = tmp_path / "train_only"
    keep = [i for i in store["ids"] if i in store["train"]]
    write_arrays(train_only, keep, probs[[store["ids"].index(i) for i in keep]], ".npy")
    assert _import(store, train_only, tmp_path / "t2").exit_code == 0
    assert not (tmp_path / "t2.metrics.json").exists()  # test maps missing: not scored
