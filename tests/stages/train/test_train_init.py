"""`--init` through the CLI: the official npz lands in the teacher, a plc-kd checkpoint starts an
assistant, the init file's SHA-256 reaches the checkpoint and the label store's provenance, a
changed init file retrains, and a bad one is one message with exit code 1."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from official_npz import official_arrays, write_official_npz
from typer.testing import CliRunner

from pipeline.checkpoint import build_from_checkpoint, load_checkpoint
from pipeline.models.transunet import TINY_TRANSUNET, TransUNetConfig
from stages.cli import app

runner = CliRunner()
SIZE = 32  # transunet-tiny: position grid 2×2; the generated file has 3×3 (+ class token)
TINY = TransUNetConfig(num_classes=2, img_size=SIZE, **TINY_TRANSUNET)
# lr ~0: after training the weights still equal the init (checks that the file landed)
TRAIN = ("--model", "transunet-tiny", "--epochs", 1, "--batch-size", 4, "--lr", 1e-12,
         "--steps-per-epoch", 2, "--allow-weak-teacher", "--no-progress", "--device", "cpu")  # fmt: skip


def plc(*args: object) -> tuple[int, str]:
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


def ok(*args: object) -> str:
    code, out = plc(*args)
    assert code == 0, f"plc {' '.join(map(str, args))} failed:\n{out}"
    return out


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("init") / "data" / "s.zarr"
    ok("prepare", "--dataset", "synthetic", "--out", out, "--size", SIZE, "--count", 12,
       "--seed", 1, "--no-progress")  # fmt: skip
    return out


def _teacher(store: Path, out: Path, init: Path) -> str:
    return ok(
        "train-teacher", "--dataset", "s", "--data", store, "--out", out, "--init", init, *TRAIN
    )


def test_teacher_from_official_npz_records_its_sha_and_retrains_on_change(
    store: Path, tmp_path: Path
) -> None:
    arrays = official_arrays(TINY, seed=0, grid=3)
    npz = write_official_npz(tmp_path / "R50+ViT-B_16.npz", arrays)
    out = tmp_path / "teacher.pt"
    _teacher(store, out, npz)
    model, meta = build_from_checkpoint(out)
    assert meta["config"]["init_sha256"] == sha256(npz)
    root = torch.from_numpy(arrays["conv_root/kernel"]).permute(3, 2, 0, 1)  # HWIO -> OIHW
    torch.testing.assert_close(model.encoder.stem[0].weight, root, atol=1e-5, rtol=0)
    q = arrays["Transformer/encoderblock_1/MultiHeadDotProductAttention_1/query/kernel"]
    want_q = torch.from_numpy(q.reshape(TINY.hidden, TINY.hidden).T.copy())
    torch.testing.assert_close(
        model.transformer.blocks[1].attention.query.weight, want_q, atol=1e-5, rtol=0
    )

    before = out.read_bytes()
    _teacher(store, out, npz)  # same config, same init content: a no-op
    assert out.read_bytes() == before
    write_official_npz(npz, official_arrays(TINY, seed=1, grid=3))  # same path, new content
    _teacher(store, out, npz)
    assert (
        load_checkpoint(out)["config"]["init_sha256"]
        == sha256(npz)
        != meta["config"]["init_sha256"]
    )


def test_bad_init_is_one_message_and_writes_nothing(store: Path, tmp_path: Path) -> None:
    arrays = official_arrays(TINY, seed=0, grid=3)
    del arrays["block1/unit1/gn1/scale"]
    arrays["Transformer/encoderblock_0/LayerNorm_0/scale"] = np.zeros(5, np.float32)
    npz = write_official_npz(tmp_path / "broken.npz", arrays)
    out = tmp_path / "teacher.pt"
    code, text = plc(
        "train-teacher", "--dataset", "s", "--data", store, "--out", out, "--init", npz, *TRAIN
    )
    assert code == 1 and "Traceback" not in text and not out.exists()
    assert "error: init file" in text and "2 problem(s)" in text
    assert "missing: block1/unit1/gn1/scale" in text
    assert "mis-shaped: Transformer/encoderblock_0/LayerNorm_0/scale is (5,)" in text
    code, text = plc("train-teacher", "--dataset", "s", "--data", store, "--out", out,
                     "--init", tmp_path / "absent.npz", *TRAIN)  # fmt: skip
    assert code == 1 and "--init" in text and "absent.npz does not exist" in text
    assert "Traceback" not in text and not out.exists()


@pytest.mark.slow  # three trainings and a precompute
def test_assistant_from_teacher_checkpoint_and_shas_in_label_store(
    store: Path, tmp_path: Path
) -> None:
    from storage_schema import open_label_store

    npz = write_official_npz(tmp_path / "R50+ViT-B_16.npz", official_arrays(TINY, grid=3))
    teacher, fp, bd = tmp_path / "t.pt", tmp_path / "fp.pt", tmp_path / "bd.pt"
    _teacher(store, teacher, npz)
    common = ("--dataset", "s", "--data", store, "--teacher", teacher, *TRAIN)
    # a teacher at lr ~0 makes one kind of false pixel only, too few for FIG: precompute takes
    # any three checkpoints, so a second (random-init) BT assistant stands in for TA_f here
    ok("train-assistant", *common, "--kind", "boundary", "--out", fp, "--bt-delta", 2)
    ok("train-assistant", *common, "--kind", "boundary", "--out", bd, "--bt-delta", 2,
       "--init", teacher)  # fmt: skip
    bd_model, bd_meta = build_from_checkpoint(bd)
    t_model, _ = build_from_checkpoint(teacher)
    assert bd_meta["config"]["init_sha256"] == sha256(teacher)
    bd_params = dict(bd_model.named_parameters())
    for k, v in t_model.named_parameters():  # started from the teacher, lr ~0 (BN stats move)
        torch.testing.assert_close(bd_params[k], v, atol=1e-5, rtol=0)
    labels = tmp_path / "labels.zarr"
    ok("precompute", "--dataset", "s", "--data", store, "--teacher", teacher,
       "--assistant-fp", fp, "--assistant-bd", bd, "--out", labels, "--shard-size", 8,
       "--batch-size", 4, "--no-progress", "--device", "cpu")  # fmt: skip
    nets = open_label_store(labels).provenance["networks"]
    assert nets["teacher"]["init_sha256"] == sha256(npz)
    assert nets["assistant_bd"]["init_sha256"] == sha256(teacher)
    assert nets["assistant_fp"]["init_sha256"] is None
