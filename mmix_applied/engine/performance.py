"""Speed options of the engine: compile, precision and memory layout, and the data loader's pace.

- ``train.precision: auto`` resolves to ``bf16-mixed`` on a CUDA GPU that supports bf16, else
  ``32``; ``train.channels_last: auto`` to ``true`` on a CUDA GPU for a model with 2D/3D
  convolutions, else ``false``. The resolved values replace ``auto`` in the config (so the run's
  ``config.yaml`` records them) and are logged.
- ``train.compile: true`` compiles the model in place (``nn.Module.compile``: parameter names and
  checkpoints stay those of the eager model) once, after the mixer is attached, so the mixer stays
  the model's router and Dynamo compiles its routing once per point.
- Loader workers set OpenCV's threads to 0 (each worker is one of many processes) and keep
  Lightning's worker seeding; persistent workers learn each new epoch through shared memory, so
  per-epoch augmentation seeds stay exact. :class:`LoaderPace` warns once when the training step
  waits on its next batch.
"""

from __future__ import annotations

import os
import time
import warnings
from typing import Any

import torch
from lightning.fabric.utilities.seed import pl_worker_init_function
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info
from torch import nn
from torch.utils.data import Dataset

from mmix_applied.errors import MmixWarning

__all__ = ["EpochSyncedDataset", "LoaderPace", "RestartStaleLoader", "compile_model", "convert_memory_format",
           "resolve_speed_options", "uses_cuda", "worker_init"]

def uses_cuda(train: Any) -> bool:
    """Whether ``train.accelerator`` (``auto``, ``gpu``, ``cuda``...) trains on a CUDA GPU here."""
    accelerator = str(train.accelerator).lower()
    if accelerator in ("gpu", "cuda"):
        return torch.cuda.is_available()
    return accelerator == "auto" and torch.cuda.is_available()


def _conv_dims(model: nn.Module) -> set[int]:
    return {2 if isinstance(m, nn.Conv2d) else 3 for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Conv3d))}


def resolve_speed_options(train: Any, model: nn.Module | None = None) -> dict[str, Any]:
    """Replace ``auto`` in ``train.precision`` and ``train.channels_last`` by what it means here.

    Returns:
        ``{"precision": ..., "channels_last": ..., "why": ...}``, the resolved values (also written into ``train``).
    """
    cuda = uses_cuda(train)
    why = []
    if str(train.precision) == "auto":
        bf16 = cuda and torch.cuda.is_bf16_supported()
        train.precision = "bf16-mixed" if bf16 else "32"
        why.append(f"train.precision=auto -> {train.precision} ("
                   f"{'CUDA GPU with bf16' if bf16 else 'a CUDA GPU without bf16' if cuda else 'no CUDA GPU'})")
    if train.channels_last == "auto":
        convs = _conv_dims(model) if model is not None else set()
        train.channels_last = bool(cuda and convs)
        reason = "no CUDA GPU" if not cuda else "CUDA GPU, 2D/3D convolutions" if convs else "no 2D/3D convolutions"
        why.append(f"train.channels_last=auto -> {str(train.channels_last).lower()} ({reason})")
    if why:
        rank_zero_info("; ".join(why))
    return {"precision": train.precision, "channels_last": train.channels_last, "why": why}


def convert_memory_format(obj: Any) -> Any:
    """A 4D tensor in ``channels_last``, a 5D one in ``channels_last_3d``; a module's 4D/5D
    parameters and buffers likewise (in place); anything else as it is."""
    if isinstance(obj, nn.Module):
        for tensor in [*obj.parameters(), *obj.buffers()]:
            if tensor.dim() in (4, 5):
                tensor.data = convert_memory_format(tensor.data)
        return obj
    if isinstance(obj, torch.Tensor) and obj.dim() == 4:
        return obj.contiguous(memory_format=torch.channels_last)
    if isinstance(obj, torch.Tensor) and obj.dim() == 5:
        return obj.contiguous(memory_format=torch.channels_last_3d)
    return obj


def compile_model(model: nn.Module, *, mode: str = "default", backend: str = "inductor") -> nn.Module:
    """Compile ``model`` in place (``nn.Module.compile``), after its mixer is attached.

    The model object, its parameter names and its ``state_dict`` keys stay as they are. Dynamo
    flags the model needs are set: ``allow_rnn`` for recurrent layers (the CRNN's LSTM).

    Args:
        model: The (mixed) model.
        mode: ``default``, ``reduce-overhead`` or ``max-autotune`` (``torch.compile``'s mode).
        backend: ``torch.compile``'s backend (``eager`` compiles nothing: Dynamo only, for tests).
    """
    import torch._dynamo

    if any(isinstance(m, nn.RNNBase) for m in model.modules()):
        torch._dynamo.config.allow_rnn = True
    model.compile(backend=backend, mode=None if mode == "default" or backend != "inductor" else mode)
    return model


def worker_init(worker_id: int) -> None:
    """A DataLoader worker's start: OpenCV single-threaded (0 threads), then Lightning's seeding.

    Lightning's ``seed_everything(workers=True)`` installs its own worker seeding only on loaders
    without a ``worker_init_fn``; this one calls it, so workers are seeded as before.
    """
    try:
        import cv2
    except ImportError:  # pragma: no cover - OpenCV comes with albumentations
        cv2 = None
    if cv2 is not None:
        cv2.setNumThreads(0)
    if os.environ.get("PL_SEED_WORKERS") == "1":
        pl_worker_init_function(worker_id)


class EpochSyncedDataset(Dataset):
    """A training data set seen by persistent workers: the epoch travels through shared memory.

    A persistent worker keeps the copy of the data set it was started with, so a ``set_epoch`` in
    the main process would never reach it. This wrapper holds the epoch in a shared tensor and
    calls the wrapped data set's ``set_epoch`` inside the worker when it changes.

    Args:
        dataset: The data set (with ``set_epoch``).
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset
        self._shared = torch.zeros((), dtype=torch.int64).share_memory_()
        self._seen = 0

    def set_epoch(self, epoch: int) -> None:
        """Tell the data set (here and in every worker) the current epoch."""
        self._shared.fill_(int(epoch))
        self.dataset.set_epoch(int(epoch))
        self._seen = int(epoch)

    def __getitem__(self, index: int) -> Any:
        epoch = int(self._shared)
        if epoch != self._seen:
            self.dataset.set_epoch(epoch)
            self._seen = epoch
        return self.dataset[index]

    def __len__(self) -> int:
        return len(self.dataset)

    def __getattr__(self, name: str) -> Any:
        if name == "dataset":  # during unpickling, before __dict__ is filled
            raise AttributeError(name)
        return getattr(self.dataset, name)


class RestartStaleLoader(Callback):
    """Restarts a training iterator whose workers prefetched another epoch's order.

    Lightning creates the training iterator when it first sizes the loader (for the schedule's
    step count, in ``configure_optimizers``), before a resumed run's epoch is restored, and reuses
    it for the resumed epoch. Without workers nothing is drawn early; with workers the first
    batches are prefetched at once, in epoch 0's order. At the epoch start this checks the
    sampler's epoch against the one its iterator began with and, if they differ, starts it again.
    """

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Restart the training iterator if it was started for another epoch."""
        fetcher = getattr(trainer.fit_loop, "_data_fetcher", None)
        loader = trainer.train_dataloader
        sampler = getattr(loader, "sampler", None)
        started = getattr(sampler, "iter_epoch", None)
        if fetcher is None or getattr(loader, "num_workers", 0) == 0 or started is None:
            return
        if started != sampler.epoch:
            iter(fetcher)


class LoaderPace(Callback):
    """Warns once when the training step waits on the data loader.

    Over steps 2 to ``steps + 1`` of each epoch (the first batch waits for workers to start; an
    epoch shorter than that is judged at its end if it measured at least 5 steps), it times the
    gap between one step's end and the next step's start (the wait for the next batch) against the
    step itself. When the median wait is more than ``tolerance`` of the median step, it warns once
    with both figures and the fix (more ``data.num_workers``).

    Args:
        steps: Steps measured per epoch (0: off).
        tolerance: Largest acceptable ratio of the median wait to the median step time.
        min_wait_s: Waits shorter than this are never reported (Lightning's own work between steps).
        num_workers: The loader's workers, for the message.
    """

    def __init__(self, *, steps: int = 20, tolerance: float = 0.2, min_wait_s: float = 0.005,
                 num_workers: int = 0) -> None:
        self.steps, self.tolerance, self.num_workers = int(steps), float(tolerance), int(num_workers)
        self.min_wait_s = float(min_wait_s)
        self.warned = False
        self.measured: dict[str, float] | None = None
        self._reset()

    def _reset(self) -> None:
        self._start = self._end = None
        self._done = False
        self._waits: list[float] = []
        self._steps: list[float] = []

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Start measuring this epoch."""
        self._reset()

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        """Note the wait since the previous step ended."""
        now = time.perf_counter()
        if self._end is not None and not self._done:
            self._waits.append(now - self._end)
        self._start = now

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        """Note the step time; judge once ``steps`` steps (or the epoch's last) are measured."""
        now = time.perf_counter()
        if self.warned or self._done or self.steps <= 0 or self._start is None:
            return
        if len(self._waits) > len(self._steps):
            self._steps.append(now - self._start)
        self._end = now
        last = batch_idx + 1 >= trainer.num_training_batches
        if len(self._steps) >= self.steps or (last and len(self._steps) >= min(self.steps, 5)):
            self._done = True
            self._judge()

    def _judge(self) -> None:
        wait, step = _median(self._waits), _median(self._steps)
        self.measured = {"wait_s": wait, "step_s": step, "steps": float(len(self._steps))}
        if step > 0 and wait > self.tolerance * step and wait > self.min_wait_s:
            self.warned = True
            cpus = os.cpu_count() or 1
            warnings.warn(
                f"the training loader cannot keep up with the step: over {len(self._steps)} steps the median wait "
                f"for the next batch was {wait * 1e3:.1f} ms against a median step of {step * 1e3:.1f} ms "
                f"({wait / step:.0%} of the step) with data.num_workers={self.num_workers}. Raise data.num_workers "
                f"(this machine has {cpus} CPUs), or lighten the augmentation.",
                MmixWarning,
                stacklevel=2,
            )


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2] if ordered else 0.0
