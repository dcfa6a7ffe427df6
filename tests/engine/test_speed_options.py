"""The engine's speed options: a compiled fit (no graph break, one graph per point, exact
resume), precision/channels_last ``auto`` resolved and saved, and the slow-loader warning."""

import shutil
import time
import warnings
from pathlib import Path

import pytest
import torch
import torch._dynamo
from torch._dynamo.utils import counters

from mmix_applied.config import load_config
from mmix_applied.engine import fit, load_checkpoint
from mmix_applied.engine.datamodule import DataModule
from mmix_applied.engine.performance import EpochSyncedDataset, LoaderPace, resolve_speed_options
from tests.helpers import ROOT

CONFIG = ROOT / "configs" / "classification.yaml"
POINTS = ["input", "layer1", "layer2"]


def tiny(root, name, *extra):
    return load_config(CONFIG, [
        "model.name=test_resnet", "train.max_epochs=2", "train.limit_train_batches=3", "train.limit_val_batches=1",
        "data.labels_per_class=3", "data.batch_size=8", "data.eval_batch_size=16", "train.accelerator=cpu",
        "train.devices=1", "train.deterministic=true", "train.enable_progress_bar=false", "train.loggers=[]",
        "scheduler.warmup_epochs=0", f"run.dir={root}", f"run.name={name}", *extra])


def _weights(run):
    return load_checkpoint(Path(run) / "checkpoints" / "last.ckpt")["state_dict"]


@pytest.fixture
def fresh_dynamo():
    torch._dynamo.reset()
    counters.clear()
    yield
    torch._dynamo.reset()


def _no_break_no_fallback():
    assert dict(counters["graph_break"]) == {}
    assert not any("recompile limit" in key for key in counters["unimplemented"])
    assert counters["frames"]["total"] == counters["frames"]["ok"] > 0


def test_compiled_fit_mixes_through_the_compiled_model_with_one_graph_per_point(tmp_path, fresh_dynamo):
    run = fit(tiny(tmp_path, "fast", "train.compile=true", "train.compile_backend=eager", "mix.points=[input, layer1]",
                   "train.max_epochs=1", "train.limit_train_batches=3", "train.limit_val_batches=0"))
    ckpt = load_checkpoint(run / "checkpoints" / "last.ckpt")
    assert ckpt["mmix"]["mixed_steps"] == 3 and not any(k.startswith("_orig_mod") for k in ckpt["state_dict"])
    _no_break_no_fallback()
    assert 1 <= counters["stats"]["unique_graphs"] <= 2, dict(counters["stats"])  # at most one per point
    assert load_config(run / "config.yaml").train.compile is True


@pytest.mark.slow
def test_compiled_fit_mixes_has_no_graph_break_one_graph_per_point_and_resumes_exactly(tmp_path, fresh_dynamo):
    compiled = ["train.compile=true", "train.compile_backend=eager", f"mix.points=[{', '.join(POINTS)}]",
                "train.save_top_k=-1"]
    full = fit(tiny(tmp_path, "full", *compiled))
    ckpt = load_checkpoint(full / "checkpoints" / "last.ckpt")
    assert ckpt["mmix"]["mixed_steps"] == 6  # every step mixed, through the compiled model
    assert not any(k.startswith("_orig_mod") for k in ckpt["state_dict"])  # the eager model's names
    _no_break_no_fallback()
    # one graph per mix point, plus the eval-mode forward of validation (the training flag is guarded)
    assert 1 <= counters["stats"]["unique_graphs"] <= len(POINTS) + 1, dict(counters["stats"])

    resumed = tmp_path / "resumed" / "checkpoints"
    resumed.mkdir(parents=True)
    shutil.copy(full / "checkpoints" / "epoch000.ckpt", resumed / "last.ckpt")
    fit(tiny(tmp_path, "resumed", *compiled), resume="last")
    a, b = _weights(full), _weights(tmp_path / "resumed")
    assert max((a[k].double() - b[k].double()).abs().max().item() for k in a) == 0.0
    eager = _weights(fit(tiny(tmp_path, "eager", "train.save_top_k=-1", f"mix.points=[{', '.join(POINTS)}]")))
    assert max((a[k].double() - eager[k].double()).abs().max().item() for k in a) < 1e-4  # same training


def test_auto_precision_and_channels_last_resolve_on_cpu_and_are_saved(tmp_path):
    cfg = tiny(tmp_path, "auto", "train.max_epochs=1", "train.limit_train_batches=1", "train.limit_val_batches=0")
    assert cfg.train.precision == "auto" and cfg.train.channels_last == "auto"
    run = fit(cfg)
    saved = load_config(run / "config.yaml")
    assert saved.train.precision == "32" and saved.train.channels_last is False  # CPU: full precision, NCHW
    train = type(cfg.train)(accelerator="gpu", precision="auto", channels_last="auto")
    resolved = resolve_speed_options(train, torch.nn.Conv2d(1, 1, 1))
    assert resolved["precision"] == ("bf16-mixed" if torch.cuda.is_available() and torch.cuda.is_bf16_supported()
                                     else "32")
    assert resolved["channels_last"] is torch.cuda.is_available()
    assert resolve_speed_options(type(cfg.train)(precision="16-mixed", channels_last=True))["precision"] == "16-mixed"


def _conv_layouts(tmp_path, name, channels_last):
    seen = []
    handle = torch.nn.modules.module.register_module_forward_hook(
        lambda m, args, out: seen.append(m.weight.is_contiguous(memory_format=torch.channels_last))
        if isinstance(m, torch.nn.Conv2d) and m.kernel_size != (1, 1) and m.in_channels > 1 else None)
    try:
        run = fit(tiny(tmp_path, name, f"train.channels_last={channels_last}", "train.max_epochs=1",
                       "train.limit_val_batches=0", "train.limit_train_batches=1"))
    finally:
        handle.remove()
    return run, seen


def test_channels_last_true_trains_the_model_in_channels_last(tmp_path):
    run, seen = _conv_layouts(tmp_path, "cl", "true")
    assert seen and all(seen)
    assert load_config(run / "config.yaml").train.channels_last is True
    _, seen = _conv_layouts(tmp_path, "nchw", "false")  # control: the default layout is not channels_last
    assert seen and not any(seen)


class _Slow(torch.utils.data.Dataset):
    def __init__(self, delay):
        self.delay = delay

    def __len__(self):
        return 64

    def __getitem__(self, i):
        time.sleep(self.delay)
        return torch.full((4,), float(i)), i % 2


def _pace_fit(delay):
    import lightning.pytorch as pl

    class Boring(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(4, 2)

        def training_step(self, batch, batch_idx):
            time.sleep(0.1)  # a 100 ms step: Lightning's own work between steps (~5-10 ms on a loaded CPU) stays under 20 %
            return torch.nn.functional.cross_entropy(self.layer(batch[0]), batch[1])

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    pace = LoaderPace(steps=5)
    data = DataModule({"train": _Slow(delay)}, batch_size=4)
    trainer = pl.Trainer(max_epochs=1, limit_train_batches=6, accelerator="cpu", logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         callbacks=[pace])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(Boring(), datamodule=data)
    return pace, [str(w.message) for w in caught if "cannot keep up" in str(w.message)]


def test_slow_loader_warns_once_with_figures_and_the_fix_and_a_fast_one_is_quiet():
    pace, messages = _pace_fit(0.05)  # 4 samples x 50 ms = 200 ms per batch against a 100 ms step
    assert len(messages) == 1 and pace.measured["wait_s"] > 0.15
    assert "data.num_workers=0" in messages[0] and "Raise data.num_workers" in messages[0] and " ms" in messages[0]
    pace, messages = _pace_fit(0.0)
    assert messages == [] and pace.measured is not None and pace.measured["wait_s"] < 0.2 * pace.measured["step_s"]


class _Epochs(torch.utils.data.Dataset):
    epoch = 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return 4

    def __getitem__(self, i):
        return self.epoch


def test_persistent_workers_see_each_new_epoch():
    data = DataModule({"train": _Epochs()}, batch_size=2, num_workers=1)
    loader = data.train_dataloader()
    assert isinstance(loader.dataset, EpochSyncedDataset) and loader.persistent_workers
    assert loader.worker_init_fn is not None
    seen = []
    for epoch in range(3):
        loader.dataset.set_epoch(epoch)  # what EpochToDataset does at each epoch start
        seen.append(sorted({int(v) for batch in loader for v in batch}))
    assert seen == [[0], [1], [2]]


@pytest.mark.slow
def test_resume_with_persistent_workers_is_exact_and_matches_a_run_without_workers(tmp_path):
    """Augmentation seeds and data order reach persistent workers, also in the first epoch after a resume."""
    opts = ["data.augment=light", "train.save_top_k=-1", "mix.prob=0.7"]
    full = fit(tiny(tmp_path, "full", *opts))  # no workers
    resumed = tmp_path / "resumed" / "checkpoints"
    resumed.mkdir(parents=True)
    shutil.copy(full / "checkpoints" / "epoch000.ckpt", resumed / "last.ckpt")
    fit(tiny(tmp_path, "resumed", *opts, "data.num_workers=1"), resume="last")
    a, b = _weights(full), _weights(tmp_path / "resumed")
    assert max((a[k].double() - b[k].double()).abs().max().item() for k in a) == 0.0


def test_compile_model_sets_the_dynamo_flags_a_recurrent_model_needs_and_keeps_state_dict_keys():
    from mmix_applied.engine.performance import compile_model

    before = torch._dynamo.config.allow_rnn
    try:
        torch._dynamo.config.allow_rnn = False
        conv = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3))
        keys = list(conv.state_dict())
        compile_model(conv, backend="eager")
        assert torch._dynamo.config.allow_rnn is False and list(conv.state_dict()) == keys  # no RNN: untouched
        compile_model(torch.nn.Sequential(torch.nn.LSTM(4, 4)), backend="eager")
        assert torch._dynamo.config.allow_rnn is True
    finally:
        torch._dynamo.config.allow_rnn = before
