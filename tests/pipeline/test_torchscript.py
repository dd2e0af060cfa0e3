"""TorchScript teachers: recognising the file, the adapter's outputs, the contract's messages."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torchscript_nets import (
    ReturnsList,
    TinySeg,
    TinySegWithFeatures,
    WantsFourChannels,
    WithNaN,
    export,
)

from pipeline.checkpoint import build_from_checkpoint, save_checkpoint
from pipeline.models.registry import build_model
from pipeline.torchscript import (
    ScriptedTeacher,
    build_teacher,
    check_contract,
    contract_problems,
    is_torchscript,
    load_teacher,
    load_torchscript,
    teacher_meta,
)


def _images(b: int = 2, size: int = 32) -> torch.Tensor:
    return torch.rand(b, 3, size, size, generator=torch.Generator().manual_seed(0))


class _Features(torch.nn.Module):
    """What a user of a registry-like network traces: its ``forward_features``."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.net.forward_features(x)


@pytest.mark.parametrize("how", ["script", "trace"])
def test_adapter_logits_equal_the_network(tmp_path: Path, how: str) -> None:
    torch.manual_seed(0)
    net = TinySeg().eval()
    path = export(net, tmp_path / "t.pt", how, _images())
    teacher = load_torchscript(path)
    x = _images(3)  # another batch size than the trace's
    with torch.no_grad():
        expected = net(x)
        logits, feats = teacher.forward_features(x)
        # the same CPU kernels on the same input: equal to float32 round-off (1e-6 absolute)
        torch.testing.assert_close(logits, expected, rtol=0, atol=1e-6)
        torch.testing.assert_close(teacher(x), expected, rtol=0, atol=1e-6)
    assert feats is None  # logits only: no SC features


@pytest.mark.parametrize("how", ["script", "trace"])
def test_adapter_resizes_half_size_features_bilinearly(tmp_path: Path, how: str) -> None:
    torch.manual_seed(1)
    net = TinySegWithFeatures().eval()
    teacher = load_torchscript(export(net, tmp_path / "t.pt", how, _images()))
    x = _images(2, 8)
    with torch.no_grad():
        logits, feats = teacher.forward_features(x)
        small = net(x)[1].double().numpy()  # (2, 8, 4, 4)
        torch.testing.assert_close(logits, net(x)[0], rtol=0, atol=1e-6)
    assert feats is not None and feats.shape == (2, 8, 8, 8)
    # oracle: bilinear with half-pixel centres, src = (dst + 0.5) / 2 - 0.5, clamped at the edges
    src = np.clip((np.arange(8) + 0.5) / 2 - 0.5, 0, 3)
    lo = np.floor(src).astype(int)
    hi = np.minimum(lo + 1, 3)
    t = src - lo
    rows = small[:, :, lo] * (1 - t)[:, None] + small[:, :, hi] * t[:, None]  # (2, 8, 8, 4)
    expected = rows[..., lo] * (1 - t) + rows[..., hi] * t  # (2, 8, 8, 8)
    np.testing.assert_allclose(feats.double().numpy(), expected, rtol=0, atol=1e-6)


def test_a_traced_registry_network_keeps_its_logits_and_features(tmp_path: Path) -> None:
    torch.manual_seed(2)
    net = build_model("unet-tiny", 2, 32).eval()
    with pytest.warns(torch.jit.TracerWarning):  # the registry's shape checks, frozen by trace
        path = export(_Features(net), tmp_path / "unet.pt", "trace", _images())
    teacher, meta = build_teacher(path)
    assert meta == {"teacher_kind": "torchscript", "model_name": None, "config": {}}
    x = _images(2)
    with torch.no_grad():
        want_logits, want_feats = net.forward_features(x)
        logits, feats = teacher.forward_features(x)
    torch.testing.assert_close(logits, want_logits, rtol=0, atol=1e-6)
    torch.testing.assert_close(feats, want_feats, rtol=0, atol=1e-6)  # full size: not resized


def test_is_torchscript_tells_the_kinds_apart(tmp_path: Path) -> None:
    script = export(TinySeg(), tmp_path / "s.pt", "script")
    ckpt = tmp_path / "c.pt"
    save_checkpoint(ckpt, TinySeg(), model_name="x", num_classes=2, img_size=32, config={})
    state = tmp_path / "state.pt"
    torch.save(TinySeg().state_dict(), state)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a model")
    assert is_torchscript(script)
    assert not any(is_torchscript(p) for p in (ckpt, state, junk))


def test_a_checkpoint_teacher_is_built_as_before(tmp_path: Path) -> None:
    torch.manual_seed(3)
    path = tmp_path / "teacher.pt"
    save_checkpoint(path, build_model("unet-tiny", 2, 32), model_name="unet-tiny",
                    num_classes=2, img_size=32, config={"k": 1})  # fmt: skip
    model, meta = build_teacher(path)
    before, before_meta = build_from_checkpoint(path)
    assert meta == before_meta | {"teacher_kind": "checkpoint"}
    assert type(model) is type(before) and not model.training
    for (k, a), (_, b) in zip(model.state_dict().items(), before.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    assert teacher_meta(path) == meta


def test_a_file_of_neither_kind_gets_one_message(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a model")
    state = tmp_path / "state.pt"
    torch.save(TinySeg().state_dict(), state)
    for path in (junk, state):
        for load in (build_teacher, teacher_meta):
            with pytest.raises(ValueError) as err:
                load(path)
            text = str(err.value)
            assert text.startswith(f"teacher {path} is neither a plc-kd checkpoint nor a "
                                   "TorchScript file (")  # fmt: skip
            assert "docs/commands.md: TorchScript teachers" in text and "\n" not in text


def test_a_damaged_torchscript_file_gets_one_message(tmp_path: Path) -> None:
    import zipfile

    bad = tmp_path / "bad.pt"
    with zipfile.ZipFile(bad, "w") as archive:  # looks like TorchScript, is not loadable
        archive.writestr("bad/constants.pkl", b"garbage")
    with pytest.raises(ValueError, match=rf"^TorchScript teacher {bad} could not be loaded \("):
        build_teacher(bad)


# contract_problems on literal outputs: batch (B, H, W) = (2, 4, 4), C = 2
def _shape(found: str) -> str:
    return (
        f"logits have shape {found}, expected (B, C, H, W) = (2, 2, 4, 4) (C the dataset "
        "store's classes, H × W its image size)"
    )


def _z(*shape: int) -> torch.Tensor:
    return torch.zeros(shape)


@pytest.mark.parametrize(
    ("out", "problems"),
    [
        (_z(2, 2, 4, 4), []),
        ((_z(2, 2, 4, 4), _z(2, 5, 1, 1)), []),
        (_z(2, 3, 4, 4), [_shape("(2, 3, 4, 4)")]),
        (_z(2, 2, 2, 2), [_shape("(2, 2, 2, 2)")]),
        (_z(2, 4, 4), [_shape("(2, 4, 4)")]),
        (torch.zeros(2, 2, 4, 4, dtype=torch.long),
         ["logits have dtype torch.int64, expected a floating-point dtype"]),
        ([_z(2, 2, 4, 4), _z(2, 5, 4, 4)],
         ["it returned a list of 2 (Tensor, Tensor), not a Tensor or a tuple (logits, features)"]),
        ((_z(2, 2, 4, 4), _z(2, 5, 4, 4), _z(1)),
         ["it returned a tuple of 3 (Tensor, Tensor, Tensor), not a Tensor or a tuple "
          "(logits, features)"]),
        ({"out": _z(2, 2, 4, 4)}, ["it returned a dict, not a Tensor or a tuple (logits, features)"]),
        ((_z(2, 2, 4, 4), _z(2, 5, 4)),
         ["features have shape (2, 5, 4), expected (B, F, H', W') with B = 2"]),
    ],
)  # fmt: skip
def test_contract_problems_name_expected_and_found(out: object, problems: list[str]) -> None:
    assert contract_problems(out, (2, 4, 4), 2) == problems


def test_every_problem_is_listed_together() -> None:
    logits = _z(2, 3, 4, 4)
    logits[0, 0, 0, 0] = float("nan")
    logits[1, 0, 0, 0] = float("inf")
    feats = _z(2, 5, 2, 2)
    feats[0, 0, 0, 0] = float("nan")
    assert contract_problems((logits, feats), (2, 4, 4), 2) == [
        _shape("(2, 3, 4, 4)"),
        "logits hold 2 NaN or infinite value(s)",
        "features hold 1 NaN or infinite value(s)",
    ]


@pytest.mark.parametrize(
    ("net", "found"),
    [
        (TinySeg(num_classes=3), "logits have shape (2, 3, 32, 32), expected (B, C, H, W) = "
                                 "(2, 2, 32, 32)"),
        (WithNaN(), "logits hold 2 NaN or infinite value(s)"),
        (ReturnsList(), "it returned a list of 2 (Tensor, Tensor), not a Tensor or a tuple"),
        (WantsFourChannels(), "raised RuntimeError: expected RGBA input with 4 channels;"),
    ],
)  # fmt: skip
def test_check_contract_refuses_with_one_message(
    tmp_path: Path, net: torch.nn.Module, found: str
) -> None:
    teacher = load_torchscript(export(net, tmp_path / "bad.pt", "script"))
    with pytest.raises(ValueError) as err:
        check_contract(teacher, _images(), 2)
    text = str(err.value)
    assert text.startswith(f"TorchScript teacher {tmp_path / 'bad.pt'}, run on 2 train image(s) "
                           "(2, 3, 32, 32)")  # fmt: skip
    assert found in text and "Traceback" not in text and "\n" not in text
    assert text.endswith("(docs/commands.md: TorchScript teachers).")


def test_check_contract_says_whether_there_are_features(tmp_path: Path) -> None:
    plain = load_torchscript(export(TinySeg(), tmp_path / "a.pt", "script"))
    with_feats = load_torchscript(export(TinySegWithFeatures(), tmp_path / "b.pt", "script"))
    assert check_contract(plain, _images(), 2) is False
    assert check_contract(with_feats, _images(), 2) is True
    assert isinstance(plain, ScriptedTeacher) and not plain.training


def test_load_teacher_checks_a_script_and_trusts_a_checkpoint(tmp_path: Path) -> None:
    ckpt = tmp_path / "c.pt"
    save_checkpoint(ckpt, build_model("unet-tiny", 3, 32), model_name="unet-tiny",
                    num_classes=3, img_size=32, config={})  # fmt: skip
    model, meta = load_teacher(ckpt, _images(), 2)  # a registry net is not run: its C is its own
    assert meta["teacher_kind"] == "checkpoint" and meta["features"] is True
    assert not model.training
    script = export(TinySegWithFeatures(), tmp_path / "s.pt", "script")
    model, meta = load_teacher(script, _images(), 2)
    assert isinstance(model, ScriptedTeacher) and meta["features"] is True
    assert meta["teacher_kind"] == "torchscript"
    with pytest.raises(ValueError, match=r"logits have shape \(2, 2, 32, 32\), expected"):
        load_teacher(script, _images(), 3)
