"""Safe loading: nothing is fetched from the network and nothing unsafe is loaded.

The fit with sockets blocked is ``tests/engine/test_runner.py::test_fit_runs_with_network_blocked``; here
every model family builds offline, and the sources hold no unsafe loader or download call.
"""


from tests.helpers import ROOT
from tests.helpers.bad_inputs import no_network  # noqa: F401  (autouse fixture: sockets raise)


def test_every_model_family_builds_offline():
    from mmix_applied.models import create_model

    for family, name, extra in (("timm", "test_resnet", {}), ("smp", "unet", {"encoder_name": "resnet18"}),
                                ("monai", "basicunet", {"spatial_dims": 2}), ("crnn", "crnn", {})):
        model = create_model(family, name, num_classes=3, in_channels=1, **extra)
        assert sum(p.numel() for p in model.parameters()) > 0


def test_library_source_has_no_unsafe_loader_or_download():
    """Every ``torch.load`` passes ``weights_only=True``; no pickle/unsafe YAML loads, hub downloads or
    ``pretrained=True`` anywhere in the library or the recipes."""
    import ast

    banned_calls = {"unsafe_load", "full_load", "load_state_dict_from_url", "hf_hub_download", "urlopen",
                    "urlretrieve", "download_url_to_file"}
    problems = []
    files = sorted((ROOT / "mmix_applied").rglob("*.py")) + sorted((ROOT / "tasks").rglob("*.py"))
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            where, kwargs = f"{path.relative_to(ROOT)}:{node.lineno}", {k.arg: k.value for k in node.keywords}
            flag = kwargs.get("pretrained")
            if isinstance(flag, ast.Constant) and flag.value is True:
                problems.append(f"{where} pretrained=True")
            if not isinstance(node.func, ast.Attribute):
                continue
            owner = node.func.value.id if isinstance(node.func.value, ast.Name) else ""
            name = node.func.attr
            if owner == "torch" and name == "load":
                flag = kwargs.get("weights_only")
                if not (isinstance(flag, ast.Constant) and flag.value is True):
                    problems.append(f"{where} torch.load without weights_only=True")
            if (owner, name) in {("yaml", "load"), ("pickle", "load"), ("pickle", "loads")} or name in banned_calls:
                problems.append(f"{where} {owner}.{name}")
    assert len(files) > 30 and not problems, problems
