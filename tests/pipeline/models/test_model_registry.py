"""Model registry: names, builders, input-size checks, descriptions."""

from __future__ import annotations

import pytest
import torch

from pipeline.models import (
    MODELS,
    ModelSpec,
    build_model,
    check_input_size,
    count_parameters,
    describe_models,
)

NAMES = [
    "transunet",
    "transunet-tiny",
    "unet",
    "unet-small",
    "unet-tiny",
    "unet-micro",
    "unet-nano",
    "unet-micro-signed",
    "unet-tiny-signed",
    "wide-unet",
]
TINY = [
    "transunet-tiny",
    "unet-tiny",
    "unet-micro",
    "unet-nano",
    "unet-small",
    "unet-micro-signed",
    "unet-tiny-signed",
]


def test_registry_is_the_literal_set_of_names() -> None:
    assert list(MODELS) == NAMES
    for name, spec in MODELS.items():
        assert spec.name == name
        assert spec.role in ("teacher", "student", "any")
        assert spec.size_multiple == 16
        assert spec.description


def test_miss_lists_every_choice() -> None:
    with pytest.raises(ValueError, match=r"unknown model 'resnet'; choose one of: ") as info:
        build_model("resnet")
    assert ", ".join(NAMES) in str(info.value)


@pytest.mark.parametrize("name", TINY)
@pytest.mark.parametrize("num_classes", [2, 3])
def test_tiny_models_follow_the_network_contract(name: str, num_classes: int) -> None:
    model = build_model(name, num_classes=num_classes, img_size=64).eval()
    assert model.num_classes == num_classes
    assert model.model_name == name
    with torch.no_grad():
        logits, features = model.forward_features(torch.randn(2, 3, 64, 64))
    assert logits.shape == (2, num_classes, 64, 64)
    assert features.shape == (2, model.feature_channels, 64, 64)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("transunet", 105_276_066),
        ("unet", 31_037_698),
        ("unet-small", 1_942_594),
        ("unet-tiny", 486_562),
        ("unet-micro", 122_098),
        ("unet-nano", 30_754),
        ("unet-micro-signed", 122_098),  # the signed head moves no parameter
        ("unet-tiny-signed", 486_562),
        ("wide-unet", 69_823_874),
    ],
)
def test_parameter_counts(name: str, expected: int) -> None:
    assert count_parameters(name) == expected


def test_check_input_size_message_for_a_name() -> None:
    with pytest.raises(ValueError) as info:
        check_input_size("transunet", 100, 100)
    assert str(info.value) == (
        "model 'transunet' takes inputs whose sides are multiples of 16 (e.g. 224, 256); "
        "got 100×100; pad or resize to 112×112."
    )


def test_check_input_size_for_a_model_and_edge_sizes() -> None:
    model = build_model("unet-tiny")
    check_input_size(model, 32, 48)
    check_input_size("transunet", 256, 224)  # not its img_size: position embeddings interpolate
    with pytest.raises(ValueError, match=r"model 'unet-tiny' .* got 0×32; pad or resize to 16×32"):
        check_input_size(model, 0, 32)
    with pytest.raises(ValueError, match=r"has no 'size_multiple'; pass a registry name"):
        check_input_size(torch.nn.Linear(2, 2), 32, 32)
    with pytest.raises(ValueError, match=r"unknown model 'vit'"):
        check_input_size("vit", 32, 32)


def test_transunet_takes_other_multiples_than_its_img_size() -> None:
    model = build_model("transunet-tiny", img_size=64).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 96)).shape == (1, 2, 32, 96)


def test_build_refuses_a_bad_img_size() -> None:
    with pytest.raises(
        ValueError, match=r"img_size: model 'transunet' takes inputs .* got 100×100"
    ):
        build_model("transunet", img_size=100)


def test_describe_models() -> None:
    rows = describe_models()
    assert [row["name"] for row in rows] == NAMES
    by_name = {row["name"]: row for row in rows}
    assert by_name["unet"]["parameters"] == 31_037_698
    assert by_name["transunet"]["role"] == "teacher"
    assert by_name["unet-small"]["input_sizes"] == "H, W multiples of 16"
    assert set(rows[0]) == {
        "name", "role", "parameters", "size_multiple", "input_sizes", "description"
    }  # fmt: skip


def test_model_spec_validates_role() -> None:
    with pytest.raises(ValueError, match=r"ModelSpec.role must be 'teacher', 'student' or 'any'"):
        ModelSpec("x", "mentor", lambda **_: torch.nn.Identity(), "x", 16)  # type: ignore[arg-type]
