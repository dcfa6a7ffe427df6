"""Checkpoints: safe I/O, and compatibility checked before anything is written or loaded.

**I/O.** Saves are atomic (through :mod:`mmix_applied.utils.atomic`): a kill during a save
leaves the previous file intact; checkpoints load with ``weights_only=True`` and never unpickle
other objects.

**Compatibility.** ``fit --resume``, ``test`` and ``predict`` read the checkpoint once here and
compare it with the config and the freshly built module: a file that is not a checkpoint of
``mmix-applied fit`` (a bare ``state_dict``), a checkpoint of another recipe or model, or one whose
tensor shapes differ, is refused with what the file is and what was expected. ``fit --resume``
also refuses config keys that cannot change on resume (the optimizer, schedule, data and mixing
state come from the checkpoint, so e.g. ``optim.lr=0.5`` would be recorded in ``config.yaml`` but
never used).

**Older checkpoints.** Before #21 the engine saved its mixer itself, under
``checkpoint["mmix"]["mixer"]`` and ``["rank_mixer"]``; the mixer is now saved by
:class:`mmix_applied.lightning.MixerCheckpoint`, as in a user's own LightningModule.
:func:`upgrade_checkpoint` moves the old keys to the new place when the Trainer reads a
checkpoint, so such runs still resume exactly.
"""

from __future__ import annotations

import fnmatch
import os
import shlex
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from mmix_applied.engine.config.schema import Config, config_to_dict
from mmix_applied.engine.rundir import write_error
from mmix_applied.lightning import KEY as MIXERS_KEY
from mmix_applied.utils.atomic import atomic_write
from mmix_applied.utils.interrupts import Stopped
from mmix_applied.utils.safe_load import CheckpointError, load_checkpoint

__all__ = ["RESUMABLE_KEYS", "AtomicCheckpointIO", "CheckpointError", "check_resume_config", "check_resume_limits",
           "check_state_shapes", "load_checkpoint", "read_run_checkpoint", "upgrade_checkpoint"]

#: The name the engine's mixer is saved under by MixerCheckpoint: it is attached to ``MixupModule.model``.
ENGINE_MIXER = "model"


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint I/O that saves atomically and loads with ``weights_only=True``."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        """Save ``checkpoint`` to ``path`` through a temporary file and a rename.

        Raises:
            RunWriteError: The folder is read-only or the disk is full (the previous file is kept).
        """
        path = Path(path)
        kept = f"the previous {path.name} is kept unchanged" if path.exists() else None
        try:
            atomic_write(path, lambda fh: torch.save(checkpoint, fh))
        except OSError as err:
            raise write_error(err, path, kept=kept) from err
        except RuntimeError as err:  # torch's zip writer: "[enforce fail at inline_container.cc] unexpected pos"
            if isinstance(err.__context__, (KeyboardInterrupt, Stopped)):  # Ctrl-C inside torch.save: not the disk
                raise err.__context__ from None
            if "inline_container" not in str(err) and "PytorchStreamWriter" not in str(err):
                raise
            raise write_error(err, path, kept=kept) from err

    def load_checkpoint(self, path: Any, map_location: Any | None = None, weights_only: bool | None = None
                        ) -> dict[str, Any]:
        """Load with ``weights_only=True`` whatever the caller asks (older layouts upgraded)."""
        return upgrade_checkpoint(load_checkpoint(path, map_location=map_location if map_location is not None
                                                  else "cpu"))


def upgrade_checkpoint(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """Move an older engine checkpoint's mixer state to where :class:`~mmix_applied.lightning.MixerCheckpoint` reads it.

    ``checkpoint["mmix"]["mixer"]`` (the state) and ``["rank_mixer"]`` (every rank's generator)
    become ``checkpoint["mmix_mixers"]["model"]`` = ``{"state", "rank_generators"}``, in place. A
    checkpoint in the current layout is returned unchanged.
    """
    state = checkpoint.get("mmix")
    if not isinstance(state, dict) or "mixer" not in state:
        return checkpoint
    mixer, per_rank = state.pop("mixer"), state.pop("rank_mixer", None)
    if mixer is not None and MIXERS_KEY not in checkpoint:
        checkpoint[MIXERS_KEY] = {ENGINE_MIXER: {"state": mixer, "rank_generators": list(per_rank or [])}}
    return checkpoint


# Config keys that may differ on resume (fnmatch patterns over dotted keys); every other change is refused.
RESUMABLE_KEYS = (
    "run.*", "train.max_epochs", "train.max_steps", "train.accelerator", "train.devices", "train.num_nodes",
    "train.strategy", "train.limit_val_batches", "train.limit_test_batches", "train.limit_predict_batches",
    "train.check_val_every_n_epoch", "train.log_every_n_steps", "train.enable_progress_bar", "train.loggers",
    "train.monitor", "train.monitor_mode", "train.save_top_k", "train.nonfinite_loss", "data.num_workers",
)


def read_run_checkpoint(path: str | os.PathLike, config: Config) -> dict[str, Any]:
    """Load ``path`` and check it is a checkpoint of ``mmix-applied fit`` for ``config``'s recipe and model.

    Raises:
        CheckpointError: The file is not such a checkpoint (a bare ``state_dict``, another
            Lightning module) or belongs to another recipe or model.
    """
    path = Path(path)
    checkpoint = load_checkpoint(path)
    if "pytorch-lightning_version" not in checkpoint or "state_dict" not in checkpoint:
        tensors = sum(isinstance(v, torch.Tensor) for v in checkpoint.values())
        what = (f"a bare state_dict ({tensors} tensors, e.g. {next(iter(checkpoint), '')!r})"
                if tensors and tensors == len(checkpoint) else f"a dict with keys {sorted(checkpoint)[:6]}")
        raise CheckpointError(
            f"{str(path)!r} is {what}, not a checkpoint written by mmix-applied fit (expected the keys "
            "'state_dict', 'pytorch-lightning_version' and 'mmix'). To start from those weights, train with "
            f"model.pretrained={str(path)}; to test or predict, pass a run directory or its checkpoints/last.ckpt"
        )
    saved = (checkpoint.get("mmix") or {}).get("config") or {}
    if not saved:
        return checkpoint
    expected = {"recipe": config.recipe, "model.family": config.model.family, "model.name": config.model.name}
    found = {"recipe": saved.get("recipe"), "model.family": (saved.get("model") or {}).get("family"),
             "model.name": (saved.get("model") or {}).get("name")}
    differ = [k for k in expected if found[k] is not None and found[k] != expected[k]]
    if differ:
        pairs = ", ".join(f"{k}={found[k]!r} (expected {expected[k]!r})" for k in differ)
        raise CheckpointError(
            f"checkpoint {str(path)!r} is of another run: {pairs}. Use a checkpoint of this recipe and model, or "
            "run with the checkpoint's own config (omit -c: its run directory's config.yaml, or else the config "
            "stored in the checkpoint, is used)"
        )
    return checkpoint


def check_state_shapes(checkpoint: dict[str, Any], module: torch.nn.Module, path: str | os.PathLike) -> None:
    """Refuse a checkpoint whose ``state_dict`` keys or shapes differ from ``module``'s (names the differences)."""
    saved = checkpoint.get("state_dict") or {}
    own = module.state_dict()
    missing = [k for k in own if k not in saved]
    unexpected = [k for k in saved if k not in own]
    shapes = [(k, tuple(saved[k].shape), tuple(v.shape)) for k, v in own.items()
              if k in saved and isinstance(saved[k], torch.Tensor) and tuple(saved[k].shape) != tuple(v.shape)]
    if not (missing or unexpected or shapes):
        return
    parts = []
    if shapes:
        parts.append(f"{len(shapes)} shapes differ (" + "; ".join(
            f"{k}: checkpoint {list(a)}, model {list(b)}" for k, a, b in shapes[:5]) + (", ..." if len(shapes) > 5
                                                                                         else "") + ")")
    if missing:
        parts.append(f"{len(missing)} model tensors are missing from it (e.g. {missing[:3]})")
    if unexpected:
        parts.append(f"{len(unexpected)} of its tensors are not in the model (e.g. {unexpected[:3]})")
    raise CheckpointError(
        f"checkpoint {str(path)!r} does not fit the model built from the config: {'; '.join(parts)}. Use the "
        "checkpoint's own config (omit -c), or the model options it was trained with (e.g. data.num_classes, "
        "model.options)"
    )


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(_flat(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: tree}


def check_resume_config(checkpoint: dict[str, Any], config: Config, path: str | os.PathLike) -> None:
    """Refuse a resume whose config changes keys that cannot change on resume (lists them with both values).

    Only :data:`RESUMABLE_KEYS` may differ from the config stored in the checkpoint. ``train.precision``
    and ``train.channels_last`` set to ``auto`` take the values the run resolved them to when it started.
    """
    saved = (checkpoint.get("mmix") or {}).get("config")
    if not saved:
        return
    before = _flat(saved)
    for key in ("precision", "channels_last"):  # `auto` resumes with what it meant when the run started
        if getattr(config.train, key) == "auto" and f"train.{key}" in before:
            setattr(config.train, key, before[f"train.{key}"])
    after = _flat(config_to_dict(config))
    changed = [k for k in sorted(set(before) | set(after))
               if before.get(k) != after.get(k) and not any(fnmatch.fnmatchcase(k, p) for p in RESUMABLE_KEYS)]
    if not changed:
        return
    listed = ", ".join(f"{k}: {before.get(k)!r} -> {after.get(k)!r}" for k in changed[:8])
    more = f" (and {len(changed) - 8} more)" if len(changed) > 8 else ""
    raise CheckpointError(
        f"--resume {str(path)!r}: these keys cannot change on resume (the checkpoint's optimizer, schedule, data "
        f"order and mixing state would not follow them): {listed}{more}. Resume without them, or start a new run "
        "(another run.name) with the new values; keys that may change: train.max_epochs, train.max_steps, the "
        "device and logging keys of train, data.num_workers and run.*"
    )


def check_resume_limits(state: dict[str, Any], config: Config, ckpt: Path) -> int:
    """Refuse a resume whose checkpoint has trained past ``train.max_epochs`` / ``train.max_steps``; returns its
    global step.

    Lightning would refuse it (or train nothing) only after the run directory was rewritten; this
    runs before anything is written.

    Raises:
        CheckpointError: Naming the limit, what the checkpoint has trained, and what to run instead.
    """
    step = int(state.get("global_step") or 0)
    try:
        epochs = int(state["loops"]["fit_loop"]["epoch_progress"]["current"]["processed"])
    except (KeyError, TypeError, ValueError):
        epochs = int(state.get("epoch") or 0) + 1
    t = config.train
    over, raise_to = [], []
    if t.max_epochs not in (None, -1) and epochs > t.max_epochs:
        over.append(f"train.max_epochs={t.max_epochs} (it has trained {epochs} epochs)")
        raise_to.append(f"train.max_epochs={epochs + 1}")
    if t.max_steps not in (None, -1) and step > t.max_steps:
        over.append(f"train.max_steps={t.max_steps} (it is at global step {step})")
        raise_to.append(f"train.max_steps={2 * step}")
    if over:
        run = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent
        raise CheckpointError(
            f"--resume {str(ckpt)!r}: the checkpoint has trained past {' and '.join(over)}, so there is nothing to "
            f"continue; nothing was changed in {str(run)!r}. To train further, raise the limit (e.g. "
            f"{' '.join(raise_to)}); to evaluate it: mmix-applied test --checkpoint {shlex.quote(str(run))}"
        )
    return step
