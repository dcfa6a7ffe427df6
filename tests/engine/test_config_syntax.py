"""Issue 22 (round 3), configs: an override with an unbalanced quote or bracket is refused (it was
taken as a value with the quote in it), and a YAML nested 20,000 deep is a ConfigError naming the
file (it was a RecursionError traceback)."""

from __future__ import annotations

import pytest

from mmix_applied.cli import main
from mmix_applied.config import ConfigError, load_config
from mmix_applied.engine.config.files import apply_overrides, read_yaml
from tests.helpers.bad_inputs import says


@pytest.mark.parametrize("override, shown", [
    ('data.path="/data/my scans', "found unexpected end of stream"),
    ("data.path='/data/my scans", "found unexpected end of stream"),
    ('data.path=/data/my scans"', "the value would keep the quote: '/data/my scans\"'"),
    ("mix.points=[input, layer1", "expected ',' or ']'"),
    ('model.options={drop_rate: "0.1}', "found unexpected end of stream"),
    ('mix.points=[input, "layer1]', "found unexpected end of stream"),
])
def test_an_override_with_an_unbalanced_quote_or_bracket_is_refused(override, shown):
    with pytest.raises(ConfigError) as err:
        apply_overrides({}, [override])
    key = override.split("=")[0]
    says(err, f"override {override!r} has an unbalanced quote or bracket ({shown}", f"{key}=\"a b\"",
         "wrap the whole override in single quotes")


@pytest.mark.parametrize("override, value", [
    ('data.path="/data/my scans"', "/data/my scans"), ("run.name=bob's-run", "bob's-run"),
    ("mix.points=[input, 'layer1']", ["input", "layer1"]), ("run.name=a: b", {"a": "b"}),
])
def test_balanced_quotes_and_plain_apostrophes_still_work(override, value):
    section, key = override.split("=")[0].split(".")
    assert apply_overrides({}, [override])[section][key] == value


def test_the_cli_refuses_it_in_one_line(capsys):
    assert main(["fit", 'data.path="/data/x']) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unbalanced quote" in err


@pytest.mark.parametrize("text", [
    "model:\n  options: {a: " + "[" * 20000 + "]" * 20000 + "}\n",
    "".join("  " * i + f"k{i}:\n" for i in range(3000)) + "  " * 3000 + "v: 1\n",
])
def test_a_yaml_nested_20000_deep_is_a_config_error_naming_the_file(tmp_path, text):
    path = tmp_path / "deep.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        read_yaml(path)
    says(err, f"config file '{path}' nests lists or mappings more than 64 levels deep", "line ")
    with pytest.raises(ConfigError):  # an override too
        load_config(None, ["model.options={a: " + "[" * 5000 + "]" * 5000 + "}"])
