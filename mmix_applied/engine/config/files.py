"""Config files and overrides: read YAML safely, apply dotted ``key=value`` overrides, save atomically.

A config source is a YAML path or the name of a recipe config shipped with the package
(``classification``: ``configs/classification.yaml`` of the repository, installed as
``mmix_applied.configs``); a path that exists wins over a name (:func:`resolve_config`).
"""

from __future__ import annotations

import copy
import importlib.resources
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from mmix_applied.engine.config.schema import Config, ConfigError, ConfigTypeError, config_to_dict
from mmix_applied.engine.config.validate import parse_config
from mmix_applied.utils.atomic import atomic_write_text
from mmix_applied.utils.hints import did_you_mean

__all__ = ["MAX_DEPTH", "NoAliasLoader", "apply_overrides", "dump_config", "load_config", "read_yaml",
           "recipe_configs", "resolve_config", "save_config"]

#: The package the recipe configs ship in (``configs/`` of the repository; see pyproject.toml).
CONFIGS_PACKAGE = "mmix_applied.configs"

#: How deeply a config's sections, lists and mappings may nest (a run config uses 4 or 5 levels).
MAX_DEPTH = 64


class NoAliasLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing aliases (``*name``) and nesting deeper than :data:`MAX_DEPTH`.

    A few nested aliases expand exponentially (a 547-byte "billion laughs" file in
    ``model.options`` exhausted memory when the config was copied); a run config never needs them.
    PyYAML composes nested nodes recursively, so 20,000 nested brackets ended in a ``RecursionError``.
    """

    source = "YAML text"
    _depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            line = event.start_mark.line + 1 if event.start_mark is not None else "?"
            raise ConfigError(
                f"{self.source} uses the YAML alias *{event.anchor} (line {line}); aliases are "
                "refused in configs (nested ones can expand to gigabytes): write the values out instead")
        if self._depth >= MAX_DEPTH:
            mark = self.peek_event().start_mark
            where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "?"
            raise ConfigError(
                f"{self.source} nests lists or mappings more than {MAX_DEPTH} levels deep ({where}); a config is a "
                "few levels deep (section, key, value): check the brackets and indentation there")
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _safe_load(text: str, source: str) -> Any:
    loader = NoAliasLoader(text)
    loader.source = source
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def apply_overrides(raw: Mapping[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Return a copy of ``raw`` with dotted ``key=value`` overrides applied (values parsed as YAML).

    Example: ``apply_overrides(raw, ["train.max_epochs=3", "mix.points=[input,layer1]"])``.

    Raises:
        ConfigError: For an override without ``=`` or one that descends into a non-mapping.
    """
    out = copy.deepcopy(dict(raw))
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not of the form key=value (e.g. train.max_epochs=3)")
        try:
            value = _safe_load(text, f"override {item!r}") if text.strip() else None
        except yaml.YAMLError as err:
            if any(c in text for c in "\"'[]{}"):  # meant as quoted or structured YAML, but not closed
                raise ConfigError(_unbalanced(item, key, text, str(getattr(err, "problem", None) or err))) from None
            value = text  # e.g. `run.name=a: b`: taken as the text it is
        stray = _stray_quote(value)
        if stray is not None:
            raise ConfigError(_unbalanced(item, key, text, f"the value would keep the quote: {stray!r}"))
        node = out
        parts = key.split(".")
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {'.'.join(parts[: depth + 1])!r} is not a section")
            node = child
        node[parts[-1]] = value
    return out


def _stray_quote(value: Any) -> str | None:
    """A string in ``value`` that starts or ends with a quote YAML left in it (an unbalanced quote), or None."""
    if isinstance(value, str):
        return value if value[:1] in "\"'" and value or value[-1:] in "\"'" and value else None
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    return next((s for s in map(_stray_quote, items) if s is not None), None)


def _unbalanced(item: str, key: str, text: str, problem: str) -> str:
    return (f"override {item!r} has an unbalanced quote or bracket ({problem}); close it, e.g. "
            f"{key}=\"a b\" or {key}=[a, b], or leave the quotes out for a plain value. In a shell, wrap the whole "
            f"override in single quotes: '{key}=\"a b\"'")


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML mapping with the safe loader (aliases refused); errors name the file.

    Raises:
        FileNotFoundError: The file does not exist.
        ConfigError: A directory, not UTF-8, not valid YAML, empty (or only comments), or uses aliases.
        ConfigTypeError: The YAML is not a mapping.
    """
    path = Path(path)
    if path.is_dir():
        found = sorted(p.name for p in path.iterdir() if p.suffix in (".yaml", ".yml"))
        holds = f"it holds {', '.join(found[:5])}" if found else "it holds no .yaml file"
        example = str(path / (found[0] if found else "classification.yaml"))
        raise ConfigError(f"config path {str(path)!r} is a directory, not a YAML file ({holds}); pass a file, "
                          f"e.g. -c {example!r}")
    if not path.is_file():
        raise FileNotFoundError(f"config file {str(path)!r} does not exist; see configs/ for examples")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise ConfigError(f"config file {str(path)!r} is not UTF-8 text: byte {data[err.start]:#04x} at "
                          f"offset {err.start} (line {line}) cannot be decoded; save the file as UTF-8 (e.g. "
                          f"`iconv -f latin1 -t utf-8 {path.name} > fixed.yaml`)") from None
    try:
        raw = _safe_load(text, f"config file {str(path)!r}")
    except RecursionError:  # a nesting the composer's depth limit does not see (the scanner's flow levels)
        raise ConfigError(f"config file {str(path)!r} nests lists or mappings too deeply to read; a config is a few "
                          "levels deep (section, key, value): check its brackets") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {err}") from err
    if raw is None:
        raise ConfigError(f"config file {str(path)!r} is empty (or holds only comments), so every key would "
                          "silently take its default; write the sections you mean (see configs/ for "
                          "examples), or leave out -c to run the defaults on purpose")
    if not isinstance(raw, dict):
        raise ConfigTypeError(f"config file {str(path)!r}: expected a mapping of sections, "
                              f"received {type(raw).__name__}")
    return raw


def recipe_configs() -> list[str]:
    """The names of the recipe configs shipped with the package (``-c NAME``), sorted."""
    return sorted(ref.name[: -len(".yaml")] for ref in importlib.resources.files(CONFIGS_PACKAGE).iterdir()
                  if ref.name.endswith(".yaml"))


def resolve_config(source: str | os.PathLike) -> Path:
    """The YAML file a config source names: a path that exists, else a shipped recipe config of that name.

    A path that exists always wins (a file of your own called ``classification`` is read, not the
    shipped one). A name is a shipped file's stem: ``classification``, ``segmentation_3d``,
    ``handwriting_none`` (:func:`recipe_configs`); it works from any folder, without a clone.

    Raises:
        FileNotFoundError: ``source`` is neither an existing path nor a shipped name; the message
            lists the shipped names and suggests the closest.
    """
    path = Path(source)
    if path.exists():
        return path
    names = recipe_configs()
    if str(source) in names:
        return Path(str(importlib.resources.files(CONFIGS_PACKAGE) / f"{source}.yaml"))
    raise FileNotFoundError(
        f"config file {str(source)!r} does not exist, and it is not the name of a recipe config shipped with "
        f"mmix_applied.{did_you_mean(path.stem, names)} Pass a YAML path, or one of the shipped names: "
        f"{', '.join(names)} (e.g. -c {names[0] if names else 'classification'})")


def load_config(source: str | os.PathLike | Mapping[str, Any] | None = None,
                overrides: Iterable[str] = ()) -> Config:
    """Load a config, apply overrides, validate.

    ``source``: a YAML path, the name of a shipped recipe config (:func:`resolve_config`), a mapping,
    or ``None`` for all defaults. Example: ``load_config("classification", ["train.max_epochs=3"])``.
    """
    if isinstance(source, Mapping):
        raw = dict(source)
    else:
        raw = read_yaml(resolve_config(source)) if source is not None else {}
    return parse_config(apply_overrides(raw, overrides))


def dump_config(cfg: Config) -> str:
    """The resolved config as YAML text."""
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)


def save_config(cfg: Config, path: str | os.PathLike) -> Path:
    """Write the resolved config as YAML, atomically."""
    return atomic_write_text(path, dump_config(cfg))
