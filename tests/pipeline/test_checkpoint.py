"""Checkpoints: round trip, SHA-256, byte-reproducibility, clear errors, rebuild from registry."""

from __future__ import annotations

import hashlib
import sys
import types
from pathlib import Path

import pytest
import torch
from torch import nn

from pipeline.checkpoint import (
    build_from_checkpoint,
    file_sha256,
    load_checkpoint,
    save_checkpoint,
)

CONFIG = {"stage": {"epochs": 2, "lr": 0.001}, "note": "tiny"}


class Tiny(nn.Module):
    """A conv, a batch norm (buffers + module version metadata) and a head."""

    def __init__(self, classes: int = 2) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.norm = nn.BatchNorm2d(4)
        self.head = nn.Conv2d(4, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.norm(self.conv(x))))


def _model(seed: int = 0) -> Tiny:
    torch.manual_seed(seed)
    model = Tiny()
    model.norm.running_mean.uniform_()  # make buffers non-default
    return model


def _save(path: Path, model: nn.Module, **extra_kwargs) -> str:
    return save_checkpoint(
        path, model, model_name="tiny", num_classes=2, img_size=16, config=CONFIG, **extra_kwargs
    )


def test_round_trip_keeps_weights_and_metadata(tmp_path: Path) -> None:
    model = _model()
    path = tmp_path / "sub" / "model.pt"
    _save(path, model, extra={"teacher_sha256": "ab" * 32, "history": [{"loss": 0.5}]})
    ckpt = load_checkpoint(path)
    assert ckpt["format"] == "plc-kd/checkpoint" and ckpt["version"] == 1
    assert (ckpt["model_name"], ckpt["num_classes"], ckpt["img_size"]) == ("tiny", 2, 16)
    assert ckpt["config"] == CONFIG
    assert ckpt["extra"] == {"teacher_sha256": "ab" * 32, "history": [{"loss": 0.5}]}
    assert list(ckpt) == [
        "format",
        "version",
        "model_name",
        "num_classes",
        "img_size",
        "config",
        "extra",
        "state_dict",
    ]
    for key, value in model.state_dict().items():
        assert torch.equal(ckpt["state_dict"][key], value)
    assert not list(tmp_path.glob("sub/.*tmp"))  # the temporary file is gone


def test_sha256_matches_hashlib_of_the_file(tmp_path: Path) -> None:
    path = tmp_path / "m.pt"
    digest = _save(path, _model())
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
    assert file_sha256(path) == digest


def test_two_saves_are_byte_identical(tmp_path: Path) -> None:
    a, b = tmp_path / "a.pt", tmp_path / "other_name.pt"
    digest_a = _save(a, _model(seed=1))
    digest_b = _save(b, _model(seed=1))
    assert a.read_bytes() == b.read_bytes() and digest_a == digest_b
    assert _save(tmp_path / "c.pt", _model(seed=2)) != digest_a


def test_overwrite_replaces_the_file(tmp_path: Path) -> None:
    path = tmp_path / "m.pt"
    _save(path, _model(seed=1))
    digest = _save(path, _model(seed=2))
    assert file_sha256(path) == digest


def test_missing_file_message(tmp_path: Path) -> None:
    path = tmp_path / "nope.pt"
    with pytest.raises(FileNotFoundError, match=r"checkpoint .*nope\.pt does not exist"):
        load_checkpoint(path)


def test_garbage_file_is_not_a_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "junk.pt"
    path.write_bytes(b"definitely not a zip archive")
    with pytest.raises(ValueError, match=r"junk\.pt is not a plc-kd checkpoint"):
        load_checkpoint(path)


def test_foreign_torch_file_is_not_a_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "plain.pt"
    torch.save(_model().state_dict(), path)
    with pytest.raises(ValueError, match=r"plain\.pt is not a plc-kd checkpoint \(format None"):
        load_checkpoint(path)


def test_other_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "v2.pt"
    _save(path, _model())
    ckpt = torch.load(path, weights_only=True)
    ckpt["version"] = 2
    torch.save(ckpt, path)
    with pytest.raises(ValueError, match=r"has version 2 but this code reads version 1"):
        load_checkpoint(path)


def test_unserialisable_config_and_extra_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="config must be JSON-able"):
        save_checkpoint(
            tmp_path / "m.pt", _model(), model_name="t", num_classes=2, img_size=8,
            config={"path": Path("x")},
        )  # fmt: skip
    with pytest.raises(ValueError, match=r"extra\['obj'\] must hold plain data"):
        _save(tmp_path / "m.pt", _model(), extra={"obj": object()})
    assert not (tmp_path / "m.pt").exists()


def _fake_registry(monkeypatch: pytest.MonkeyPatch, calls: list) -> None:
    def build_model(name: str, num_classes: int, img_size: int) -> nn.Module:
        calls.append((name, num_classes, img_size))
        return Tiny(num_classes)

    module = types.ModuleType("pipeline.models.registry")
    module.build_model = build_model  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pipeline.models.registry", module)


def test_build_from_checkpoint_with_a_stub_registry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list = []
    _fake_registry(monkeypatch, calls)
    model = _model().eval()
    path = tmp_path / "m.pt"
    _save(path, model)
    built, meta = build_from_checkpoint(path)
    assert calls == [("tiny", 2, 16)]
    assert not built.training and "state_dict" not in meta and meta["config"] == CONFIG
    x = torch.rand(2, 3, 16, 16)
    assert torch.equal(built(x), model(x))


def test_build_from_checkpoint_refuses_mismatched_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_registry(monkeypatch, [])
    path = tmp_path / "m.pt"
    save_checkpoint(path, Tiny(3), model_name="tiny", num_classes=2, img_size=16, config={})
    with pytest.raises(ValueError, match=r"m\.pt does not fit model 'tiny'"):
        build_from_checkpoint(path)


@pytest.mark.parametrize("name", ["unet-tiny", "transunet-tiny"])
def test_build_from_checkpoint_with_the_real_registry(tmp_path: Path, name: str) -> None:
    from pipeline.models.registry import build_model

    torch.manual_seed(0)
    model = build_model(name, 2, 32).eval()
    path = tmp_path / "real.pt"
    digest = save_checkpoint(path, model, model_name=name, num_classes=2, img_size=32, config={})
    built, meta = build_from_checkpoint(path)
    assert meta["model_name"] == name and not built.training and type(built) is type(model)
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(built(x), model(x))
    again = tmp_path / "again.pt"
    assert (
        save_checkpoint(again, built, model_name=name, num_classes=2, img_size=32, config={})
        == digest
    )
