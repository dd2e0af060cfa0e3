"""Precompute end to end on seeded random-init nets: stored content pinned, resume, cluster.

``GOLDEN`` was computed with the precompute code as it stood BEFORE the variant table, the
batch-vectorised SC and the writer queue (commit 9d85a9a), on this fixture (CPU, torch 2.13):
those changes must not move a single stored code or statistic.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from precompute_inputs import EPOCH, content_digest, make_inputs, plc, precompute_args

GOLDEN = {
    "ids": "a93f319b5aa2865f9048b9b34277f91ec32cf2a3f3b4fbf93cc41cdcdb05548b",
    "done": "937e3ee177ea363e5076a0196bf7bfcbbfc6316a519b4b042cff1f1529584334",
    "soft/teacher": "68f415b6fe8e0b827b0c04f776bce758b2c6e2a9ce3dd1c66fa55eccf6a29095",
    "soft/teacher_sc": "81046a6b6b0c2e8fea1497e2ca481bd2aac803709723eb510deeef7eefb06caf",
    "soft/teacher_fa": "88d9cf2ab37fb2f1d86abd2c463594e090aab138a954af4db49d99d7fe38ca14",
    "soft/teacher_ba": "8f56dc9ba9cc8782e31facfeed443cfb14cf6f5b70eafa262549fc1697a59c7b",
    "soft/teacher_fa_ba": "28f8a35f6e3cb112aa22e4fc4491a9bc99bc6076bf984c81ed156323b7385032",
    "soft/plc": "28080c6d4b0bf1d377fc350b94f54e83369e4ea37480089244b48099204dd579",
    "stats/false_pixels_teacher": "5d0b437069f77c0736e29f5e5ee3de410b5cda27758933b8af12c65c7fb3210b",
    "stats/false_pixels_teacher_sc": "85ada57e1f601e962d705f389285adb4e74f450bc00672240dfef7399d82457f",
    "stats/false_pixels_teacher_fa": "45159c1ca1b0709e2dc5cd5824cffec53c73f5d6500f015c6dce87e99acda786",
    "stats/false_pixels_teacher_ba": "7905643fe153c15ed5d706ddba46c1816fd29580a198a8dfd85d2a295f031efb",
    "stats/false_pixels_teacher_fa_ba": "4d5e14458d722c1f8584203fb0746bbac1bc2f24335850413ec0cfc7459a9041",
    "stats/false_pixels_plc": "85ada57e1f601e962d705f389285adb4e74f450bc00672240dfef7399d82457f",
    "stats/dice_teacher": "867c8275d0d70a68127bd80f1d2dbb5569f47561dc2e02e13482bc307f150feb",
    "stats/dice_teacher_sc": "d20586dd2d957ecf2d87138e60f533dcfc7693f39426018bdb770d7ba72ded85",
    "stats/dice_teacher_fa": "799a5891d400e01d316aaaf03167d47374ae43db6c3a8a032eb009c31d7441d2",
    "stats/dice_teacher_ba": "7e87595a118f70603e12aa6ad48745896c63f0e06568416737abd0a3e89b194b",
    "stats/dice_teacher_fa_ba": "d70ccfe66326e452f7e4131eed96eac5409480a4625d929db368b5d69de9fb15",
    "stats/dice_plc": "d20586dd2d957ecf2d87138e60f533dcfc7693f39426018bdb770d7ba72ded85",
    "stats/sc_in_image_teacher_sc": "b1b9ee0dbc848443a8ac032f303fdc6d975637431f3d6136dcc92075ddb0685c",
    "stats/sc_bank_teacher_sc": "802a35a707522fee0c354f8827345fa28cde6cb7fdf423521242b4e038d2fc2f",
    "stats/sc_onehot_teacher_sc": "85ada57e1f601e962d705f389285adb4e74f450bc00672240dfef7399d82457f",
    "stats/sc_in_image_plc": "4d5e14458d722c1f8584203fb0746bbac1bc2f24335850413ec0cfc7459a9041",
    "stats/sc_bank_plc": "85ada57e1f601e962d705f389285adb4e74f450bc00672240dfef7399d82457f",
    "stats/sc_onehot_plc": "85ada57e1f601e962d705f389285adb4e74f450bc00672240dfef7399d82457f",
}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_inputs(tmp_path_factory.mktemp("precompute"))


@pytest.fixture(scope="module")
def store(inputs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("labels") / "g.zarr"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SOURCE_DATE_EPOCH", EPOCH)
        plc(*precompute_args(inputs, out))
    return out


def test_stored_content_unchanged_from_the_pre_change_code(store: Path) -> None:
    digest = content_digest(
        store, variants=tuple(k.split("/")[1] for k in GOLDEN if k.startswith("soft/"))
    )
    differing = sorted(k for k in GOLDEN if digest.get(k) != GOLDEN[k])
    assert not differing, f"stored arrays changed: {differing}"
