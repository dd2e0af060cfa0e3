"""A 2-step golden run of every KD loss of ``pipeline.kd_table`` through ``plc distill``, the
live teacher's wiring (the loss's parts saved apart from the student, the teacher's identity
recorded, the paired digests unchanged), its errors, and a teacher loss resumed after kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from kill_at_step import ENV, SCRIPT
from loader_stores import make_stores
from typer.testing import CliRunner

from pipeline.checkpoint import build_from_checkpoint, save_checkpoint
from pipeline.kd_table import KD_LOSSES, LOSS_NAMES, get_loss
from pipeline.models.registry import build_model
from stages.cli import app
from stages.distill.teacher_kd import KD_MODULES, teacher_path
from stages.report.runs import row_key

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("losses")
    data, labels = make_stores(root, n_train=12)
    torch.manual_seed(1)
    teacher = build_model("unet-tiny", num_classes=2, img_size=32)
    save_checkpoint(root / "teacher.pt", teacher, model_name="unet-tiny", num_classes=2,
                    img_size=32, config={"stage": {}})  # fmt: skip
    return {"data": data, "labels": labels, "teacher": root / "teacher.pt"}


def _args(setup: dict[str, Path], out: Path, *extra: object) -> list[str]:
    args = ["distill", "--labels", setup["labels"], "--data", setup["data"], "--out", out,
            "--student", "unet-tiny", "--batch-size", "4", "--device", "cpu",
            "--num-workers", "0", "--no-progress", "--epochs", "1", "--steps-per-epoch", "2",
            "--allow-weak-teacher", *extra]  # fmt: skip
    return [str(a) for a in args]


def _distill(setup, out, *extra):
    return runner.invoke(app, _args(setup, out, *extra))


@pytest.mark.parametrize("loss", LOSS_NAMES)
def test_every_loss_trains_two_steps_and_records_itself(setup, tmp_path, loss) -> None:
    row = get_loss(loss)
    out = tmp_path / loss
    extra = ["--loss", loss, "--variant", "teacher"]
    if row.reads == "teacher":
        extra += ["--teacher", setup["teacher"], "--plus-kd"]
    result = _distill(setup, out, *extra)
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["loss"] == loss and 0.0 <= metrics["dice"] <= 1.0
    curve = (out / "curve.csv").read_text().splitlines()[0].split(",")
    assert loss in curve and "seg" in curve  # every term of the step is in the curve
    student, meta = build_from_checkpoint(out / "student.pt")  # a plain student
    assert meta["model_name"] == "unet-tiny" and not any(
        k.startswith(("kd.", "student.")) for k in student.state_dict()
    )
    if row.reads == "teacher":
        assert "kd" in curve  # --plus-kd's term
        recorded = metrics["teacher"]
        assert recorded["path"] == str(setup["teacher"])
        assert recorded["taps"] == recorded["student_taps"] == ["bottleneck", "dec2"][-row.taps :]
        assert len(recorded["sha256"]) == 64
        assert row_key(metrics["config"]) == loss + "+kd"
    has_parts = loss in ("fitnet", "cirkd")  # a connector, CIRKD's head and memory
    assert (out / KD_MODULES).exists() == has_parts
    if has_parts:
        saved = torch.load(out / KD_MODULES, weights_only=True)
        assert saved["loss"] == loss and saved["state_dict"]


def test_a_teacher_loss_keeps_the_paired_design_of_its_fold_and_seed(setup, tmp_path) -> None:
    digests = []
    for name, extra in (("kd", ["--loss", "kd"]), ("fitnet", ["--loss", "fitnet"]),
                        ("cirkd", ["--loss", "cirkd", "--plus-kd"])):  # fmt: skip
        out = tmp_path / name
        result = _distill(setup, out, "--variant", "teacher", *extra,
                          *(["--teacher", setup["teacher"]] if name != "kd" else []))  # fmt: skip
        assert result.exit_code == 0, result.output
        m = json.loads((out / "metrics.json").read_text())
        digests.append((m["init_sha256"], m["batches_sha256"]))
    assert len(set(digests)) == 1  # the loss's parts are built after the student's init


def test_teacher_loss_problems_are_named_once(setup, tmp_path) -> None:
    result = _distill(setup, tmp_path / "r", "--loss", "kd", "--plus-kd", "--taps", "dec2")
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "--plus-kd adds KD to a teacher loss" in result.output
    assert "--taps is for a teacher loss" in result.output
    result = _distill(setup, tmp_path / "r", "--loss", "at", "--teacher", setup["teacher"],
                      "--taps", "neck")  # fmt: skip
    assert result.exit_code != 0 and "has no feature tap 'neck'" in result.output
    result = _distill(setup, tmp_path / "r", "--loss", "emkd", "--teacher", setup["teacher"],
                      "--taps", "dec2")  # fmt: skip
    assert result.exit_code != 0 and "reads 2 tap(s) of the student" in result.output
    result = _distill(setup, tmp_path / "r", "--loss", "at")  # the store names no teacher
    assert result.exit_code != 0 and "pass --teacher <teacher.pt>" in result.output
    assert not (tmp_path / "r").exists()


def test_a_teacher_of_other_classes_is_refused(setup, tmp_path) -> None:
    other = tmp_path / "t3.pt"
    save_checkpoint(other, build_model("unet-tiny", num_classes=3, img_size=32),
                    model_name="unet-tiny", num_classes=3, img_size=32, config={"stage": {}})  # fmt: skip
    result = _distill(setup, tmp_path / "r", "--loss", "at", "--teacher", other)
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "segments 3 classes, the dataset 2" in result.output


def test_a_torchscript_teacher_has_no_taps_for_a_teacher_loss(setup, tmp_path) -> None:
    net = build_model("unet-tiny", num_classes=2, img_size=32).eval()
    scripted = tmp_path / "t.pt"
    torch.jit.save(torch.jit.trace(net, torch.zeros(1, 3, 32, 32)), scripted)
    result = _distill(setup, tmp_path / "r", "--loss", "at", "--teacher", scripted)
    assert result.exit_code != 0 and "only a plc-kd checkpoint" in result.output


def test_the_teacher_is_the_one_the_label_store_names() -> None:
    store = SimpleNamespace(path="s.zarr", provenance={"networks": {"teacher": {"path": "m/t.pt"}}})
    assert teacher_path(None, store) == Path("m/t.pt")
    assert teacher_path(Path("other.pt"), store) == Path("other.pt")  # --teacher overrides


def test_a_teacher_loss_resumes_after_kill_bit_for_bit(setup, tmp_path) -> None:
    """CIRKD: trainable head, a memory of buffers and random draws; killed mid-epoch 1."""
    extra = ["--loss", "cirkd", "--plus-kd", "--variant", "teacher", "--teacher",
             setup["teacher"], "--resume"]  # fmt: skip

    def run(out: Path, kill: int | None):
        args = _args(setup, out, *extra)
        args[args.index("--epochs") + 1] = "2"
        env = os.environ | {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
                            ENV: str(10**9 if kill is None else kill)}  # fmt: skip
        return subprocess.run([sys.executable, "-c", SCRIPT, *args], env=env,
                              capture_output=True, text=True, timeout=300)  # fmt: skip

    whole, cut = tmp_path / "whole", tmp_path / "run"
    assert run(cut, None).returncode == 0
    cut.rename(whole)  # the same --out for both runs: the checkpoint records it
    killed = run(cut, 3)  # epoch 0's state is written, step 3 is in epoch 1
    assert killed.returncode == -signal.SIGKILL
    assert Path(str(cut) + ".train-state").exists()
    done = run(cut, None)
    assert done.returncode == 0, done.stderr[-2000:]
    for name in ("student.pt", "curve.csv", KD_MODULES):
        assert (whole / name).read_bytes() == (cut / name).read_bytes(), name


def test_the_table_and_the_cli_agree() -> None:
    result = runner.invoke(app, ["distill", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    text = "".join(result.output.replace("│", " ").split())  # rich wraps at any width
    for row in KD_LOSSES:
        assert "".join(f"{row.name}: {row.label}".split()) in text
