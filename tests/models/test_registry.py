"""The model registry: listing, errors with close matches, and a tiny model of every family."""

import warnings

import pytest
import torch
from torch import nn

from mmix_applied.models import (
    CRNN,
    _registry,
    create_model,
    default_points,
    list_families,
    list_models,
    monai_points,
    register_family,
    resolve_model_name,
)


def test_families_and_listing():
    assert {"timm", "smp", "monai", "crnn"} <= set(list_families())
    assert list_models("crnn/*") == ["crnn/crnn"]
    assert "timm/test_resnet" in list_models("timm/test_*")
    assert all(n.startswith("timm/") for n in list_models("timm/resnet1*"))
    smp_names = list_models(family="smp")
    assert {"smp/unet", "smp/fpn", "smp/deeplabv3plus", "smp/segformer", "smp/dpt"} <= set(smp_names)
    assert set(list_models("*unet", family="monai")) == {"monai/basicunet", "monai/unet", "monai/dynunet", "monai/attentionunet"}
    # A pattern without "/" also matches the bare name, across families.
    assert {"smp/unet", "monai/unet"} <= set(list_models("unet"))


@pytest.mark.parametrize(
    ("family", "name", "expected"),
    [("timmm", "resnet18", "'timm'"), ("timm", "resnet_18", "resnet18"), ("smp", "unett", "'unet'"),
     ("monai", "basic_unet", "'basicunet'"), ("crnn", "crnnn", "'crnn'")],
)
def test_unknown_names_list_close_matches(family, name, expected):
    with pytest.raises(ValueError, match=expected):
        create_model(family, name, num_classes=2)


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_classes"):
        create_model("timm", "test_resnet", num_classes=0)
    with pytest.raises(TypeError, match="local weights file"):
        create_model("timm", "test_resnet", num_classes=2, pretrained=True)
    with pytest.raises(FileNotFoundError, match="no_such_weights.pth.*does not exist"):
        create_model("timm", "test_resnet", num_classes=2, pretrained="no_such_weights.pth")
    with pytest.raises(ValueError, match="encoder"):
        create_model("smp", "unet", num_classes=2, encoder_name="resnet_18")
    with pytest.raises(ValueError, match="download"):
        create_model("smp", "unet", num_classes=2, encoder_weights="imagenet")
    with pytest.raises(ValueError, match="features"):
        create_model("monai", "basicunet", num_classes=2, channels=(4, 8))


# ------------------------------------------------------------ the printed "family/name" form

@pytest.mark.parametrize(
    ("printed", "family", "name", "options"),
    [("timm/test_resnet", "timm", "test_resnet", {}),
     ("smp/unet", "smp", "unet", {"encoder_name": "tu-test_resnet", "encoder_depth": 3,
                                  "decoder_channels": (8, 8, 8)}),
     ("monai/basicunet", "monai", "basicunet", {"spatial_dims": 2, "features": (4, 4, 8, 8, 16, 4)}),
     ("crnn/crnn", "crnn", "crnn", {"hidden_size": 8, "cnn_widths": (4, 8, 8, 8)})],
)
def test_printed_form_builds_the_same_model(printed, family, name, options):
    assert printed in list_models(f"{family}/*")
    torch.manual_seed(3)
    apart = create_model(family, name, num_classes=3, in_channels=1, **options)
    torch.manual_seed(3)
    joined = create_model(printed, num_classes=3, in_channels=1, **options)
    assert type(joined) is type(apart)
    a, b = apart.state_dict(), joined.state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_every_listed_name_resolves_to_itself():
    for family in ("smp", "monai", "crnn"):
        for printed in list_models(family=family):
            assert resolve_model_name(printed) == tuple(printed.split("/"))
    assert resolve_model_name("timm/resnet18.a1_in1k") == ("timm", "resnet18.a1_in1k")
    # A bare name one family alone builds needs no family; timm's pretrained tags count.
    assert resolve_model_name("basicunet") == ("monai", "basicunet")
    assert resolve_model_name("resnet18.a1_in1k") == ("timm", "resnet18.a1_in1k")
    assert resolve_model_name("smp", "unet") == ("smp", "unet")


@pytest.mark.parametrize(
    ("args", "needles"),
    [(("unet",), ["ambiguous", "'monai/unet'", "'smp/unet'"]),
     (("resnet_18",), ["unknown model 'resnet_18'", "Did you mean", "'timm/resnet18'"]),
     (("smpp/unet",), ["unknown model family 'smpp'", "'smp'"]),
     (("smp/unett",), ["unknown", "'unet'"]),
     (("timm",), ["without a model name", "list_models('timm/*')"]),
     (("smp/",), ["no model name", "list_models('smp/*')"]),
     (("smp/unet", "unet"), ["family='smp/unet'", "create_model('smp', 'unet', ...)"])],
)
def test_printed_form_errors_say_what_to_pass(args, needles):
    with pytest.raises(ValueError) as info:
        create_model(*args, num_classes=2)
    for needle in needles:
        assert needle in str(info.value), (needle, str(info.value))


def test_model_name_must_be_a_string():
    with pytest.raises(TypeError, match="received 3"):
        create_model(3, num_classes=2)
    with pytest.raises(TypeError, match="received 18"):
        create_model("timm", 18, num_classes=2)


def test_register_family_decorator_and_overwrite_warning():
    calls = []

    @register_family("toy_test_family", names=lambda: ["mlp"])
    def build(name, *, num_classes, in_channels=3, hidden=4):
        calls.append((name, num_classes, in_channels, hidden))
        return nn.Sequential(nn.Linear(in_channels, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))

    try:
        model = create_model("toy_test_family", "mlp", num_classes=5, in_channels=2, hidden=7)
        assert calls == [("mlp", 5, 2, 7)]
        assert model(torch.zeros(3, 2)).shape == (3, 5)
        assert list_models(family="toy_test_family") == ["toy_test_family/mlp"]
        with pytest.warns(UserWarning, match="registered again"):
            register_family("toy_test_family", build, names=lambda: ["mlp"])
    finally:
        _registry._FAMILIES.pop("toy_test_family", None)


@pytest.mark.parametrize(
    ("name", "options", "first_points"),
    [("test_resnet", {}, ["input", "act1", "layer1"]),
     ("test_vit", {"img_size": 32}, ["input"]),
     ("test_efficientnet", {}, ["input", "blocks.0"]),
     ("test_nfnet", {"drop_path_rate": 0.1}, ["input", "stem.conv3", "stages.0"]),
     ("test_convnext", {}, ["input", "stages.0", "stages.1"])],
)
def test_timm_tiny(name, options, first_points):
    model = create_model("timm", name, num_classes=3, in_channels=1, drop_rate=0.1, **options)
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 3)
    assert model.get_classifier().out_features == 3
    points = default_points(model, which="all")
    assert points[: len(first_points)] == first_points and len(points) >= 4
    names = dict(model.named_modules())
    assert all(p in names for p in points[1:])
    # auto: the paper's {input, stage 1, stage 2} -- the first two stages at reduction >= 4 (a
    # stride-2 stem is not a stage); one-resolution token models keep every listed block
    stages = [e["module"] for e in model.feature_info if e["reduction"] >= 4]
    if len({e["reduction"] for e in model.feature_info}) > 1:
        assert default_points(model) == ["input", *stages[:2]]
    else:
        assert default_points(model) == points


def test_timm_options_pass_through():
    model = create_model("timm", "test_vit", num_classes=2, img_size=48, drop_path_rate=0.2)
    assert model.patch_embed.img_size == (48, 48)
    assert model.blocks[-1].drop_path1.drop_prob == pytest.approx(0.2)


@pytest.mark.parametrize("arch", ["unet", "fpn", "deeplabv3plus", "segformer"])
def test_smp_tiny(arch):
    options = {"decoder_channels": (16, 8, 8)} if arch == "unet" else {}
    model = create_model("smp", arch, num_classes=3, in_channels=1, encoder_name="tu-test_resnet",
                         encoder_depth=3, **options)
    model.eval()
    out = model(torch.randn(2, 1, 64, 64))
    assert out.shape[:2] == (2, 3)
    points = default_points(model)
    assert points[0] == "input" and len(points) == 4  # input + three encoder stages


def test_smp_decoder_channels_follow_depth():
    model = create_model("smp", "unet", num_classes=2, encoder_name="tu-test_resnet", encoder_depth=3)
    assert len(model.decoder.blocks) == 3


MONAI_TINY = {
    "basicunet": dict(features=(4, 4, 8, 8, 16, 4)),
    "unet": dict(channels=(4, 8, 16), num_res_units=1),
    "attentionunet": dict(channels=(4, 8, 16)),
    "dynunet": dict(channels=(4, 8, 16)),
}


#: Each tiny net's encoder levels (shallow to deep, the bottom of the U last), written out from
#: MONAI's module layout, and their output channels and sizes on a 32-pixel input.
MONAI_LEVELS = {
    "basicunet": (["conv_0", "down_1", "down_2", "down_3", "down_4"], [4, 4, 8, 8, 16], [32, 16, 8, 4, 2]),
    "unet": (["model.0", "model.1.submodule.0", "model.1.submodule.1.submodule"], [4, 8, 16], [16, 8, 8]),
    "attentionunet": (["model.0", "model.1.submodule.0", "model.1.submodule.1.submodule"], [4, 8, 16], [32, 16, 8]),
    "dynunet": (["input_block", "downsamples.0", "bottleneck"], [4, 8, 16], [32, 16, 8]),
}


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("name", sorted(MONAI_TINY))
def test_monai_tiny(name, spatial_dims):
    model = create_model("monai", name, num_classes=2, in_channels=1, spatial_dims=spatial_dims, **MONAI_TINY[name])
    x = torch.randn(2, 1, *(32,) * spatial_dims)
    points, channels, sizes = MONAI_LEVELS[name]
    assert default_points(model) == ["input", *points]
    assert monai_points(model) == points
    shapes = []
    hooks = [model.get_submodule(p).register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape[1:])))
             for p in points]
    assert model(x).shape == (2, 2, *(32,) * spatial_dims)
    for h in hooks:
        h.remove()
    assert shapes == [(c, *(s,) * spatial_dims) for c, s in zip(channels, sizes)]


def test_monai_points_follow_the_nesting():
    unet = create_model("monai", "unet", num_classes=2, in_channels=1, spatial_dims=2, channels=(4, 8, 16, 32))
    assert monai_points(unet) == [
        "model.0", "model.1.submodule.0", "model.1.submodule.1.submodule.0",
        "model.1.submodule.1.submodule.1.submodule",
    ]
    # The points are the blocks on the way down, deepest last: three strided levels, then the
    # bottom block (stride 1 in MONAI's UNet).
    x = torch.randn(1, 1, 32, 32)
    sizes = []
    hooks = [unet.get_submodule(p).register_forward_hook(lambda m, i, o: sizes.append(o.shape[-1]))
             for p in monai_points(unet)]
    unet(x)
    for h in hooks:
        h.remove()
    assert sizes == [16, 8, 4, 4]
    att = create_model("monai", "attentionunet", num_classes=2, spatial_dims=2, channels=(4, 8, 16, 32))
    assert monai_points(att) == [
        "model.0", "model.1.submodule.0", "model.1.submodule.1.submodule.0",
        "model.1.submodule.1.submodule.1.submodule",
    ]
    dyn = create_model("monai", "dynunet", num_classes=2, spatial_dims=2, channels=(4, 8, 16, 32))
    assert monai_points(dyn) == ["input_block", "downsamples.0", "downsamples.1", "bottleneck"]
    basic = create_model("monai", "basicunet", num_classes=2, spatial_dims=2, features=(4, 4, 8, 8, 16, 4))
    assert monai_points(basic) == ["conv_0", "down_1", "down_2", "down_3", "down_4"]
    assert monai_points(nn.Linear(2, 2)) is None


def test_swinunetr_points():
    pytest.importorskip("monai")
    model = create_model("monai", "swinunetr", num_classes=2, in_channels=1, spatial_dims=2, feature_size=12,
                         depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1))
    assert monai_points(model) == ["swinViT.patch_embed"] + [f"swinViT.layers{i}.0" for i in range(1, 5)]


@pytest.mark.slow
def test_swinunetr_runs_3d():
    pytest.importorskip("einops")
    model = create_model("monai", "swinunetr", num_classes=2, in_channels=1, spatial_dims=3, feature_size=12,
                         depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1))
    with torch.no_grad():  # 64: instance norm needs more than one voxel at the 1/32 level
        assert model(torch.randn(1, 1, 64, 64, 64)).shape == (1, 2, 64, 64, 64)


def test_crnn_from_registry():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = create_model("crnn", "crnn", num_classes=11, in_channels=1, hidden_size=8, cnn_widths=(4, 8, 8, 8))
    assert isinstance(model, CRNN)
    assert default_points(model) == ["input", "backbone.stage1", "backbone.stage2", "backbone.stage3",
                                     "backbone.stage4", "rnn"]
    assert model(torch.randn(2, 1, 32, 64)).shape == (16, 2, 11)
