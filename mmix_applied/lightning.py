"""Lightning support for a user's own LightningModule: :class:`MixerCheckpoint`.

A mixer draws its plans from its own generator, which is not a tensor of the model, so a
checkpoint of a plain LightningModule does not hold it: a resumed run replays the plans of the
first epoch and ends with other weights than an uninterrupted one. ``MixerCheckpoint`` saves the
state of every mixer attached to the module's submodules and restores it on resume, per rank
(under DDP each rank draws its own plans). The engine's own Trainer uses it too
(:func:`mmix_applied.engine.runner.build_trainer`). This module imports Lightning; the package root
does not import this module.

Example:
    >>> trainer = L.Trainer(callbacks=[MixerCheckpoint()])
    >>> trainer.fit(my_module, ckpt_path="last")   # the mixers resume where they stopped
"""

from __future__ import annotations

import warnings
from typing import Any

import lightning.pytorch as pl
import torch

from mmix_applied.core.attachment import attached_mixer
from mmix_applied.errors import MmixWarning

__all__ = ["KEY", "MixerCheckpoint", "gather_per_rank", "mixers_of"]

#: The checkpoint key under which the mixers' states are saved.
KEY = "mmix_mixers"


def mixers_of(module: torch.nn.Module) -> dict[str, Any]:
    """Every open mixer attached to ``module`` or one of its submodules, by the submodule's name
    (``""`` for ``module`` itself), in ``named_modules()`` order."""
    found: dict[str, Any] = {}
    for name, sub in module.named_modules(remove_duplicate=True):
        mixer = attached_mixer(sub)
        if mixer is not None and mixer not in found.values():
            found[name] = mixer
    return found


class MixerCheckpoint(pl.Callback):
    """Saves and restores every mixer of the LightningModule in its checkpoints, per rank.

    Each mixer is saved under the name of the submodule it is attached to (e.g. ``"model"``),
    with every rank's generator state gathered beside it. On resume each rank takes its own
    state back; a mixer in the checkpoint with no mixer of that name in the module (or the other
    way round) is reported in a warning, not silently skipped.
    """

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        """Add ``{name: {"state", "rank_generators"}}`` under ``checkpoint["mmix_mixers"]`` (runs on every rank)."""
        saved = {}
        for name, mixer in mixers_of(pl_module).items():
            state = mixer.state_dict()
            saved[name] = {"state": state, "rank_generators": gather_per_rank(trainer, pl_module, state["generator"])}
        checkpoint[KEY] = saved

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        """Restore each mixer, then give each rank its own generator state."""
        saved = checkpoint.get(KEY)
        mixers = mixers_of(pl_module)
        if saved is None:
            if mixers:
                warnings.warn(f"the checkpoint holds no mixer state (it was saved without MixerCheckpoint); the "
                              f"mixers {sorted(mixers)} start from their seeds, so the resumed run draws other "
                              "plans than an uninterrupted one.", MmixWarning, stacklevel=2)
            return
        missing = sorted(set(saved) - set(mixers))
        extra = sorted(set(mixers) - set(saved))
        if missing or extra:
            warnings.warn(f"the checkpoint has mixer states for {sorted(saved)} but the module has mixers on "
                          f"{sorted(mixers)}; restored the ones in both. Attach the mixers (in __init__ or "
                          "setup) before fitting so their names match.", MmixWarning, stacklevel=2)
        rank = trainer.global_rank
        for name in sorted(set(saved) & set(mixers)):
            entry, mixer = saved[name], mixers[name]
            mixer.load_state_dict(entry["state"])
            per_rank = entry.get("rank_generators") or []
            if rank < len(per_rank):
                # a copy with its own storage: a row of the gathered tensor (offset into a shared
                # storage) segfaults Generator.set_state, which reads from the storage's start
                mixer.generator.set_state(per_rank[rank].clone())
            elif rank > 0:
                warnings.warn(f"the checkpoint holds mixer generators for {len(per_rank)} ranks; rank {rank} "
                              "restarts from rank 0's state (the world size changed).", MmixWarning, stacklevel=2)


def gather_per_rank(trainer: pl.Trainer, pl_module: pl.LightningModule, state: torch.Tensor) -> list[torch.Tensor]:
    """Every rank's copy of a fixed-size state tensor, e.g. a generator state (a list of one without DDP).

    A collective under DDP: every rank must call it (Lightning builds a checkpoint on every rank).
    """
    if trainer.world_size == 1:
        return [state.clone()]
    gathered = pl_module.all_gather(state.to(pl_module.device))
    return [row.cpu().clone() for row in gathered]  # each its own storage (see on_load_checkpoint)
