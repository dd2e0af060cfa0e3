"""Training that survives a kill: each training stage, SIGKILLed mid-training after its first
epoch state, resumes with --resume to the same bytes as an uninterrupted run; the state file's
rules (leftover named, other config refused naming the field, atomic, removed when published).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from kill_at_step import ENV, SCRIPT
from precompute_inputs import EPOCH, make_inputs, plc, precompute_args
from typer.testing import CliRunner

from stages.cli import app
from stages.train.resume import ResumeError, TrainingState, state_path

STEPS = 3  # per epoch: a kill at step 4 lands in epoch 1, after epoch 0's state
RECIPE = ("--epochs", 3, "--steps-per-epoch", STEPS, "--batch-size", 4, "--val-fraction",
          0.25, "--allow-weak-teacher", "--device", "cpu", "--no-progress")  # fmt: skip
runner = CliRunner()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("resume")
    found = make_inputs(root)
    labels = root / "labels" / "g.zarr"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SOURCE_DATE_EPOCH", EPOCH)
        plc(*precompute_args(found, labels))
    return {**found, "labels": labels}


@pytest.fixture(autouse=True)
def one_thread(monkeypatch: pytest.MonkeyPatch):
    """In-process and killed runs on one thread each: the bytes compared must not depend on
    the thread count an earlier test left in this process (benchmarks/study.py sets it)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the subprocesses' torch starts with one
    yield
    torch.set_num_threads(before)


def _killed(args: list[str], at_step: int) -> None:
    """Run ``plc ARGS`` in a subprocess that is SIGKILLed at optimizer step ``at_step``."""
    env = os.environ | {ENV: str(at_step)}
    words = [str(a) for a in args]
    proc = subprocess.run([sys.executable, "-c", SCRIPT, *words], env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]


def _ok(*args: object) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


def _kill_and_resume(args: list[str], output: Path, files: list[Path]) -> None:
    """Uninterrupted run → its bytes; killed run → a state after epoch 0 and no output;
    resumed run → the same bytes, and the state file gone."""
    _ok(*args)
    reference = {f.name: f.read_bytes() for f in files}
    for f in files:
        f.unlink()
    _killed(args, at_step=STEPS + 1)
    state = state_path(output)
    assert not any(f.exists() for f in files), "the kill came after the outputs were written"
    saved = torch.load(state, weights_only=True)
    assert len(saved["snapshot"]["history"]) == 1  # epoch 0 done, epoch 1 cut short
    _ok(*args, "--resume")
    assert not state.exists()
    for f in files:
        assert f.read_bytes() == reference[f.name], f"{f.name} differs after resuming"


@pytest.mark.slow
def test_train_teacher_killed_mid_epoch_resumes_to_the_same_bytes(inputs, tmp_path) -> None:
    out = tmp_path / "teacher.pt"
    args = ["train-teacher", "--dataset", "g", "--data", inputs["data"], "--model",
            "unet-tiny", "--out", out, *RECIPE]  # fmt: skip
    _kill_and_resume(
        args,
        out,
        [out, out.with_suffix(".metrics.json"), out.with_suffix(".curve.csv")],
    )


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["false-pixel", "boundary"])
def test_train_assistant_killed_mid_epoch_resumes_to_the_same_bytes(
    inputs, tmp_path, kind: str
) -> None:
    """For TA_f the FIG queues and its generator come back from the state (no refill)."""
    out = tmp_path / f"assistant-{kind}.pt"
    args = ["train-assistant", "--dataset", "g", "--data", inputs["data"], "--kind", kind,
            "--teacher", inputs["teacher"], "--out", out, *RECIPE]  # fmt: skip
    _kill_and_resume(args, out, [out, out.with_suffix(".curve.csv")])


@pytest.mark.slow
def test_distill_killed_mid_epoch_resumes_to_the_same_student_and_metrics(inputs, tmp_path) -> None:
    out = tmp_path / "run"
    args = ["distill", "--labels", inputs["labels"], "--out", out, "--variant", "plc",
            "--student", "unet-tiny", *RECIPE]  # fmt: skip
    files = [out / "student.pt", out / "metrics.json", out / "curve.csv"]
    _kill_and_resume(args, out, files)
    assert not out.with_name("run.train-state").exists()


@pytest.mark.slow
def test_a_leftover_state_is_named_and_another_config_is_refused_naming_the_field(
    inputs, tmp_path
) -> None:
    out = tmp_path / "teacher.pt"
    args = ["train-teacher", "--dataset", "g", "--data", str(inputs["data"]), "--model",
            "unet-tiny", "--out", str(out), *map(str, RECIPE)]  # fmt: skip
    _killed(args, at_step=STEPS + 1)
    state = state_path(out)
    before = state.read_bytes()

    plain = runner.invoke(app, args)  # no --resume: named, never used nor overwritten
    assert plain.exit_code == 1
    assert f"{state} holds the state of an interrupted plc train-teacher" in plain.output
    assert "after epoch 1 of 3" in plain.output and "rerun with --resume" in plain.output
    assert "Traceback" not in plain.output

    other = runner.invoke(app, [*args, "--resume", "--lr", "0.5"])
    assert other.exit_code == 1
    assert "options.lr=0.001 (this run: 0.5)" in other.output
    assert "Traceback" not in other.output
    assert state.read_bytes() == before and not out.exists()

    _ok(*args, "--resume")  # the right run continues, and clears the state
    assert out.exists() and not state.exists()


def test_resume_without_a_state_starts_from_epoch_zero(inputs, tmp_path) -> None:
    out = tmp_path / "teacher.pt"
    args = ["train-teacher", "--dataset", "g", "--data", inputs["data"], "--model",
            "unet-tiny", "--out", out, *RECIPE, "--epochs", 1]  # fmt: skip
    _ok(*args, "--resume")
    assert out.exists() and not state_path(out).exists()


def test_a_failed_training_check_leaves_no_state(inputs, tmp_path) -> None:
    """A user error after training removes the state it wrote: nothing half-written."""
    out = tmp_path / "run"
    result = runner.invoke(app, [str(a) for a in ("distill", "--labels", inputs["labels"],
        "--out", out, "--variant", "none", "--student", "unet-tiny", "--epochs", 1,
        "--steps-per-epoch", 1, "--lr", "1e-9", "--device", "cpu", "--no-progress")])  # fmt: skip
    assert result.exit_code == 1 and "failed the training check" in result.output
    assert not out.exists() and not out.with_name("run.train-state").exists()


# --------------------------------------------------------------------------- the state file


def _state(tmp_path: Path, resume: bool = True, **fingerprint) -> TrainingState:
    return TrainingState(
        tmp_path / "model.pt", {"options": {"lr": 0.1, **fingerprint}}, resume=resume,
        command="plc train-teacher",
    )  # fmt: skip


def _snapshot(epochs_done: int) -> dict:
    return {"history": [{"epoch": e} for e in range(epochs_done)], "epochs": 5,
            "model": {"w": torch.arange(3.0)}}  # fmt: skip


def test_the_state_file_round_trips_and_is_replaced_atomically(tmp_path) -> None:
    state = _state(tmp_path)
    assert state.load() is None and not state.resuming
    state.save(_snapshot(1))
    state.save(_snapshot(2))
    assert state.path == tmp_path / "model.pt.train-state"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt.train-state"]  # no tmp left
    loaded = _state(tmp_path).load()
    assert len(loaded["history"]) == 2 and torch.equal(loaded["model"]["w"], torch.arange(3.0))
    state.finish()
    assert not state.path.exists()


def test_a_kill_during_the_write_leaves_the_previous_state_whole(tmp_path, monkeypatch) -> None:
    state = _state(tmp_path)
    state.save(_snapshot(1))

    def torn(obj, f):  # the process dies halfway through writing the temporary file
        f.write(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", torn)
    with pytest.raises(KeyboardInterrupt):
        state.save(_snapshot(2))
    monkeypatch.undo()
    assert len(_state(tmp_path).load()["history"]) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt.train-state"]


def test_an_unreadable_state_is_one_sentence(tmp_path) -> None:
    _state(tmp_path).path.write_bytes(b"not a torch file")
    with pytest.raises(ResumeError, match=r"cannot be read as a training state .*delete it"):
        _state(tmp_path).load()


def test_nested_fingerprint_differences_are_all_named(tmp_path) -> None:
    _state(tmp_path, seed=1).save(_snapshot(1))
    with pytest.raises(ResumeError) as err:
        _state(tmp_path, seed=2, lr=0.2).load()
    text = str(err.value)
    assert "options.lr=0.1 (this run: 0.2)" in text and "options.seed=1 (this run: 2)" in text


def test_only_a_user_error_after_saving_removes_the_state(tmp_path) -> None:
    with pytest.raises(ValueError), _state(tmp_path) as state:
        state.save(_snapshot(1))
        raise ValueError("training check failed")
    assert not state.path.exists()
    with pytest.raises(RuntimeError), _state(tmp_path) as state:  # a crash: kept for --resume
        state.save(_snapshot(1))
        raise RuntimeError("CUDA out of memory")
    assert state.path.exists()
    with pytest.raises(ResumeError), _state(tmp_path, resume=False) as state:
        state.load()  # the leftover is named, and left alone
    assert state.path.exists()


# --------------------------------------------------------------------------- dvc repro

DVC_YAML = """\
stages:
  train_teacher:
    cmd: >-
      plc train-teacher --dataset g --data data/g.zarr --out models/teacher.pt
      --params params.yaml:team --force --no-progress
    deps: [data/g.zarr]
    params: [team]
    outs: [models/teacher.pt]
"""
TEAM = {"resume": True, "model": "unet-tiny", "epochs": 60, "steps_per_epoch": 2,
        "batch_size": 4, "val_fraction": 0.25, "allow_weak_teacher": True, "device": "cpu"}  # fmt: skip


@pytest.mark.slow
def test_dvc_repro_after_a_kill_resumes_the_stage_to_the_same_bytes(inputs, tmp_path) -> None:
    """The documented switch: ``resume: true`` in the stage's params section. dvc repro is
    SIGKILLed (with its plc) once the first epoch's state exists; dvc repro again resumes."""
    import shutil
    import time

    import yaml

    env = os.environ | {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    dvc = [sys.executable, "-m", "dvc"]

    def make_project(name: str) -> Path:
        root = tmp_path / name  # the same relative paths: the configs recorded are equal
        shutil.copytree(inputs["data"], root / "data" / "g.zarr")
        (root / "dvc.yaml").write_text(DVC_YAML)
        (root / "params.yaml").write_text(yaml.safe_dump({"team": TEAM}))
        subprocess.run([*dvc, "init", "--no-scm", "-q"], cwd=root, env=env, check=True,
                       timeout=120)  # fmt: skip
        return root

    uninterrupted = make_project("uninterrupted")
    subprocess.run([*dvc, "repro", "-q"], cwd=uninterrupted, env=env, check=True,
                   capture_output=True, timeout=600)  # fmt: skip
    reference = uninterrupted / "models" / "teacher.pt"

    project = make_project("killed")
    out = project / "models" / "teacher.pt"
    proc = subprocess.Popen([*dvc, "repro"], cwd=project, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while not state_path(out).exists():
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "no training state within 180 s"
            time.sleep(0.01)
        os.killpg(proc.pid, signal.SIGKILL)  # dvc and plc, as a preempted machine would
    finally:
        proc.wait(timeout=30)
        proc.stderr.close()
    assert not out.exists(), "the kill came after the teacher was published"

    again = subprocess.run([*dvc, "repro"], cwd=project, env=env, capture_output=True,
                           text=True, timeout=600)  # fmt: skip
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    assert "resuming from" in again.stdout + again.stderr
    assert out.read_bytes() == reference.read_bytes()
    assert not state_path(out).exists()
