"""The Lightning engine on a tiny timm model and a few MNIST digits: run directory, unmixed
validation, mixing schedule, non-finite losses, atomic checkpoints, backbone freezing."""

import csv
import json

import pytest
import torch

from mmix_applied.config import load_config
from mmix_applied.engine import (
    AtomicCheckpointIO,
    CheckpointError,
    MixupModule,
    NonFiniteLossError,
    build_mixer,
    fit,
    load_checkpoint,
)
from tests.helpers import ROOT

CONFIG = ROOT / "configs" / "classification.yaml"


def tiny(tmp_path, *extra, name="t"):
    return load_config(CONFIG, [
        "model.name=test_resnet", "train.max_epochs=2", "train.limit_train_batches=2", "train.limit_val_batches=1",
        "train.limit_test_batches=1", "train.limit_predict_batches=1", "data.labels_per_class=2",
        "data.batch_size=8", "data.eval_batch_size=16", "train.accelerator=cpu", "train.devices=1",
        "train.enable_progress_bar=false", "train.loggers=[csv]", "train.log_every_n_steps=1",
        f"run.dir={tmp_path}", f"run.name={name}", *extra])


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_fit_run_directory_and_unmixed_validation(tmp_path):
    cfg = tiny(tmp_path, "mix.off_last_epochs=1", "scheduler.warmup_epochs=0")
    run = fit(cfg)
    assert run == tmp_path / "t"
    assert load_config(run / "config.yaml").mix.off_last_epochs == 1
    summary = json.loads((run / "ranks" / "rank0.json").read_text())
    # 2 epochs x 2 batches; mixing is off in the last epoch
    assert summary["global_step"] == 4 and summary["mixed_steps"] == 2 and summary["samples_seen"] == 32
    rows = _rows(run / "logs" / "metrics.csv")
    val = [r for r in rows if r.get("val/nll")]
    assert len(val) == 2 and all(r["val/acc"] and r["val/ece"] and r["val/brier"] for r in val)
    mixed = [float(r["train/mixed"]) for r in rows if r.get("train/mixed")]
    assert mixed == [1.0, 0.0]
    ckpt = load_checkpoint(run / "checkpoints" / "last.ckpt")
    assert ckpt["epoch"] == 1 and ckpt["mmix_mixers"]["model"]["state"]["generator"].dtype == torch.uint8
    # val/nll of the last epoch is an UNMIXED pass: recompute it by hand from the saved weights
    module = MixupModule(cfg, __import__("mmix_applied.tasks.classification", fromlist=["x"]).ClassificationRecipe(cfg))
    module.load_state_dict(ckpt["state_dict"])
    module.eval()
    x, y = next(iter(module.recipe.build_datamodule().val_dataloader()))
    with torch.no_grad():
        nll = torch.nn.functional.cross_entropy(module.model(x), y)
    assert float(val[-1]["val/nll"]) == pytest.approx(nll.item(), rel=1e-4)


def test_variants_build_the_right_mixer(tmp_path):
    from mmix_applied.tasks.classification import ClassificationRecipe

    for variant, expected in (("none", None), ("input", ["input"])):
        cfg = tiny(tmp_path, f"mix.variant={variant}")
        model = ClassificationRecipe(cfg).build_model()
        mixer = build_mixer(model, cfg)
        assert (mixer.points if mixer else None) == expected
    cfg = tiny(tmp_path, "mix.points=[input, layer2]", "mix.prob=0.5", "mix.alpha=0.4")
    mixer = build_mixer(ClassificationRecipe(cfg).build_model(), cfg)
    assert mixer.points == ["input", "layer2"] and mixer.prob == 0.5 and mixer.alpha == 0.4
    mixer.close()


def _nan_inputs(monkeypatch):
    from mmix_applied.tasks.classification import ClassificationRecipe

    monkeypatch.setattr(ClassificationRecipe, "split_batch", lambda self, b: (b[0] * float("nan"), b[1]))


def test_nonfinite_loss_stops_naming_step_and_fix(tmp_path, monkeypatch):
    _nan_inputs(monkeypatch)
    with pytest.raises(NonFiniteLossError) as err:
        fit(tiny(tmp_path, "train.limit_val_batches=0"))
    msg = str(err.value)
    assert "global step 0" in msg and "optim.lr" in msg and "train.precision" in msg and "nonfinite_loss=skip" in msg


def test_nonfinite_loss_skip_counts_and_logs(tmp_path, monkeypatch):
    _nan_inputs(monkeypatch)
    run = fit(tiny(tmp_path, "train.limit_val_batches=0", "train.max_epochs=1", "train.nonfinite_loss=skip"))
    summary = json.loads((run / "ranks" / "rank0.json").read_text())
    assert summary["skipped_steps"] == 2
    logged = [float(r["train/skipped_steps"]) for r in _rows(run / "logs" / "metrics.csv") if r.get("train/skipped_steps")]
    assert logged and logged[-1] == 2.0
    assert load_checkpoint(run / "checkpoints" / "last.ckpt")["mmix"]["skipped_steps"] == 2


def test_backbone_freeze_and_lower_backbone_lr(tmp_path):
    import lightning.pytorch as pl

    from mmix_applied.tasks.classification import ClassificationRecipe

    cfg = tiny(tmp_path, "train.max_epochs=1", "train.limit_val_batches=0", "model.freeze_backbone_epochs=1",
               "model.backbone_lr_mult=0.1", "scheduler.name=none", "optim.lr=0.01", "mix.variant=none")
    run = fit(cfg)
    pl.seed_everything(cfg.seed, verbose=False)
    init = ClassificationRecipe(cfg).build_model().state_dict()
    state = load_checkpoint(run / "checkpoints" / "last.ckpt")
    trained = {k.removeprefix("model."): v for k, v in state["state_dict"].items() if k.startswith("model.")}
    assert torch.equal(trained["conv1.0.weight"], init["conv1.0.weight"])
    assert torch.equal(trained["layer2.0.conv1.weight"], init["layer2.0.conv1.weight"])
    assert not torch.equal(trained["fc.weight"], init["fc.weight"])
    lrs = sorted({g["lr"] for g in state["optimizer_states"][0]["param_groups"]})
    assert lrs == pytest.approx([0.001, 0.01])


def test_atomic_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}}, path)

    def dying_save(obj, fh, *a, **k):
        fh.write(b"PK\x03\x04 partial")
        raise KeyboardInterrupt("killed mid-save")

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"state_dict": {"w": torch.zeros(3)}}, path)
    monkeypatch.undo()
    assert torch.equal(io.load_checkpoint(path)["state_dict"]["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_corrupt_or_unsafe_checkpoint_gives_clear_error(tmp_path):
    good = tmp_path / "good.ckpt"
    torch.save({"state_dict": {"w": torch.arange(1000.0)}}, good)
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="truncated.ckpt.*truncated, corrupt"):
        load_checkpoint(truncated)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    unsafe = tmp_path / "unsafe.ckpt"
    torch.save({"x": Evil()}, unsafe)
    with pytest.raises(CheckpointError, match="unsafe"):
        load_checkpoint(unsafe)
    with pytest.raises(FileNotFoundError, match="missing.ckpt"):
        load_checkpoint(tmp_path / "missing.ckpt")


def test_fit_runs_with_network_blocked(tmp_path, monkeypatch):
    import socket

    def refuse(*args, **kwargs):
        raise OSError("network access attempted during a fit")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    run = fit(tiny(tmp_path, "train.max_epochs=1", "train.loggers=[csv, tensorboard]"))
    assert (run / "checkpoints" / "last.ckpt").is_file() and any((run / "tb").iterdir())


def test_precision_and_accumulation_pass_through(tmp_path):
    dtypes = {}
    for precision in ("bf16-mixed", "32"):
        seen: set = set()
        handle = torch.nn.modules.module.register_module_forward_hook(
            lambda module, args, out, seen=seen: seen.add(out.dtype) if isinstance(module, torch.nn.Conv2d) else None)
        try:
            run = fit(tiny(tmp_path / precision, "train.max_epochs=1", f"train.precision={precision}",
                           "train.accumulate_grad_batches=2", "train.gradient_clip_val=1.0",
                           "train.limit_val_batches=0"))
        finally:
            handle.remove()
        dtypes[precision] = seen
        ckpt = load_checkpoint(run / "checkpoints" / "last.ckpt")
        assert ckpt["global_step"] == 1  # 2 batches accumulated into one optimizer step
        assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())
        assert all(v.dtype != torch.bfloat16 for v in ckpt["state_dict"].values())  # master weights stay fp32
    assert dtypes["bf16-mixed"] == {torch.bfloat16}  # bf16 autocast was applied to the convolutions
    assert dtypes["32"] == {torch.float32}  # control: without it they run in float32


def test_the_sigterm_handler_of_a_built_trainer_runs_no_collective(tmp_path, monkeypatch):
    """A collective inside a signal handler interleaves with one in progress (a checkpoint's all-gather)
    and hangs every DDP rank; the engine's trainer forwards the signal and sets the flag instead."""
    import signal

    import lightning.pytorch as pl
    import torch.distributed as dist
    from lightning.pytorch.trainer.connectors.signal_connector import _SignalConnector

    from mmix_applied.engine import get_recipe
    from mmix_applied.engine.runner import build_trainer

    config = tiny(tmp_path, "train.precision=32")  # build_trainer takes resolved speed options (fit resolves them)
    trainer = build_trainer(config, tmp_path / "run", get_recipe(config.recipe)(config), stage="fit")
    broadcasts = []
    monkeypatch.setattr(pl.Trainer, "world_size", property(lambda self: 2))  # as under DDP
    monkeypatch.setattr(dist, "is_available", lambda: True)
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "broadcast", lambda *args, **kwargs: broadcasts.append(args))
    connector = trainer._signal_connector
    _SignalConnector._sigterm_notifier_fn(connector, signal.SIGTERM, None)  # the control: Lightning's own
    assert len(broadcasts) == 1
    connector.received_sigterm = False
    connector._sigterm_notifier_fn(signal.SIGTERM, None)  # what register_signal_handlers installs
    assert len(broadcasts) == 1 and trainer.received_sigterm
