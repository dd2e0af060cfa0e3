"""The imported-teacher artifact: round trip, lookup by id, what it refuses."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.imported import ImportedTeacher, is_imported, open_imported, write_imported

ATTRS = {"classes": ["background", "lesion"], "size": [4, 4], "manifest_sha256": "a" * 64}


def _written(tmp_path: Path) -> tuple[Path, np.ndarray]:
    p = np.random.default_rng(0).random((3, 1, 4, 4)).astype(np.float32)
    probs = np.concatenate([p, 1 - p], axis=1)  # (3, 2, 4, 4)
    write_imported(tmp_path / "t", probs, ["a", "b", "c"], ATTRS)
    return tmp_path / "t", probs


def test_round_trip_and_lookup_by_id_in_any_order(tmp_path: Path) -> None:
    path, probs = _written(tmp_path)
    assert is_imported(path) and not is_imported(tmp_path)
    teacher = ImportedTeacher(open_imported(path))
    got = teacher.probabilities(["c", "a", "c"])  # (3, 2, 4, 4): order kept, repeats allowed
    torch.testing.assert_close(got, torch.from_numpy(probs[[2, 0, 2]]))
    with pytest.raises(ValueError, match="holds no map of 'zz'"):
        teacher.probabilities(["a", "zz"])
    with pytest.raises(TypeError, match="a lookup by image id, not a network"):
        teacher(torch.zeros(1, 3, 4, 4))


def test_the_digest_changes_with_the_content(tmp_path: Path) -> None:
    path, probs = _written(tmp_path)
    first = open_imported(path).digest
    probs[0, 0, 0, 0] += 1e-3
    write_imported(path, probs, ["a", "b", "c"], ATTRS)
    assert open_imported(path).digest != first


def test_fit_problems_name_each_mismatch(tmp_path: Path) -> None:
    path, _ = _written(tmp_path)
    teacher = ImportedTeacher(open_imported(path))
    assert teacher.fit_problems("a" * 64, ["background", "lesion"], [4, 4], ["a", "b"]) == []
    found = teacher.fit_problems("b" * 64, ["bg", "x"], [8, 8], ["a", "q"])
    assert len(found) == 4 and "holds no map of 1 image(s) it must cover: 'q'" in found[3]
