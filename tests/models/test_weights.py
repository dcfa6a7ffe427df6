"""Local weights (safetensors and .pth), the key report, head reset, freezing and param groups."""

import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from mmix_applied.models import (
    create_model,
    load_weights,
    param_groups,
    read_state_dict,
    reset_head,
    set_backbone_trainable,
)


def _timm(num_classes=3, in_channels=3, **kw):
    return create_model("timm", "test_resnet", num_classes=num_classes, in_channels=in_channels, **kw)


def _same(a, b, skip=()):
    sa, sb = a.state_dict(), b.state_dict()
    return all(torch.equal(sa[k], sb[k]) for k in sa if not any(k.startswith(s) for s in skip))


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_roundtrip(tmp_path, suffix):
    torch.manual_seed(1)
    source = _timm()
    path = tmp_path / f"w{suffix}"
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    save_file(state, str(path)) if suffix == ".safetensors" else torch.save(state, path)
    torch.manual_seed(2)
    loaded = create_model("timm", "test_resnet", num_classes=3, pretrained=str(path))
    assert _same(source, loaded)
    report = load_weights(_timm(), path)
    assert report.clean and not report.reset and len(report.loaded) == len(state)


def test_lightning_checkpoint_prefix_is_found(tmp_path):
    source = _timm()
    ckpt = {"epoch": 3, "state_dict": {f"model.{k}": v for k, v in source.state_dict().items()}}
    torch.save(ckpt, tmp_path / "last.ckpt")
    target = _timm()
    report = load_weights(target, tmp_path / "last.ckpt")
    assert report.strip_prefix == "model." and report.add_prefix == "" and report.clean
    assert _same(source, target)


def test_head_reset_on_new_class_count(tmp_path):
    source = _timm(num_classes=10)
    save_file(source.state_dict(), str(tmp_path / "in10.safetensors"))
    target = _timm(num_classes=3)
    fresh_head = target.fc.weight.detach().clone()
    report = load_weights(target, tmp_path / "in10.safetensors")
    assert sorted(report.reset) == ["fc.bias", "fc.weight"]
    assert report.clean  # the head is neither missing nor unexpected: it is reset
    assert torch.equal(target.fc.weight, fresh_head) and target.fc.out_features == 3
    assert _same(source, target, skip=("fc.",))
    with pytest.raises(ValueError, match="fc.weight"):
        load_weights(_timm(num_classes=3), tmp_path / "in10.safetensors", reset_head=False)
    # reset_head=True keeps the fresh head even when the shapes agree.
    same_size = _timm(num_classes=10)
    kept = same_size.fc.weight.detach().clone()
    report = load_weights(same_size, tmp_path / "in10.safetensors", reset_head=True)
    assert sorted(report.reset) == ["fc.bias", "fc.weight"] and torch.equal(same_size.fc.weight, kept)
    # A file without the head: the head is fresh, reported as reset, not as missing.
    save_file({k: v for k, v in source.state_dict().items() if not k.startswith("fc.")},
              str(tmp_path / "headless.safetensors"))
    report = load_weights(_timm(num_classes=3), tmp_path / "headless.safetensors")
    assert sorted(report.reset) == ["fc.bias", "fc.weight"] and report.clean
    report = load_weights(_timm(num_classes=3), tmp_path / "headless.safetensors", reset_head=False)
    assert sorted(report.missing) == ["fc.bias", "fc.weight"] and not report.reset


def test_missing_and_unexpected_keys_are_reported(tmp_path):
    state = dict(_timm().state_dict())
    dropped = "layer1.0.conv1.weight"
    del state[dropped]
    state["extra.weight"] = torch.zeros(2)
    save_file(state, str(tmp_path / "partial.safetensors"))
    report = load_weights(_timm(), tmp_path / "partial.safetensors")
    assert report.missing == [dropped] and report.unexpected == ["extra.weight"] and not report.clean
    text = str(report)
    assert dropped in text and "extra.weight" in text
    with pytest.warns(UserWarning, match=dropped):
        create_model("timm", "test_resnet", num_classes=3, pretrained=tmp_path / "partial.safetensors")
    with pytest.raises(ValueError, match="strict loading failed"):
        load_weights(_timm(), tmp_path / "partial.safetensors", strict=True)


def test_backbone_shape_mismatch_is_an_error(tmp_path):
    save_file(create_model("timm", "test_resnet", num_classes=3, drop_rate=0.0).state_dict(),
              str(tmp_path / "r.safetensors"))
    other = create_model("timm", "test_efficientnet", num_classes=3)
    with pytest.raises(ValueError, match=r"shape mismatch.*bn1\.bias: file \(32,\) vs model \(24,\)"):
        load_weights(other, tmp_path / "r.safetensors")


def test_rgb_stem_adapts_to_one_channel(tmp_path):
    source = _timm(in_channels=3)
    save_file(source.state_dict(), str(tmp_path / "rgb.safetensors"))
    grey = _timm(in_channels=1)
    report = load_weights(grey, tmp_path / "rgb.safetensors")
    assert report.adapted == ["conv1.0.weight"]
    expected = source.conv1[0].weight.sum(dim=1, keepdim=True)  # timm's rule for one channel
    assert torch.allclose(grey.conv1[0].weight, expected)


def test_encoder_only_checkpoint_into_smp(tmp_path):
    classifier = _timm(num_classes=5)
    save_file(classifier.state_dict(), str(tmp_path / "cls.safetensors"))
    seg = create_model("smp", "unet", num_classes=2, encoder_name="tu-test_resnet", encoder_depth=3,
                       decoder_channels=(8, 8, 8))
    report = load_weights(seg, tmp_path / "cls.safetensors")
    assert report.add_prefix == "encoder.model."
    # The classifier and the stages an encoder of depth 3 does not build are left over.
    assert {"fc.weight", "fc.bias"} <= set(report.unexpected)
    assert all(k.split(".")[0] in ("fc", "layer3", "layer4") for k in report.unexpected)
    assert all(k.startswith(("decoder.", "segmentation_head.")) for k in report.missing + report.reset)
    assert torch.equal(seg.encoder.model.layer1[0].conv1.weight, classifier.layer1[0].conv1.weight)


def test_pickled_code_is_refused(tmp_path, capsys):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"state_dict": Evil()}, tmp_path / "evil.pth")
    capsys.readouterr()
    with pytest.raises(ValueError, match="weights_only=True") as info:
        read_state_dict(tmp_path / "evil.pth")
    assert isinstance(info.value.__cause__, pickle.UnpicklingError)
    assert "pwned" not in capsys.readouterr().out


def test_crnn_new_charset_resets_head_only(tmp_path):
    kw = dict(in_channels=1, hidden_size=8, cnn_widths=(4, 8, 8, 8))
    source = create_model("crnn", "crnn", num_classes=11, **kw)
    torch.save(source.state_dict(), tmp_path / "crnn.pth")
    target = create_model("crnn", "crnn", num_classes=5, pretrained=tmp_path / "crnn.pth", **kw)
    assert _same(source, target, skip=("head.",))
    assert target.head.out_features == 5


def test_timm_classifier_into_crnn_backbone(tmp_path):
    classifier = _timm(num_classes=5, in_channels=3)
    save_file(classifier.state_dict(), str(tmp_path / "cls.safetensors"))
    crnn = create_model("crnn", "crnn", num_classes=4, in_channels=1, backbone="test_resnet", hidden_size=8)
    report = load_weights(crnn, tmp_path / "cls.safetensors")
    assert report.add_prefix == "backbone." and report.adapted == ["backbone.conv1.0.weight"]
    assert torch.equal(crnn.backbone.layer2[0].conv1.weight, classifier.layer2[0].conv1.weight)
    assert all(k.startswith(("rnn.", "head.")) for k in report.missing + report.reset)


def test_reset_head():
    model = _timm(num_classes=3)
    reset_head(model, 7)
    assert model.get_classifier().out_features == 7
    before = model.fc.weight.detach().clone()
    assert reset_head(model) == ["fc"] and not torch.equal(before, model.fc.weight)
    monai = create_model("monai", "basicunet", num_classes=2, spatial_dims=2, features=(4, 4, 8, 8, 16, 4))
    with pytest.raises(ValueError, match="no known head"):
        reset_head(monai)


# ---------------------------------------------------------------------------------- fine-tuning

def test_freeze_backbone_keeps_head_trainable():
    model = _timm()
    n_backbone = set_backbone_trainable(model, False)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable == ["fc.weight", "fc.bias"] and n_backbone == len(list(model.parameters())) - 2
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    assert model.conv1[0].weight.grad is None and model.fc.weight.grad is not None
    set_backbone_trainable(model, True)
    assert all(p.requires_grad for p in model.parameters())


def test_freeze_smp_encoder_and_crnn_backbone():
    seg = create_model("smp", "fpn", num_classes=2, encoder_name="tu-test_resnet", encoder_depth=3)
    set_backbone_trainable(seg, False)
    assert all(not p.requires_grad for p in seg.encoder.parameters())
    assert all(p.requires_grad for p in seg.decoder.parameters())
    crnn = create_model("crnn", "crnn", num_classes=5, in_channels=1, hidden_size=8, cnn_widths=(4, 8, 8, 8))
    set_backbone_trainable(crnn, False)
    assert {n.split(".")[0] for n, p in crnn.named_parameters() if p.requires_grad} == {"rnn", "head"}
    monai = create_model("monai", "unet", num_classes=2, spatial_dims=2, channels=(4, 8))
    with pytest.raises(ValueError, match="backbone"):
        set_backbone_trainable(monai, False)


def test_param_groups_rates_and_decay():
    model = _timm()
    groups = param_groups(model, lr=1e-3, backbone_lr_mult=0.1, weight_decay=0.05)
    seen = [id(p) for g in groups for p in g["params"]]
    assert sorted(seen) == sorted(id(p) for p in model.parameters())  # every parameter exactly once
    names = {id(p): n for n, p in model.named_parameters()}
    for g in groups:
        for p in g["params"]:
            name = names[id(p)]
            assert g["lr"] == pytest.approx(1e-3 if name.startswith("fc.") else 1e-4)
            assert g["weight_decay"] == (0.0 if p.ndim <= 1 else 0.05)
    torch.optim.AdamW(groups).step()  # the groups are accepted as they are


def test_param_groups_layer_decay():
    model = _timm()
    groups = param_groups(model, lr=1.0, backbone_lr_mult=0.5, layer_decay=0.5)
    names = {id(p): n for n, p in model.named_parameters()}
    lr_of = {names[id(p)]: g["lr"] for g in groups for p in g["params"]}
    assert lr_of["fc.weight"] == 1.0
    # Stem, then layer1..layer4: each stage one layer-decay step above the previous.
    stage_lrs = [lr_of["conv1.0.weight"]] + [lr_of[f"layer{i}.0.conv1.weight"] for i in range(1, 5)]
    assert stage_lrs[-1] == pytest.approx(0.5 * 0.5)
    for lower, higher in zip(stage_lrs, stage_lrs[1:]):
        assert higher == pytest.approx(lower / 0.5)
    with pytest.raises(ValueError, match="group_matcher"):
        param_groups(create_model("crnn", "crnn", num_classes=5, in_channels=1, hidden_size=8,
                                  cnn_widths=(4, 8, 8, 8)), lr=1.0, layer_decay=0.5)


# ------------------------------------------------------------- hub weights from the local cache

HUB_REPO = "timm/test_resnet.r160_in1k"
SNAPSHOT = "0123456789abcdef0123456789abcdef01234567"


def _hub_cache(root, *, filename="model.safetensors", num_classes=1000, seed=5, blobs=False):
    """A Hugging Face cache laid out as the hub writes it, holding a tiny timm model's weights
    (with ``blobs``, the snapshot's file is a relative symlink into ``blobs/``, as on Linux)."""
    import json

    torch.manual_seed(seed)
    source = create_model("timm", "test_resnet", num_classes=num_classes)
    repo = root / ("models--" + HUB_REPO.replace("/", "--"))
    snap = repo / "snapshots" / SNAPSHOT
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(SNAPSHOT)  # the hub writes the hash without a newline
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    where = snap / filename
    if blobs:
        (repo / "blobs").mkdir()
        where = repo / "blobs" / "4f1c2d"
    save_file(state, str(where)) if filename.endswith(".safetensors") else torch.save(state, where)
    if blobs:
        (snap / filename).symlink_to(Path("..") / ".." / "blobs" / "4f1c2d")
    (snap / "config.json").write_text(json.dumps({"architecture": "test_resnet", "num_classes": num_classes}))
    return source


@pytest.fixture
def hf_home(tmp_path, monkeypatch):
    """HF_HOME points at an empty folder under tmp_path; the hub cache is its hub/ folder."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path / "hf" / "hub"


@pytest.fixture
def network_attempts(monkeypatch):
    """Every socket connect is recorded, then refused."""
    import socket

    attempts = []

    def refuse(sock, address, *args, **kwargs):
        attempts.append(address)
        raise OSError(f"network access attempted: {address}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    return attempts


@pytest.mark.parametrize("spec", ["hf-hub:" + HUB_REPO, "test_resnet.r160_in1k", "test_resnet",
                                  f"hf-hub:{HUB_REPO}@{SNAPSHOT}"])
def test_hub_weights_load_from_the_local_cache(hf_home, spec):
    source = _hub_cache(hf_home)
    torch.manual_seed(6)
    model = create_model("timm", "test_resnet", num_classes=1000, pretrained=spec)
    assert _same(source, model)


def test_hub_weights_through_blob_symlinks(hf_home):
    source = _hub_cache(hf_home, blobs=True)
    assert (hf_home / f"models--timm--test_resnet.r160_in1k/snapshots/{SNAPSHOT}/model.safetensors").is_symlink()
    assert _same(source, create_model("timm/test_resnet", num_classes=1000, pretrained="hf-hub:" + HUB_REPO))


def test_hub_files_the_cache_records_as_absent(hf_home):
    _hub_cache(hf_home)
    (hf_home / f"models--timm--test_resnet.r160_in1k/snapshots/{SNAPSHOT}/model.safetensors").unlink()
    absent = hf_home / "models--timm--test_resnet.r160_in1k" / ".no_exist" / SNAPSHOT
    absent.mkdir(parents=True)
    for name in ("model.safetensors", "pytorch_model.bin"):
        (absent / name).touch()
    with pytest.raises(FileNotFoundError, match="the cache records that the repository has no model.safetensors"):
        create_model("timm", "test_resnet", num_classes=3, pretrained="hf-hub:" + HUB_REPO)


def test_hub_weights_reset_the_head_for_new_classes(hf_home):
    source = _hub_cache(hf_home)
    model = create_model("timm/test_resnet", num_classes=3, in_channels=1, pretrained="hf-hub:" + HUB_REPO)
    assert model.fc.out_features == 3
    assert torch.equal(model.conv1[0].weight, source.conv1[0].weight.sum(dim=1, keepdim=True))
    assert _same(source, model, skip=("fc.", "conv1.0."))


def test_hub_cache_env_is_read_at_call_time(tmp_path, hf_home, monkeypatch):
    from mmix_applied.models.hub import hf_hub_cache, resolve_weights

    assert hf_hub_cache() == hf_home
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "elsewhere"))  # wins over HF_HOME, as in huggingface_hub
    _hub_cache(tmp_path / "elsewhere")
    found = resolve_weights("hf-hub:" + HUB_REPO)
    snapshot = tmp_path / "elsewhere" / "models--timm--test_resnet.r160_in1k" / "snapshots" / SNAPSHOT
    assert found.path == snapshot / "model.safetensors"
    assert found.repo_id == HUB_REPO and found.architecture == "test_resnet"


def test_hub_pytorch_model_bin_is_read_when_there_is_no_safetensors(hf_home):
    source = _hub_cache(hf_home, filename="pytorch_model.bin")
    assert _same(source, create_model("timm", "test_resnet", num_classes=1000, pretrained="hf-hub:" + HUB_REPO))


@pytest.mark.parametrize("spec", ["hf-hub:" + HUB_REPO, "test_resnet.r160_in1k", f"hf-hub:{HUB_REPO}@main2"])
def test_weights_missing_from_the_cache_say_how_to_fetch_them(hf_home, network_attempts, spec):
    if spec.endswith("@main2"):
        _hub_cache(hf_home)  # the repository is cached, but not at that revision
    with pytest.raises(FileNotFoundError) as info:
        create_model("timm", "test_resnet", num_classes=3, pretrained=spec)
    text = str(info.value)
    for needle in (repr(spec), f"hf download {HUB_REPO} model.safetensors", "huggingface-cli download",
                   "HF_HOME", str(hf_home), "nothing is downloaded"):
        assert needle in text, (needle, text)
    assert network_attempts == []


def test_nothing_tries_the_network(hf_home, network_attempts):
    import socket

    source = _hub_cache(hf_home)
    for spec in ("hf-hub:" + HUB_REPO, "test_resnet.r160_in1k"):
        assert _same(source, create_model("timm", "test_resnet", num_classes=1000, pretrained=spec))
    with pytest.raises(FileNotFoundError):
        create_model("timm", "test_resnet", num_classes=3, pretrained="resnet18.a1_in1k")
    assert network_attempts == []
    with pytest.raises(OSError, match="network access attempted"):  # the control: a connect is caught
        socket.socket().connect(("127.0.0.1", 9))
    assert network_attempts == [("127.0.0.1", 9)]


@pytest.mark.parametrize("args", [("hf-hub:" + HUB_REPO,), ("timm", "hf-hub:" + HUB_REPO)])
def test_a_hub_name_as_the_model_says_to_pass_it_as_pretrained(hf_home, args):
    with pytest.raises(ValueError) as info:
        create_model(*args, num_classes=3)
    fix = f"create_model('timm/test_resnet', num_classes=..., pretrained='hf-hub:{HUB_REPO}')"
    assert fix in str(info.value)


def test_bad_hub_names_are_errors(hf_home):
    with pytest.raises(ValueError, match="'hf-hub:<owner>/<repo>"):
        create_model("timm", "test_resnet", num_classes=3, pretrained="hf-hub:timm")
    with pytest.raises(FileNotFoundError, match="no pretrained weights tagged 'zz'.*resnet18.a1_in1k"):
        create_model("timm", "test_resnet", num_classes=3, pretrained="resnet18.zz")


def test_weights_of_another_architecture_warn(hf_home):
    _hub_cache(hf_home)
    with pytest.warns(UserWarning, match="'test_resnet', loaded into 'resnet10t'"):
        with pytest.raises(ValueError, match="shape mismatch"):
            create_model("timm", "resnet10t", num_classes=3, pretrained="hf-hub:" + HUB_REPO)


# ------------------------------------------------------------- non-finite weights

def test_nan_and_inf_weights_are_refused_with_the_file_and_tensors(tmp_path):
    state = {k: v.clone() for k, v in _timm().state_dict().items()}
    state["layer1.0.conv1.weight"][0, 0, 0, 0] = float("nan")
    state["layer2.0.bn1.running_var"][:2] = float("inf")
    path = tmp_path / "diverged.safetensors"
    save_file(state, str(path))
    target = _timm()
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(ValueError) as info:
        load_weights(target, path)
    text = str(info.value)
    for needle in (str(path), "2 tensor(s)", "layer1.0.conv1.weight (1 NaN, 0 Inf",
                   "layer2.0.bn1.running_var (0 NaN, 2 Inf", "Nothing was loaded", "export them again"):
        assert needle in text, (needle, text)
    assert all(torch.equal(before[k], v) for k, v in target.state_dict().items())  # the model is untouched
    with pytest.raises(ValueError, match="non-finite"):
        create_model("timm", "test_resnet", num_classes=3, pretrained=path)
    # A NaN only in the head that is reset for a new class count is never loaded: no error.
    state = {k: v.clone() for k, v in _timm(num_classes=10).state_dict().items()}
    state["fc.weight"][0, 0] = float("nan")
    torch.save(state, tmp_path / "head.pth")
    assert sorted(load_weights(_timm(num_classes=3), tmp_path / "head.pth").reset) == ["fc.bias", "fc.weight"]


def test_non_finite_values_the_architecture_itself_holds_are_loaded(tmp_path):
    class Masked(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = torch.nn.Linear(2, 2)
            self.register_buffer("mask", torch.tensor([0.0, float("-inf")]))

    source = Masked()
    torch.save(source.state_dict(), tmp_path / "masked.pth")
    target = Masked()
    assert load_weights(target, tmp_path / "masked.pth").clean
    assert torch.equal(target.proj.weight, source.proj.weight)
    target.mask.zero_()  # now the fresh model holds finite values there: the file's -inf is refused
    with pytest.raises(ValueError, match=r"mask \(0 NaN, 1 Inf of 2 values\)"):
        load_weights(target, tmp_path / "masked.pth")
