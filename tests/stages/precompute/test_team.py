"""The team: SC features from T or, for a teacher without features, from TA_f; and
fit_temperatures: the record plc_cal stores, against pipeline.calibration on the same pixels."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pipeline.calibration import fit_temperature, temperature_nll
from stages.precompute import team as team_module
from stages.precompute.team import fit_temperatures


class _Split:
    def __init__(self, images: torch.Tensor, masks: torch.Tensor) -> None:
        self.images, self.masks = images, masks

    def batch(self, idx: torch.Tensor, device: torch.device):
        return self.images[idx], self.masks[idx]


class _Team:
    """Assistants whose logits are fixed functions of the image: overconfident TA_f."""

    device = torch.device("cpu")

    def assistant_logits(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        z = images[:, :2] * 10.0  # (B, 2, H, W)
        return {"fp": z, "bd": z / 10.0}


def _data():
    g = torch.Generator().manual_seed(0)
    images = torch.randn(6, 3, 8, 8, generator=g)
    masks = (images[:, 1] + 0.8 * torch.randn(6, 8, 8, generator=g) > images[:, 0]).long()
    return images, masks


def test_temperatures_and_nll_are_those_of_the_pixels() -> None:
    images, masks = _data()
    cal = fit_temperatures(_Team(), _Split(images, masks), [0, 2, 3, 5], 2, "test images")
    z = images[[0, 2, 3, 5], :2].permute(0, 2, 3, 1).reshape(-1, 2)
    y = masks[[0, 2, 3, 5]].reshape(-1)
    assert cal["fp"] == fit_temperature(z * 10.0, y) and cal["bd"] == fit_temperature(z, y)
    assert cal["fp"] > 1.0  # the overconfident one is softened
    assert cal["nll_before"]["fp"] == round(temperature_nll(z * 10.0, y, 1.0), 6)
    assert cal["images"] == 4 and cal["pixels"] == 4 * 64 and cal["source"] == "test images"
    assert cal["at_bound"] == [k for k in ("fp", "bd") if cal[k] in (0.05, 20.0)]


def test_a_large_fit_set_is_subsampled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(team_module, "MAX_FIT_PIXELS", 100)
    images, masks = _data()
    cal = fit_temperatures(_Team(), _Split(images, masks), list(range(6)), 4, "all")
    assert cal["pixels"] == 256 // 4 + 128 // 4  # stride ceil(384 / 100) = 4, per batch
    assert 0.05 <= cal["fp"] <= 20.0


def _team(tmp_path: Path, teacher_net: torch.nn.Module) -> tuple:
    """A Team.load from files: T exported as TorchScript (or a checkpoint), two unet-tiny."""
    from torchscript_nets import export

    from pipeline.checkpoint import save_checkpoint
    from pipeline.models.registry import build_model
    from stages.precompute.team import Team

    files, nets = {}, {}
    for i, role in enumerate(("fp", "bd")):
        torch.manual_seed(10 + i)
        nets[role] = build_model("unet-tiny", 2, 16).eval()
        files[role] = tmp_path / f"{role}.pt"
        save_checkpoint(files[role], nets[role], model_name="unet-tiny", num_classes=2,
                        img_size=16, config={})  # fmt: skip
    if hasattr(teacher_net, "forward_features"):  # a registry network: its checkpoint
        files["t"] = tmp_path / "t.pt"
        save_checkpoint(files["t"], teacher_net, model_name="unet-tiny", num_classes=2,
                        img_size=16, config={})  # fmt: skip
    else:
        files["t"] = export(teacher_net, tmp_path / "t.pt", "script")
    team = Team.load(files["t"], files["fp"], files["bd"], torch.device("cpu"))
    return team, nets


def test_a_teacher_without_features_gives_sc_the_false_pixel_assistants(tmp_path: Path) -> None:
    from torchscript_nets import TinySeg

    torch.manual_seed(0)
    t = TinySeg().eval()
    team, nets = _team(tmp_path, t)
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    out = team(images)
    with torch.no_grad():
        logits_f, feats_f = nets["fp"].forward_features(images)
        torch.testing.assert_close(out.p_t, t(images).softmax(1), rtol=0, atol=1e-6)
    assert out.feature_source == "assistant-false-pixel"
    assert torch.equal(out.feats, feats_f) and torch.equal(out.p_f, logits_f.softmax(1))


def test_teacher_features_are_used_when_the_teacher_has_them(tmp_path: Path) -> None:
    from torchscript_nets import TinySegWithFeatures

    from pipeline.models.registry import build_model

    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(0)
    scripted = TinySegWithFeatures().eval()
    out = _team(tmp_path / "a", scripted)[0](images)
    with torch.no_grad():
        half = scripted(images)[1]  # (2, 8, 8, 8); its resize: tests/pipeline/test_torchscript.py
        full = torch.nn.functional.interpolate(half, size=(16, 16), mode="bilinear")
    assert out.feature_source == "teacher" and out.feats.shape == (2, 8, 16, 16)
    torch.testing.assert_close(out.feats, full, rtol=0, atol=1e-6)
    registry = build_model("unet-tiny", 2, 16).eval()
    out = _team(tmp_path / "b", registry)[0](images)
    with torch.no_grad():
        want = registry.forward_features(images)[1]
    assert out.feature_source == "teacher" and torch.equal(out.feats, want)


@pytest.mark.parametrize("source", ["assistant-false-pixel", "assistant-boundary", "both"])
def test_an_imported_teacher_is_looked_up_and_sc_reads_the_chosen_features(
    tmp_path: Path, source: str
) -> None:
    """T's probabilities are the imported maps of the batch's ids; SC's features are TA_f's,
    TA_b's, or both L2-normalised and concatenated, whose cosine similarity is the mean of
    the two maps' cosines."""
    import numpy as np

    from pipeline.imported import ImportedTeacher, open_imported, write_imported
    from stages.precompute.team import Team

    _, nets = _team(tmp_path, build_registry_net())
    p = np.random.default_rng(0).random((3, 1, 16, 16)).astype(np.float32)
    probs = np.concatenate([p, 1 - p], axis=1)  # (3, 2, 16, 16)
    write_imported(tmp_path / "imp", probs, ["a", "b", "c"], {"classes": ["bg", "fg"],
                   "size": [16, 16]})  # fmt: skip
    teacher = ImportedTeacher(open_imported(tmp_path / "imp"))
    team = Team(teacher, nets["fp"], nets["bd"], torch.device("cpu"), sc_features=source)
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    out = team(images, ["c", "a"])
    torch.testing.assert_close(out.p_t, torch.from_numpy(probs[[2, 0]]))
    assert out.feature_source == source
    with torch.no_grad():
        f = nets["fp"].forward_features(images)[1]
        b = nets["bd"].forward_features(images)[1]
    if source != "both":
        assert torch.equal(out.feats, f if source == "assistant-false-pixel" else b)
        return
    cos = torch.nn.functional.cosine_similarity
    u, v = (0, 0, 3, 4), (1, 0, 9, 2)  # two pixels: (image, :, y, x)
    pick = lambda t, q: t[q[0], :, q[2], q[3]]  # noqa: E731 - (F,) feature of a pixel
    want = (cos(pick(f, u), pick(f, v), dim=0) + cos(pick(b, u), pick(b, v), dim=0)) / 2
    got = cos(pick(out.feats, u), pick(out.feats, v), dim=0)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="needs the ids"):
        team(images)


def build_registry_net() -> torch.nn.Module:
    from pipeline.models.registry import build_model

    torch.manual_seed(0)
    return build_model("unet-tiny", 2, 16).eval()
