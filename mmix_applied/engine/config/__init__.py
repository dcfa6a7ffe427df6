"""Strict, typed run configuration: YAML in, dataclasses out, dotted overrides, saved with every run.

Three modules, one concept each: :mod:`.schema` (the sections and the errors), :mod:`.validate`
(the strict validator) and :mod:`.files` (YAML files and overrides). The public face is
:mod:`mmix_applied.config`, which re-exports all of it.
"""

from mmix_applied.engine.config.files import (
    apply_overrides,
    dump_config,
    load_config,
    read_yaml,
    recipe_configs,
    resolve_config,
    save_config,
)
from mmix_applied.engine.config.schema import (
    Config,
    ConfigError,
    ConfigKeyError,
    ConfigTypeError,
    MixConfig,
    ModelConfig,
    OptimConfig,
    RunConfig,
    SchedulerConfig,
    TrainConfig,
    config_to_dict,
)
from mmix_applied.engine.config.validate import parse_config

__all__ = [
    "Config",
    "ConfigError",
    "ConfigKeyError",
    "ConfigTypeError",
    "MixConfig",
    "ModelConfig",
    "OptimConfig",
    "RunConfig",
    "SchedulerConfig",
    "TrainConfig",
    "apply_overrides",
    "config_to_dict",
    "dump_config",
    "load_config",
    "parse_config",
    "read_yaml",
    "recipe_configs",
    "resolve_config",
    "save_config",
]
