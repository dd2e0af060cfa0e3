"""Bad ``--teacher`` files through the CLI: one message each, exit 1, nothing written.

Each broken TorchScript export (wrong number of classes, wrong size, NaN, a list, a script
that raises) and a file of neither kind is refused by ``plc precompute`` and ``plc
train-assistant`` before any work, on one real batch of the dataset store.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from precompute_inputs import make_inputs, precompute_args
from torchscript_nets import HalfSize, ReturnsList, TinySeg, WantsFourChannels, WithNaN, export
from typer.testing import CliRunner

from stages.cli import app

runner = CliRunner()
BAD = {  # name -> (network, a phrase the message must hold)
    "three-classes": (
        lambda: TinySeg(num_classes=3),
        "logits have shape (4, 3, 32, 32), expected (B, C, H, W) = (4, 2, 32, 32)",
    ),
    "half-size": (
        HalfSize,
        "logits have shape (4, 2, 16, 16), expected (B, C, H, W) = (4, 2, 32, 32)",
    ),
    "nan": (WithNaN, "logits hold 4 NaN or infinite value(s)"),
    "list": (ReturnsList, "it returned a list of 2 (Tensor, Tensor), not a Tensor or a tuple"),
    "raises": (WantsFourChannels, "raised RuntimeError: expected RGBA input with 4 channels"),
}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("teacher")
    found = make_inputs(root, count=10)
    for name, (net, _) in BAD.items():
        found[name] = export(net(), root / "bad" / f"{name}.pt", "script")
    found["junk"] = root / "bad" / "junk.pt"
    found["junk"].write_bytes(b"\x00 not a network")
    found["good"] = export(TinySeg(), root / "bad" / "good.pt", "script")
    return found


def _refused(args: list[str], out_dir: Path, *phrases: str) -> str:
    result = runner.invoke(app, args)
    text = result.output
    assert result.exit_code == 1, text
    assert text.count("error:") == 1 and "Traceback" not in text, text
    for phrase in phrases:
        assert phrase in " ".join(text.split()), text  # the message may wrap
    assert not out_dir.exists() or not any(out_dir.iterdir()), list(out_dir.iterdir())
    return text


def _assistant_args(inputs: dict[str, Path], teacher: Path, out: Path, *extra: str) -> list[str]:
    return ["train-assistant", "--dataset", "g", "--data", str(inputs["data"]),
            "--teacher", str(teacher), "--out", str(out), "--epochs", "1",
            "--steps-per-epoch", "1", "--batch-size", "4", "--no-progress", "--device", "cpu",
            *extra]  # fmt: skip


@pytest.mark.parametrize("name", list(BAD))
def test_a_broken_export_is_refused_by_precompute(
    inputs: dict[str, Path], tmp_path: Path, name: str
) -> None:
    args = precompute_args(inputs | {"teacher": inputs[name]}, tmp_path / "out" / "labels.zarr")
    _refused(args, tmp_path / "out", f"TorchScript teacher {inputs[name]}, run on 4 train image(s)",
             BAD[name][1], "docs/commands.md: TorchScript teachers")  # fmt: skip


@pytest.mark.parametrize("name", list(BAD))
def test_a_broken_export_is_refused_by_train_assistant(
    inputs: dict[str, Path], tmp_path: Path, name: str
) -> None:
    out = tmp_path / "out" / "fp.pt"
    args = _assistant_args(inputs, inputs[name], out, "--kind", "false-pixel", "--model",
                           "unet-tiny")  # fmt: skip
    _refused(args, tmp_path / "out", f"TorchScript teacher {inputs[name]}", BAD[name][1])


def test_a_file_of_neither_kind_is_refused(inputs: dict[str, Path], tmp_path: Path) -> None:
    junk = inputs["junk"]
    want = f"teacher {junk} is neither a plc-kd checkpoint nor a TorchScript file"
    args = precompute_args(inputs | {"teacher": junk}, tmp_path / "out" / "labels.zarr")
    _refused(args, tmp_path / "out", want)
    out = tmp_path / "out" / "fp.pt"
    args = _assistant_args(inputs, junk, out, "--kind", "false-pixel", "--model", "unet-tiny")
    _refused(args, tmp_path / "out", want)


@pytest.mark.parametrize("kind", ["false-pixel", "boundary"])
def test_a_torchscript_teacher_needs_model(
    inputs: dict[str, Path], tmp_path: Path, kind: str
) -> None:
    args = _assistant_args(inputs, inputs["good"], tmp_path / "out" / "a.pt", "--kind", kind)
    _refused(args, tmp_path / "out", "--model is required with a TorchScript teacher",
             str(inputs["good"]))  # fmt: skip
