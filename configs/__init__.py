"""The recipe configs, shipped with the package as ``mmix_applied.configs`` (YAML files, no code).

``-c classification`` (a file's stem) reads ``classification.yaml`` from here when no file of that
name exists: :func:`mmix_applied.config.resolve_config`. The folder is ``configs/`` in the repository.
"""
