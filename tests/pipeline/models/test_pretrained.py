"""--init loading: the official TransUNet npz mapped key by key, the position-embedding resize,
one error listing every problem, and the state_dict / plc-kd checkpoint path."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from official_npz import official_arrays, official_shapes, write_official_npz

from pipeline.checkpoint import save_checkpoint
from pipeline.models.pretrained import InitError, load_init
from pipeline.models.registry import build_model
from pipeline.models.transunet import TINY_TRANSUNET, TransUNet, TransUNetConfig
from pipeline.models.transunet_npz import UNUSED_NPZ_KEYS, official_key_map

POS = "Transformer/posembed_input/pos_embedding"
MHA = "MultiHeadDotProductAttention_1"
# two units in stages 1 and 3: covers unit2 (no projection) and 1-based unit names
CFG = TransUNetConfig(num_classes=2, img_size=64, **{**TINY_TRANSUNET, "block_units": (2, 1, 2)})


def _model(seed: int = 0, cfg: TransUNetConfig = CFG) -> TransUNet:
    torch.manual_seed(seed)
    return TransUNet(cfg, model_name="transunet-tiny")


def _npz(tmp_path: Path, arrays: dict[str, np.ndarray], name: str = "R50+ViT-B_16.npz") -> Path:
    return write_official_npz(tmp_path / name, arrays)


def _official_to_torch(key: str, a: np.ndarray) -> torch.Tensor:
    """The official conversions, restated from TransUNet's load_from (np2th, view, t)."""
    t = torch.from_numpy(a)
    if not key.endswith("kernel"):
        return t.reshape(-1)  # scales and biases (GroupNorm ones may be (1, 1, 1, C))
    if t.ndim == 4:
        return t.permute(3, 2, 0, 1)  # HWIO -> OIHW
    if f"{MHA}/out" in key:
        return t.reshape(-1, t.shape[-1]).T  # (heads, hd, D) -> (D, D)
    if MHA in key:
        return t.reshape(t.shape[0], -1).T  # (D, heads, hd) -> (D, D)
    return t.T  # dense (in, out) -> (out, in)


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and torch.equal(a, b)


@pytest.mark.parametrize("gn_4d", [False, True])
def test_every_official_key_lands_in_exactly_one_weight(tmp_path: Path, gn_4d: bool) -> None:
    arrays = official_arrays(CFG, seed=1, grid=4, gn_4d=gn_4d)
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = load_init(model, _npz(tmp_path, arrays))
    state = model.state_dict()
    matched = set()
    for key, a in arrays.items():
        if key in UNUSED_NPZ_KEYS:
            continue
        want = torch.from_numpy(a[:, 1:]) if key == POS else _official_to_torch(key, a)
        hits = [k for k, v in state.items() if _same(v, want)]
        assert len(hits) == 1, f"{key} landed in {hits}"
        matched.add(hits[0])
    encoder = {k for k in state if k.startswith(("encoder.", "transformer."))}
    assert matched == encoder  # every encoder/ViT weight came from the file, one key each
    assert set(report.loaded) == encoder and report.format == "transunet-npz"
    for k in report.kept:  # decoder, conv_more and head keep their initialisation
        assert k.startswith(("conv_more.", "decoder.", "head.")) and _same(state[k], before[k])


def test_named_weights_equal_the_official_arrays_transposed(tmp_path: Path) -> None:
    arrays = official_arrays(CFG, seed=2, grid=4)
    model = _model()
    load_init(model, _npz(tmp_path, arrays))
    d = CFG.hidden
    enc, vit = model.encoder, model.transformer
    root = torch.from_numpy(arrays["conv_root/kernel"])  # (7, 7, 3, w)
    assert torch.equal(enc.stem[0].weight, root.permute(3, 2, 0, 1))
    assert torch.equal(enc.stem[1].weight, torch.from_numpy(arrays["gn_root/scale"]))
    proj = torch.from_numpy(arrays["block3/unit1/conv_proj/kernel"])
    assert torch.equal(enc.stage3[0].downsample[0].weight, proj.permute(3, 2, 0, 1))
    conv2 = torch.from_numpy(arrays["block1/unit2/conv2/kernel"])
    assert torch.equal(enc.stage1[1].conv2.weight, conv2.permute(3, 2, 0, 1))
    assert enc.stage1[1].downsample is None
    q = torch.from_numpy(arrays[f"Transformer/encoderblock_1/{MHA}/query/kernel"])
    assert torch.equal(vit.blocks[1].attention.query.weight, q.reshape(d, d).T)
    q_bias = torch.from_numpy(arrays[f"Transformer/encoderblock_1/{MHA}/query/bias"])
    assert torch.equal(vit.blocks[1].attention.query.bias, q_bias.reshape(d))
    out = torch.from_numpy(arrays[f"Transformer/encoderblock_0/{MHA}/out/kernel"])
    assert torch.equal(vit.blocks[0].attention.out.weight, out.reshape(d, d).T)
    fc2 = torch.from_numpy(arrays["Transformer/encoderblock_0/MlpBlock_3/Dense_1/kernel"])
    assert torch.equal(vit.blocks[0].mlp[3].weight, fc2.T)
    ln = torch.from_numpy(arrays["Transformer/encoderblock_0/LayerNorm_2/scale"])
    assert torch.equal(vit.blocks[0].ffn_norm.weight, ln)
    emb = torch.from_numpy(arrays["embedding/kernel"])
    assert torch.equal(vit.embeddings.proj.weight, emb.permute(3, 2, 0, 1))
    assert torch.equal(vit.norm.bias, torch.from_numpy(arrays["Transformer/encoder_norm/bias"]))
    assert model(torch.rand(1, 3, 64, 64)).shape == (1, 2, 64, 64)


@pytest.mark.parametrize(("grid", "cls_token"), [(4, True), (4, False), (6, True), (3, True)])
def test_position_embedding_drops_class_token_and_resizes(
    tmp_path: Path, grid: int, cls_token: bool
) -> None:
    arrays = official_arrays(CFG, seed=3, grid=grid, cls_token=cls_token)
    model = _model()
    load_init(model, _npz(tmp_path, arrays))
    pos = torch.from_numpy(arrays[POS])[:, int(cls_token) :]  # (1, g·g, D)
    d, new = CFG.hidden, CFG.img_size // 16
    # oracle: order-1 zoom with corners aligned (scipy's default) = bilinear, align_corners=True
    img = pos.reshape(1, grid, grid, d).permute(0, 3, 1, 2)
    want = F.interpolate(img, size=(new, new), mode="bilinear", align_corners=True)
    want = want.permute(0, 2, 3, 1).reshape(1, new * new, d)
    torch.testing.assert_close(model.transformer.embeddings.position.data, want)


def test_reference_size_position_embedding_resizes_from_14_to_16(tmp_path: Path) -> None:
    """The real file's (1, 197, 768) embedding fits a 256² TransUNet (grid 16) after the zoom."""
    from pipeline.models.transunet_npz import _position

    a = np.random.default_rng(0).standard_normal((1, 197, 768)).astype(np.float32)
    out = _position(a, (1, 256, 768))
    assert out.shape == (1, 256, 768)
    np.testing.assert_array_equal(out[0, 0], a[0, 1])  # corners stay put (aligned corners)
    np.testing.assert_allclose(out[0, -1], a[0, -1], rtol=1e-6)


def test_reference_model_maps_every_key_of_the_real_file_layout() -> None:
    """R50-ViT-B/16 at 224² (built on the meta device): the official file's keys and shapes
    (1 + 14·14 position tokens) fit the model one to one, with no array allocated."""
    with torch.device("meta"):
        model = TransUNet(TransUNetConfig())
    shapes = official_shapes(TransUNetConfig(), grid=14)
    state = model.state_dict()
    mapping = official_key_map(model)
    assert len({theirs for theirs, _ in mapping.values()}) == len(mapping)
    assert {theirs for theirs, _ in mapping.values()} | set(UNUSED_NPZ_KEYS) == set(shapes)
    for ours, (theirs, convert) in mapping.items():
        zeros = np.broadcast_to(np.float32(0), shapes[theirs])
        assert convert(zeros, tuple(state[ours].shape)).shape == state[ours].shape, theirs


def test_mismatched_npz_lists_every_problem_and_leaves_the_model_alone(tmp_path: Path) -> None:
    arrays = official_arrays(CFG, seed=4, grid=4)
    del arrays["block2/unit1/gn_proj/bias"]
    del arrays["Transformer/encoderblock_1/MlpBlock_3/Dense_0/kernel"]
    arrays["Transformer/encoderblock_7/LayerNorm_0/scale"] = np.zeros(CFG.hidden, np.float32)
    arrays["conv_root/kernel"] = np.zeros((7, 7, 3, 2 * CFG.width), np.float32)
    arrays[POS] = np.zeros((1, 15, CFG.hidden), np.float32)  # neither g·g nor 1 + g·g
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    path = _npz(tmp_path, arrays)
    with pytest.raises(InitError) as err:
        load_init(model, path)
    msg = str(err.value)
    assert str(path) in msg and "5 problem(s)" in msg
    assert "missing: block2/unit1/gn_proj/bias (for encoder.stage2.0.downsample.1.bias" in msg
    assert "missing: Transformer/encoderblock_1/MlpBlock_3/Dense_0/kernel" in msg
    assert "unexpected: Transformer/encoderblock_7/LayerNorm_0/scale" in msg
    assert "mis-shaped: conv_root/kernel is (7, 7, 3, 16), but encoder.stem.0.weight" in msg
    assert "needs (7, 7, 3, 8)" in msg
    assert f"mis-shaped: {POS} is (1, 15, 32), but transformer.embeddings.position" in msg
    assert "(for encoder.stage2.0.downsample.1.bias, shape (64,))" in msg
    assert all(_same(v, before[k]) for k, v in model.state_dict().items())


def test_npz_refused_for_a_unet(tmp_path: Path) -> None:
    path = _npz(tmp_path, official_arrays(CFG, grid=4))
    with pytest.raises(InitError, match="initialises only the transunet models, not 'unet-tiny'"):
        load_init(build_model("unet-tiny", 2, 64), path)


def test_state_dict_and_plc_checkpoint_load_exactly(tmp_path: Path) -> None:
    source = _model(seed=5)
    sd_path = tmp_path / "weights.pt"
    torch.save(source.state_dict(), sd_path)
    ckpt = tmp_path / "teacher.pt"
    save_checkpoint(
        ckpt, source, model_name="transunet-tiny", num_classes=2, img_size=64, config={}
    )
    for path, fmt in ((sd_path, "state-dict"), (ckpt, "plc-checkpoint")):
        target = _model(seed=6)
        report = load_init(target, path)
        assert report.format == fmt and report.kept == ()
        for k, v in source.state_dict().items():
            assert torch.equal(target.state_dict()[k], v), k


def test_state_dict_mismatch_lists_missing_unexpected_and_misshaped(tmp_path: Path) -> None:
    three = _model(cfg=dataclasses.replace(CFG, num_classes=3))
    state = three.state_dict()
    del state["transformer.norm.bias"]
    state["extra.weight"] = torch.zeros(2)
    path = tmp_path / "three.pt"
    torch.save(state, path)
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(InitError) as err:
        load_init(model, path)
    msg = str(err.value)
    assert "(a state-dict) does not fit model 'transunet-tiny' (2 classes): 4 problem(s)" in msg
    assert "missing: transformer.norm.bias (32,)" in msg
    assert "unexpected: extra.weight (2,)" in msg
    assert "mis-shaped: head.weight is (3, 16, 3, 3) in the file, (2, 16, 3, 3) in the model" in msg
    assert "mis-shaped: head.bias is (3,) in the file, (2,) in the model" in msg
    assert all(_same(v, before[k]) for k, v in model.state_dict().items())


def test_unreadable_and_absent_files(tmp_path: Path) -> None:
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"not weights")
    with pytest.raises(InitError, match=r"junk.bin is neither an .npz nor a torch state_dict"):
        load_init(_model(), junk)
    listed = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], listed)
    with pytest.raises(InitError, match="holds a list that is not a state_dict"):
        load_init(_model(), listed)
    with pytest.raises(FileNotFoundError, match=r"init file .*nope\.npz does not exist"):
        load_init(_model(), tmp_path / "nope.npz")


def test_keys_nested_under_opt_target_are_read(tmp_path: Path) -> None:
    arrays = official_arrays(CFG, seed=7, grid=4)
    model = _model()
    load_init(model, _npz(tmp_path, {f"opt/target/{k}": v for k, v in arrays.items()}))
    root = torch.from_numpy(arrays["conv_root/kernel"]).permute(3, 2, 0, 1)
    assert torch.equal(model.encoder.stem[0].weight, root)


def _layer_norm(x: np.ndarray, arrays: dict[str, np.ndarray], name: str) -> np.ndarray:
    mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + 1e-6) * arrays[f"{name}/scale"] + arrays[f"{name}/bias"]


def _vit_reference(arrays: dict[str, np.ndarray], feats: np.ndarray, cfg: TransUNetConfig):
    """The ViT encoder in numpy float64, written in the official file's own layouts (Flax
    DenseGeneral einsums over (D, heads, hd) kernels), with TransUNet's exact-erf GELU."""
    from scipy.special import erf

    c, h, w = feats.shape
    x = feats.reshape(c, h * w).T @ arrays["embedding/kernel"][0, 0] + arrays["embedding/bias"]
    x = x + arrays[POS][0, 1:]  # (N, D): the file's grid equals the model's here
    hd = cfg.hidden // cfg.heads
    for i in range(cfg.layers):
        blk = f"Transformer/encoderblock_{i}"
        y = _layer_norm(x, arrays, f"{blk}/LayerNorm_0")
        q, k, v = (
            np.einsum("nd,dhk->nhk", y, arrays[f"{blk}/{MHA}/{n}/kernel"])
            + arrays[f"{blk}/{MHA}/{n}/bias"]
            for n in ("query", "key", "value")
        )
        logits = np.einsum("nhk,mhk->hnm", q, k) / np.sqrt(hd)
        att = np.exp(logits - logits.max(-1, keepdims=True))
        att /= att.sum(-1, keepdims=True)
        o = np.einsum("hnm,mhk->nhk", att, v)
        x = x + np.einsum("nhk,hkd->nd", o, arrays[f"{blk}/{MHA}/out/kernel"])
        x = x + arrays[f"{blk}/{MHA}/out/bias"]
        y = _layer_norm(x, arrays, f"{blk}/LayerNorm_2")
        y = (
            y @ arrays[f"{blk}/MlpBlock_3/Dense_0/kernel"]
            + arrays[f"{blk}/MlpBlock_3/Dense_0/bias"]
        )
        y = 0.5 * y * (1 + erf(y / np.sqrt(2)))
        x = (
            x
            + y @ arrays[f"{blk}/MlpBlock_3/Dense_1/kernel"]
            + arrays[f"{blk}/MlpBlock_3/Dense_1/bias"]
        )
    x = _layer_norm(x, arrays, "Transformer/encoder_norm")  # (N, D)
    return x.T.reshape(-1, h, w)


def test_loaded_vit_computes_what_the_official_layouts_mean(tmp_path: Path) -> None:
    """Semantics, not just placement: the model's ViT with the loaded weights equals a numpy
    ViT that uses the file's arrays in their own layouts (catches a wrong head split)."""
    arrays = {k: 0.2 * v for k, v in official_arrays(CFG, seed=8, grid=4).items()}
    model = _model().eval()
    load_init(model, _npz(tmp_path, arrays))
    feats = np.random.default_rng(9).standard_normal((16 * CFG.width, 4, 4)).astype(np.float32)
    with torch.no_grad():
        got = model.transformer(torch.from_numpy(feats)[None])[0].double().numpy()
    want = _vit_reference({k: v.astype(np.float64) for k, v in arrays.items()}, feats, CFG)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def _std_conv_hwio(x: np.ndarray, kernel: np.ndarray, stride: int) -> np.ndarray:
    """Weight-standardised conv (official StdConv2d, eps 1e-5) of x (C, H, W) with an HWIO
    kernel, zero padding k // 2, in numpy: y[o, i, j] = Σ x[c, s·i + u, s·j + v] · k[u, v, c, o]."""
    kh = kernel.shape[0]
    mean, var = kernel.mean((0, 1, 2)), kernel.var((0, 1, 2))
    kernel = (kernel - mean) / np.sqrt(var + 1e-5)
    pad = np.pad(x, ((0, 0), (kh // 2, kh // 2), (kh // 2, kh // 2)))
    win = np.lib.stride_tricks.sliding_window_view(pad, (kh, kh), axis=(1, 2))  # C, H', W', u, v
    return np.einsum("cijuv,uvco->oij", win[:, ::stride, ::stride], kernel)


def _group_norm(x: np.ndarray, groups: int, scale: np.ndarray, bias: np.ndarray, eps: float):
    c, h, w = x.shape
    g = x.reshape(groups, -1)
    g = (g - g.mean(1, keepdims=True)) / np.sqrt(g.var(1, keepdims=True) + eps)
    return g.reshape(c, h, w) * scale.reshape(-1, 1, 1) + bias.reshape(-1, 1, 1)


def test_loaded_resnet_computes_what_the_official_layouts_mean(tmp_path: Path) -> None:
    """The stem and the first bottleneck (with its projection) with the loaded weights equal a
    numpy ResNet v2 that convolves with the file's HWIO kernels directly."""
    arrays = official_arrays(CFG, seed=10, grid=4)
    model = _model().eval()
    load_init(model, _npz(tmp_path, arrays))
    a = {k: v.astype(np.float64) for k, v in arrays.items()}
    x = np.random.default_rng(11).standard_normal((3, 16, 16))
    groups = CFG.gn_groups

    def gn(y: np.ndarray, name: str, g: int = groups, eps: float = 1e-6) -> np.ndarray:
        return _group_norm(y, g, a[f"{name}/scale"], a[f"{name}/bias"], eps)

    stem = np.maximum(gn(_std_conv_hwio(x, a["conv_root/kernel"], 2), "gn_root"), 0)
    u = "block1/unit1"
    y = np.maximum(gn(_std_conv_hwio(stem, a[f"{u}/conv1/kernel"], 1), f"{u}/gn1"), 0)
    y = np.maximum(gn(_std_conv_hwio(y, a[f"{u}/conv2/kernel"], 1), f"{u}/gn2"), 0)
    y = gn(_std_conv_hwio(y, a[f"{u}/conv3/kernel"], 1), f"{u}/gn3")
    cout = y.shape[0]  # the projection's GroupNorm is per channel, eps 1e-5 (official)
    res = gn(_std_conv_hwio(stem, a[f"{u}/conv_proj/kernel"], 1), f"{u}/gn_proj", cout, 1e-5)
    want_unit = np.maximum(res + y, 0)
    with torch.no_grad():
        got_stem = model.encoder.stem(torch.from_numpy(x).float()[None])
        got_unit = model.encoder.stage1[0](got_stem)
    np.testing.assert_allclose(got_stem[0].double().numpy(), stem, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(got_unit[0].double().numpy(), want_unit, rtol=1e-4, atol=1e-4)
