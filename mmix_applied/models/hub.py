"""Pretrained weights by name, read from the local caches the hubs fill; nothing is downloaded.

``pretrained=`` takes, besides a path to a local file:

- ``"hf-hub:timm/resnet18.a1_in1k"`` (optionally ``@revision``): the repository's
  ``model.safetensors`` (else ``pytorch_model.bin``) from the local Hugging Face cache;
- a timm name with a pretrained tag, ``"resnet18.a1_in1k"`` (or a bare ``"resnet18"``: timm's
  default tag): the hub repository timm's own ``pretrained_cfg`` names, from the same cache, or,
  for the older weights that timm fetches by URL, the file in the torch hub cache.

The cache is found the way ``huggingface_hub`` finds it (``HF_HUB_CACHE``, else ``HF_HOME/hub``,
else ``~/.cache/huggingface/hub``), read from the environment at call time, and only looked up on
disk (``huggingface_hub.try_to_load_from_cache``): the hub is never contacted, as with
``HF_HUB_OFFLINE=1``. Where the cache lacks the weights, the error gives the command that fetches
them on a machine with network.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["HUB_PREFIX", "WeightsSource", "hf_hub_cache", "resolve_weights"]

HUB_PREFIX = "hf-hub:"
_HUB_FILES = ("model.safetensors", "pytorch_model.bin")
_FILE_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")


@dataclass(frozen=True)
class WeightsSource:
    """Where the weights named by a ``pretrained=`` value are.

    Attributes:
        path: the local file to read.
        spec: the value as the user gave it.
        repo_id: the Hugging Face repository, when the weights come from the hub cache.
        architecture: the architecture the cached ``config.json`` names (timm repositories), if any.
    """

    path: Path
    spec: str
    repo_id: str | None = None
    architecture: str | None = None


def hf_hub_cache() -> Path:
    """The Hugging Face hub cache folder, from the environment as it is now."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.environ[var]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg).expanduser() / "huggingface" / "hub"


def _fetch_hint(repo_id: str, filename: str, cache: Path) -> str:
    return (
        f"On a machine with network, fetch them with\n"
        f"    hf download {repo_id} {filename} config.json\n"
        f"(older huggingface_hub: huggingface-cli download {repo_id} {filename} config.json), then copy "
        f"that machine's cache folder models--{repo_id.replace('/', '--')} into {cache}, or set HF_HOME (the "
        "cache is $HF_HOME/hub) or HF_HUB_CACHE to a copy of that cache here. Or pass the path of a local "
        ".safetensors/.pth file."
    )


def _from_hub(spec: str, repo: str, filenames: tuple[str, ...]) -> WeightsSource:
    from huggingface_hub import try_to_load_from_cache  # reads the disk only

    repo_id, _, revision = repo.partition("@")
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise ValueError(
            f"pretrained {spec!r}: a hub name is 'hf-hub:<owner>/<repo>[@revision]', e.g. "
            f"'hf-hub:timm/resnet18.a1_in1k'; received the repository {repo_id!r}."
        )
    cache = hf_hub_cache()
    cached_as_absent = []
    for filename in filenames:
        found = try_to_load_from_cache(repo_id, filename, cache_dir=str(cache), revision=revision or None)
        if isinstance(found, str):
            return WeightsSource(path=Path(found), spec=spec, repo_id=repo_id,
                                 architecture=_architecture(repo_id, cache, revision or None))
        if found is not None:  # the cache recorded that the repository has no such file
            cached_as_absent.append(filename)
    at = f" at revision {revision!r}" if revision else ""
    absent = (f" (the cache records that the repository has no {', '.join(cached_as_absent)})"
              if cached_as_absent else "")
    raise FileNotFoundError(
        f"pretrained {spec!r}: the weights of {repo_id}{at} are not in the local Hugging Face cache {cache} "
        f"(looked for {' or '.join(filenames)}{absent}); nothing is downloaded at run time. "
        + _fetch_hint(repo_id, filenames[0], cache)
    )


def _architecture(repo_id: str, cache: Path, revision: str | None) -> str | None:
    """The ``architecture`` of the cached ``config.json`` (timm writes one per repository)."""
    import json

    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, "config.json", cache_dir=str(cache), revision=revision)
    if not isinstance(found, str):
        return None
    try:
        config = json.loads(Path(found).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    arch = config.get("architecture") if isinstance(config, dict) else None
    return arch if isinstance(arch, str) else None


def _timm_cfg(spec: str):
    """timm's pretrained config for ``spec`` when it reads as a timm name, else None."""
    if any(sep in spec for sep in ("/", "\\", os.sep)) or spec.endswith(_FILE_SUFFIXES):
        return None
    import timm
    from timm.models import get_pretrained_cfg, split_model_name_tag

    base, tag = split_model_name_tag(spec)
    if not timm.is_model(base):
        return None
    try:
        cfg = get_pretrained_cfg(spec)
    except RuntimeError:  # timm: "Invalid pretrained tag (...)"
        cfg = None
    if cfg is None:
        tags = timm.list_pretrained(f"{base}.*")
        raise FileNotFoundError(
            f"pretrained {spec!r}: timm has no pretrained weights {'tagged ' + repr(tag) + ' ' if tag else ''}for "
            f"{base!r} and no such file exists. Pretrained names timm knows for it: {tags[:12] or 'none'}; pass one "
            f"(pretrained='{tags[0] if tags else base + '.<tag>'}') or a local file path."
        )
    return cfg


def resolve_weights(spec: str | os.PathLike) -> WeightsSource:
    """The local file that a ``pretrained=`` value names.

    Args:
        spec: a path to a local weights file; ``"hf-hub:<owner>/<repo>[@revision]"``; or a timm name
            with a pretrained tag (``"resnet18.a1_in1k"``).

    Raises:
        FileNotFoundError: no such file, or weights that the local caches do not hold; the message
            says how to fetch them.
        ValueError: a malformed hub name, or timm weights that timm loads with custom code.
    """
    text = os.fspath(spec)
    path = Path(text).expanduser()
    if path.is_file():
        return WeightsSource(path=path, spec=text)
    if text.startswith(HUB_PREFIX):
        return _from_hub(text, text[len(HUB_PREFIX):], _HUB_FILES)
    cfg = _timm_cfg(text) if isinstance(spec, str) else None
    if cfg is not None:
        if getattr(cfg, "custom_load", False):
            raise ValueError(f"pretrained {text!r}: timm loads these weights with its own code (custom_load); "
                             "export them once with timm and pass the .safetensors path.")
        if cfg.hf_hub_id:
            files = (cfg.hf_hub_filename,) if cfg.hf_hub_filename else _HUB_FILES
            return _from_hub(text, cfg.hf_hub_id, files)
        if cfg.url:
            import torch.hub

            cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(cfg.url.split("?")[0])
            if cached.is_file():
                return WeightsSource(path=cached, spec=text)
            raise FileNotFoundError(
                f"pretrained {text!r}: timm fetches these weights from {cfg.url}, and the torch hub cache has "
                f"no {cached}; nothing is downloaded at run time. On a machine with network, download that URL "
                f"and copy the file to {cached} here (or set TORCH_HOME), or pass the file's path."
            )
    raise FileNotFoundError(
        f"weights file {text!r} does not exist. `pretrained` takes a path to a local .safetensors or .pth "
        "file, a Hugging Face hub name read from the local cache ('hf-hub:timm/resnet18.a1_in1k'), or a timm "
        "name with a pretrained tag ('resnet18.a1_in1k'); nothing is downloaded."
    )
