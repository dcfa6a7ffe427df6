"""Every code block of docs/deploy.md runs, on a tiny run of each recipe, in a fresh interpreter; the blocks
that load the exported folder in the peers' own tools run without mmix_applied imported, and agree with
``load_run`` on the same input."""

from __future__ import annotations

import re
import textwrap

import numpy as np
import pytest
import torch

from mmix_applied import load_run
from mmix_applied.deploy import export_run
from mmix_applied.engine import runner
from tests.helpers import ROOT
from tests.helpers.deploy_runs import (
    chdir,
    classification_config,
    fresh_python,
    handwriting_config,
    segmentation_2d_config,
    segmentation_3d_config,
    write_class_folders,
    write_line_images,
    write_segmentation_folders,
    write_volumes,
)

pytestmark = pytest.mark.slow

DOC = ROOT / "docs" / "deploy.md"
BLOCK = re.compile(r"<!-- snippet: ([\w-]+) -->\n```python\n(.*?)```", re.S)
KIND = {"classification": "cls", "segmentation-2d": "seg2d", "segmentation-3d": "seg3d", "handwriting": "hw"}
EPILOGUE = textwrap.dedent("""
    import json as _json, sys as _sys
    import numpy as _np
    _out = {}
    for _name in ("probs", "probs_onnx", "probs_ts", "probs_folder", "masks", "masks_onnx", "logits", "logits_onnx",
                  "texts", "label"):
        if _name in globals():
            _value = globals()[_name]
            _value = _value.masks[0] if hasattr(_value, "masks") else _value
            _value = _value[0] if isinstance(_value, list) and _value and hasattr(_value[0], "detach") else _value
            _value = _value.detach().numpy() if hasattr(_value, "detach") else _value
            _out[_name] = _np.asarray(_value).tolist() if not isinstance(_value, (str, list)) else _value
    print(_json.dumps({"mmix": "mmix_applied" in _sys.modules,
                       "lightning": any(m.split(".")[0] == "lightning" for m in _sys.modules), "vars": _out}))
""")


def blocks() -> list[tuple[str, str]]:
    """``(tag, code)``: the tagged python blocks; a ``-peers`` tag's blocks run together, in order."""
    found: dict[str, str] = {}
    order = []
    for tag, code in BLOCK.findall(DOC.read_text(encoding="utf-8")):
        key = tag if tag.endswith("-peers") else f"{tag}#{len(order)}"
        if key not in found:
            order.append(key)
            found[key] = ""
        found[key] += code + "\n"
    return [(key.split("#")[0], found[key]) for key in order]


def test_every_python_block_is_tagged():
    assert len(BLOCK.findall(DOC.read_text(encoding="utf-8"))) == DOC.read_text(encoding="utf-8").count("```python")
    assert {tag for tag, _ in blocks()} == {"classification", "classification-peers", "segmentation-2d",
                                          "segmentation-2d-peers", "segmentation-3d-peers", "handwriting",
                                          "handwriting-peers", "python"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Each recipe's tiny run, its export and one input file."""
    base = tmp_path_factory.mktemp("docs")
    out = {}
    inputs = write_class_folders(base / "cls")
    with chdir(base / "cls"):
        out["cls"] = (runner.fit(classification_config(base / "cls" / "runs" / "r")), inputs[0])
    images, masks = write_segmentation_folders(base / "seg2d" / "data")
    out["seg2d"] = (runner.fit(segmentation_2d_config(base / "seg2d" / "runs" / "r", images, masks)),
                    sorted(images.glob("*.png"))[0])
    datalist = write_volumes(base / "seg3d" / "data")
    out["seg3d"] = (runner.fit(segmentation_3d_config(base / "seg3d" / "runs" / "r", datalist)),
                    base / "seg3d" / "data" / "vol.nii.gz")
    out["hw"] = (runner.fit(handwriting_config(base / "hw" / "runs" / "r")), write_line_images(base / "hw" / "lines")[0])
    return {kind: {"run": run, "input": file, "export": export_run(run, base / kind / "exported")}
            for kind, (run, file) in out.items()}


@pytest.mark.parametrize("index", range(len(blocks())))
def test_the_snippet_runs_and_agrees_with_load_run(runs, index, tmp_path):
    tag, code = blocks()[index]
    kind = KIND.get(tag.removesuffix("-peers"))
    if kind is not None:
        found = runs[kind]
        code = (code.replace("runs/my-run", str(found["run"])).replace("exported/my-run", str(found["export"]))
                .replace("image.png", str(found["input"])))
    result = fresh_python(code + EPILOGUE, cwd=tmp_path)
    got = {k: np.asarray(v) if not isinstance(v, str) and k != "texts" else v for k, v in result["vars"].items()}
    assert result["lightning"] is False
    if tag.endswith("-peers") or tag == "python":
        assert result["mmix"] is False or tag == "python"
    if tag == "python":
        assert (tmp_path / "model.onnx").is_file() and (tmp_path / "model.torchscript.pt").is_file()
        return
    run = load_run(runs[kind]["run"])
    if kind == "cls":
        expected = run.predict([str(runs[kind]["input"])]).numpy()
        for name in ("probs", "probs_onnx", "probs_ts", "probs_folder"):
            if name in got:
                assert np.abs(got[name].reshape(expected.shape) - expected).max() < 1e-4, name
        assert got.get("label", run.classes[0]) in run.classes
        assert any(name in got for name in ("probs", "probs_folder"))
    elif kind == "seg2d":
        expected = run.predict([str(runs[kind]["input"])]).masks[0].numpy()
        assert "masks" in got
        for name in [n for n in ("masks", "masks_onnx") if n in got]:
            assert np.array_equal(got[name].reshape(expected.shape), expected), name
    elif kind == "seg3d":
        assert np.abs(got["logits"] - got["logits_onnx"]).max() < 1e-4
        volume = torch.rand(1, 1, 32, 28, 12)  # the shapes the snippet used
        assert got["masks"].shape == (1, *volume.shape[2:])
    else:
        assert got["texts"] == run.predict([str(runs[kind]["input"])])
