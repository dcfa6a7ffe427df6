"""The LightningModule: a recipe's model and adapter, the mixer, optimizer and schedule.

Training steps go through :class:`mmix_applied.ManifoldMixup` (Verma et al., "Manifold Mixup",
ICML 2019): one plan per step, the loss from ``adapter.loss(output, target, plan)``. Validation
and test passes are unmixed (``eval()`` mode). The mixer's generator state is saved in every checkpoint by
:class:`mmix_applied.lightning.MixerCheckpoint` (one of the Trainer's callbacks, under the name
``"model"``), so a resumed run draws the same plans; this module saves the rest of the run's state
(``checkpoint["mmix"]``: the counts of mixed and skipped steps, the config, the global RNG
streams of every rank, and the temperature fitted after ``fit``).
"""

from __future__ import annotations

import math
from typing import Any

import lightning.pytorch as pl
import torch

from mmix_applied.core.mixer import ManifoldMixup
from mmix_applied.engine.config.schema import Config, config_to_dict
from mmix_applied.engine.modelzoo import backbone_param_groups
from mmix_applied.engine.optim import build_optimizer, build_scheduler
from mmix_applied.engine.performance import compile_model, convert_memory_format, resolve_speed_options
from mmix_applied.engine.posthoc import ood_figures
from mmix_applied.errors import MmixError
from mmix_applied.lightning import gather_per_rank
from mmix_applied.metrics.ood import ood_scores

__all__ = ["MixupModule", "NonFiniteLossError", "build_mixer", "mixing_epoch"]


class NonFiniteLossError(MmixError, FloatingPointError):
    """The training loss became NaN or Inf."""


def build_mixer(model: torch.nn.Module, config: Config, *, seed_offset: int = 0) -> Any:
    """The :class:`~mmix_applied.ManifoldMixup` the ``mix`` section describes, or ``None`` for ``none``."""
    mix = config.mix
    if mix.variant == "none":
        return None
    points: Any = ["input"] if mix.variant == "input" else mix.points
    return ManifoldMixup(model, points=points, alpha=mix.alpha, mode=mix.mode, lam_per_sample=mix.lam_per_sample,
                         prob=mix.prob, seed=config.seed + seed_offset)


def mixing_epoch(epoch: int, *, warmup: int, off_last: int, max_epochs: int | None) -> bool:
    """Whether ``epoch`` (0-based) mixes: from ``warmup`` on, and not in the last ``off_last`` epochs."""
    end = max_epochs if max_epochs not in (None, -1) else math.inf
    return warmup <= epoch < end - off_last


class MixupModule(pl.LightningModule):
    """Trains ``recipe``'s model with its adapter under the config's mixing schedule.

    Args:
        config: The resolved config.
        recipe: The recipe instance (built from ``config``).
    """

    def __init__(self, config: Config, recipe: Any) -> None:
        super().__init__()
        self.config = config
        self.recipe = recipe
        self.model = recipe.build_model()
        self.adapter = recipe.build_adapter()
        self.val_metrics = recipe.build_metrics("val")
        self.test_metrics = recipe.build_metrics("test")
        resolve_speed_options(config.train, self.model)  # 'auto' -> the resolved values, in the config
        if config.train.channels_last:
            convert_memory_format(self.model)
        # The mixer is not an nn.Module: keep it out of the module tree and state_dict.
        self.__dict__["mixer"] = build_mixer(self.model, config)
        if config.train.compile:  # once, after the mixer: it stays the router; every stage runs compiled
            compile_model(self.model, mode=config.train.compile_mode, backend=config.train.compile_backend)
        self.skipped_steps = 0
        self.mixed_steps = 0
        # calibration (mmix_applied.engine.posthoc): the fitted temperature restored from the checkpoint,
        # the scaler a calibration pass fills, and test metrics of logits / T (None: the recipe has none)
        self.temperature: float | None = None
        self.__dict__["scaler"] = None
        self.test_metrics_scaled = recipe.build_scaled_metrics("test")
        self.predict_raw = False
        self.ood_inputs: torch.Tensor | None = None
        self.ood_results: dict[str, float] = {}
        self._ood_in: dict[str, list[torch.Tensor]] = {"raw": [], "scaled": []}

    @property
    def mixing_enabled(self) -> bool:
        """Whether training steps mix now (False for variant ``none`` or in the final unmixed epochs)."""
        return self.mixer is not None and self.mixer.enabled

    def forward(self, x: Any) -> Any:
        """Plain (unmixed unless inside a mixer plan) forward of the model."""
        return self.model(x)

    # ------------------------------------------------------------------ schedule
    def on_train_epoch_start(self) -> None:
        """Mix only from epoch ``mix.warmup_epochs`` on and not in the last ``mix.off_last_epochs``.

        Both read ``current_epoch``, which a resumed run restores, so a resume keeps the schedule.
        """
        if self.mixer is not None:
            self.mixer.enabled = mixing_epoch(self.current_epoch, warmup=self.config.mix.warmup_epochs,
                                              off_last=self.config.mix.off_last_epochs,
                                              max_epochs=self.trainer.max_epochs)

    # ------------------------------------------------------------------ steps
    def train_loss(self, x: Any, y: Any) -> tuple[torch.Tensor, Any]:
        """The training loss of one batch and the step's plan (None: unmixed).

        A mixed step with ``mix.clean_weight > 0`` adds the RegMixup clean term: a second, unmixed
        forward of the same batch, ``loss = mixed_loss + clean_weight * clean_loss``.
        """
        if self.mixer is None:
            out = self.model(x)
            return self.adapter.loss(out, y, None), None
        out, plan = self.mixer(x)
        loss = self.adapter.loss(out, y, plan)
        weight = self.config.mix.clean_weight
        if plan is not None and weight > 0:
            loss = loss + weight * self.adapter.loss(self.model(x), y, None)
        return loss, plan

    def _inputs(self, batch: Any) -> tuple[Any, Any]:
        x, y = self.recipe.split_batch(batch)
        return (convert_memory_format(x) if self.config.train.channels_last else x), y

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor | None:
        x, y = self._inputs(batch)
        # skip mode: a skipped step must not leave its NaN in the running statistics (BatchNorm) either
        saved = _float_buffers(self.model, clone=True) if self.config.train.nonfinite_loss == "skip" else None
        loss, plan = self.train_loss(x, y)
        if not torch.isfinite(loss).all():
            if saved:
                with torch.no_grad():
                    torch._foreach_copy_(_float_buffers(self.model), saved)
            return self._non_finite(loss, batch_idx)
        if plan is not None:
            self.mixed_steps += 1
        bs = _batch_size(x)
        self.log("train/loss", loss.detach(), on_step=True, on_epoch=True, prog_bar=True, batch_size=bs)
        self.log("train/mixed", float(plan is not None), on_step=False, on_epoch=True, batch_size=bs)
        return loss

    def _non_finite(self, loss: torch.Tensor, batch_idx: int) -> None:
        step, epoch = self.global_step, self.current_epoch
        if self.config.train.nonfinite_loss == "skip":
            self.skipped_steps += 1
            self.log("train/skipped_steps", float(self.skipped_steps), on_step=True, on_epoch=False,
                     batch_size=1)
            return None
        raise NonFiniteLossError(
            f"training loss is {loss.detach().flatten()[0].item()} at global step {step} (epoch {epoch}, batch "
            f"{batch_idx}). Try a lower learning rate (optim.lr={self.config.optim.lr:g} -> "
            f"{self.config.optim.lr / 10:g}), full or bf16 precision instead of fp16 (train.precision=32 or "
            "bf16-mixed; now " f"{self.config.train.precision!r}), gradient clipping (train.gradient_clip_val=1.0), "
            "and check the data for NaN/Inf; or set train.nonfinite_loss=skip to skip and count such steps."
        )

    def _eval_step(self, batch: Any, stage: str) -> torch.Tensor:
        x, y = self._inputs(batch)
        out = self.model(x)
        loss = self.adapter.loss(out, y, None)
        metrics = self.val_metrics if stage == "val" else self.test_metrics
        out = _detach(out)
        if stage == "val" and self.scaler is not None:  # a calibration pass (rank 0 alone): logits only, no
            self.recipe.update_metrics(self.scaler, out, y)  # metric whose compute would sync with other ranks
            return loss
        self.recipe.update_metrics(metrics, out, y)
        if stage == "test":
            self._test_extras(out, y)
        self.log(f"{stage}/loss", loss, on_step=False, on_epoch=True, prog_bar=stage == "val",
                 sync_dist=True, batch_size=_batch_size(x))
        return loss

    def _test_extras(self, out: Any, y: Any) -> None:
        """Scaled calibration metrics (``logits / T``) and the in-distribution OOD scores of a test batch."""
        t = self.temperature
        if t is not None and self.test_metrics_scaled is not None:
            self.recipe.update_metrics(self.test_metrics_scaled, out / t, y)
        if self.ood_inputs is not None:
            self._ood_in["raw"].append(ood_scores(out).cpu())
            if t is not None:
                self._ood_in["scaled"].append(ood_scores(out, temperature=t).cpu())

    def validation_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self._eval_step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self._eval_step(batch, "test")

    def _log_metrics(self, stage: str, metrics: Any = None, suffix: str = "") -> None:
        metrics = metrics if metrics is not None else self.val_metrics if stage == "val" else self.test_metrics
        values = metrics.compute()
        if not isinstance(values, dict):
            values = {type(metrics).__name__.lower(): values}
        for key, value in values.items():
            if isinstance(value, torch.Tensor) and value.numel() == 1:
                self.log(f"{stage}/{key}{suffix}", value.float(), prog_bar=stage == "val" and key == "acc")
        metrics.reset()

    def on_validation_epoch_end(self) -> None:
        if self.scaler is None:
            self._log_metrics("val")

    def on_test_epoch_end(self) -> None:
        self._log_metrics("test")
        if self.temperature is not None and self.test_metrics_scaled is not None:
            self._log_metrics("test", self.test_metrics_scaled, "_scaled")
        if self.ood_inputs is not None and self._ood_in["raw"]:
            self.ood_results = ood_figures(self.model, self.ood_inputs, self._ood_in, temperature=self.temperature)
            self._ood_in = {"raw": [], "scaled": []}

    def on_predict_start(self) -> None:
        """Tell the recipe which temperature ``predict_step`` divides the logits by (``None``: raw)."""
        self.recipe.temperature = None if self.predict_raw else self.temperature

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Any:
        return self.recipe.predict_step(self.model, batch)

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self) -> Any:
        cfg = self.config
        groups = backbone_param_groups(self.model, lr=cfg.optim.lr, backbone_lr_mult=cfg.model.backbone_lr_mult,
                                       weight_decay=cfg.optim.weight_decay, layer_decay=cfg.model.layer_decay)
        optimizer = build_optimizer(groups, cfg.optim, precision=self.trainer.precision,
                                    gradient_clipping=bool(cfg.train.gradient_clip_val))
        total = int(self.trainer.estimated_stepping_batches)
        epochs = max(1, self.trainer.max_epochs or 1)
        scheduler = build_scheduler(optimizer, cfg.scheduler, total_steps=total,
                                    steps_per_epoch=max(1, total // epochs))
        if scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ------------------------------------------------------------------ checkpoints
    def setup(self, stage: str) -> None:
        """Give each DDP process its own mixer stream (each pairs within its own batch)."""
        if self.mixer is not None and self.global_rank > 0:
            self.mixer.generator.manual_seed(self.config.seed + self.global_rank)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """The run's state beside the weights (the mixer's is MixerCheckpoint's, under ``"mmix_mixers"``)."""
        rng = _rng_states()
        checkpoint["mmix"] = {
            "skipped_steps": self.skipped_steps,
            "mixed_steps": self.mixed_steps,
            "config": config_to_dict(self.config),
            "rng": rng,
            # under DDP, every process's torch RNG state (Lightning builds the checkpoint on all ranks)
            "rank_torch_rng": gather_per_rank(self.trainer, self, rng["torch"]),
            # what inference needs without the training data (mmix_applied.deploy.info)
            "inference": {**self.recipe.inference_metadata(), "state_prefix": "model."},
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore the counts, the temperature and the global RNG streams (this rank's)."""
        state = checkpoint.get("mmix") or {}
        rank = self.global_rank if self._trainer is not None else 0
        self.skipped_steps = int(state.get("skipped_steps", 0))
        self.mixed_steps = int(state.get("mixed_steps", 0))
        temperature = state.get("temperature")
        self.temperature = None if temperature is None else float(temperature)
        if state.get("rng") is not None:
            _set_rng_states(state["rng"])
            per_rank = state.get("rank_torch_rng") or []
            if 0 < rank < len(per_rank):
                torch.set_rng_state(per_rank[rank].clone())

    def on_fit_start(self) -> None:
        if self.config.train.nonfinite_loss == "skip" and self.trainer.world_size > 1:
            raise ValueError("train.nonfinite_loss=skip works in single-process training only (under DDP all "
                             "processes must step together); use train.nonfinite_loss=stop with DDP")


def _rng_states() -> dict[str, Any]:
    """Global RNG states (dropout, drop-path and any library draw them), as tensors and ints only."""
    import random

    import numpy as np

    np_state = np.random.get_state()
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": [int(v) for v in random.getstate()[1]] + [random.getstate()[0]],
        "numpy": [torch.from_numpy(np_state[1].astype("int64")), int(np_state[2]), int(np_state[3]),
                  float(np_state[4])],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _set_rng_states(states: dict[str, Any]) -> None:
    """Restore :func:`_rng_states` (so a resumed run continues the same random streams)."""
    import random

    import numpy as np

    if "torch" in states:
        torch.set_rng_state(states["torch"])
    if "python" in states:
        values = states["python"]
        random.setstate((int(values[-1]), tuple(int(v) for v in values[:-1]), None))
    if "numpy" in states:
        keys, pos, has_gauss, cached = states["numpy"]
        np.random.set_state(("MT19937", keys.numpy().astype("uint32"), int(pos), int(has_gauss), float(cached)))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def _float_buffers(model: torch.nn.Module, *, clone: bool = False) -> list[torch.Tensor]:
    """The floating-point buffers of ``model`` (running statistics), cloned when asked."""
    buffers = [b for b in model.buffers() if b.is_floating_point()]
    return [b.detach().clone() for b in buffers] if clone else buffers


def _batch_size(x: Any) -> int:
    if isinstance(x, torch.Tensor):
        return int(x.shape[0])
    if isinstance(x, (list, tuple)) and x and isinstance(x[0], torch.Tensor):
        return int(x[0].shape[0])
    return 1


def _detach(out: Any) -> Any:
    if isinstance(out, torch.Tensor):
        return out.detach()
    if isinstance(out, (list, tuple)):
        return type(out)(_detach(o) for o in out)
    return out
