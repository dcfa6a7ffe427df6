"""The pruning callback reports the figure the trial is judged on, at the step of its seed and epoch:
the validation NLL at the best temperature (checked against a brute-force search over T), or a
logged metric; it prunes when the pruner says so and leaves no hook behind."""

import math

import optuna
import pytest
import torch
from torch import nn

from mmix_applied.metrics.temperature import TemperatureScaler
from mmix_applied.tune.pruning import ValidationPruning


class Recipe:  # what the callback asks of a recipe
    name = "stub"

    def calibration_scaler(self):
        return TemperatureScaler()

    def split_batch(self, batch):
        return batch

    def update_metrics(self, metrics, output, target):
        metrics.update(output, target)


class Module(nn.Module):
    def __init__(self):
        super().__init__()
        self.model, self.recipe = nn.Linear(4, 3), Recipe()


class Trainer:
    sanity_checking, current_epoch, callback_metrics = False, 3, {}


class Trial:
    def __init__(self):
        self.reports, self.prune = [], False

    def report(self, value, step):
        self.reports.append((value, step))

    def should_prune(self):
        return self.prune


def _epoch(callback, module, batches):
    trainer = Trainer()
    callback.on_validation_epoch_start(trainer, module)
    for i, (x, y) in enumerate(batches):
        with torch.no_grad():
            module.model(x)
        callback.on_validation_batch_end(trainer, module, None, (x, y), i)
    callback.on_validation_end(trainer, module)


def _best_nll(z, y):
    """min over T of the mean NLL of z / T: a log grid, then a finer one around its best point."""
    grid = torch.logspace(math.log10(0.05), math.log10(20.0), 4001, dtype=torch.float64)
    nll = torch.stack([nn.functional.cross_entropy(z.double() / t, y) for t in grid])
    k = int(nll.argmin())
    fine = torch.linspace(float(grid[max(k - 1, 0)]), float(grid[min(k + 1, 4000)]), 2001, dtype=torch.float64)
    return float(min(nn.functional.cross_entropy(z.double() / t, y) for t in fine))


def test_scaled_nll_is_reported_at_the_seeds_step_then_pruned():
    torch.manual_seed(0)
    module, trial = Module(), Trial()
    batches = [(torch.randn(16, 4), torch.randint(0, 3, (16,))) for _ in range(3)]
    callback = ValidationPruning(trial, figure="val/nll_scaled", step_offset=40)
    _epoch(callback, module, batches)
    with torch.no_grad():
        z = torch.cat([module.model(x) for x, _ in batches])
    y = torch.cat([y for _, y in batches])
    [(value, step)] = trial.reports
    assert step == 43 and value == pytest.approx(_best_nll(z, y), abs=1e-6)
    assert value < nn.functional.cross_entropy(z, y).item()  # better than the raw NLL (T = 1)
    assert not module.model._forward_hooks
    trial.prune = True
    with pytest.raises(optuna.TrialPruned, match="pruned at epoch 3 .step 43.: val/nll_scaled"):
        _epoch(callback, module, batches)
    assert not module.model._forward_hooks


def test_a_logged_metric_is_read_from_the_trainer():
    trial = Trial()
    callback = ValidationPruning(trial, figure="val/mean_dice")
    trainer = Trainer()
    trainer.callback_metrics = {"val/mean_dice": torch.tensor(0.625)}
    callback.on_validation_epoch_start(trainer, Module())
    callback.on_validation_end(trainer, Module())
    assert trial.reports == [(0.625, 3)]


def test_epochs_before_from_epoch_report_nothing():
    trial, module = Trial(), Module()
    callback = ValidationPruning(trial, figure="val/nll_scaled", from_epoch=4)  # Trainer's epoch is 3
    _epoch(callback, module, [(torch.randn(8, 4), torch.randint(0, 3, (8,)))])
    assert trial.reports == [] and not module.model._forward_hooks
