"""Temperature scaling in the engine: fit one temperature per checkpoint after ``fit``, store it.

Mixed models come out underconfident (Verma et al., ICML 2019; our docs/evidence.md), so the
engine fits one temperature ``T`` on the validation split after training (Guo et al., ICML 2017,
through :class:`mmix_applied.metrics.temperature.TemperatureScaler`) for every checkpoint of the run
(``last.ckpt`` and the best ones, each for its own weights), writes it into the checkpoint
(``ckpt["mmix"]["temperature"]``, an atomic rewrite) and into ``run_dir/temperature.json``.
``test`` reports every calibration figure raw and divided by ``T``; ``predict`` writes
calibrated probabilities unless asked for raw ones.

The pass is one unmixed validation run per checkpoint on a single device (rank 0 only under
DDP, over the whole validation split), so every logit of the split is seen once. A fit the
validation split cannot support (all-correct, all-wrong, a single class, tied logits, or an
optimum on a bound: :attr:`~mmix_applied.metrics.temperature.TemperatureFit.degenerate`) is not
used: the checkpoint stores ``T = 1`` with ``temperature_note`` saying why (and
``temperature_fitted``, the value found), a ``CalibrationWarning`` says so, and ``test`` and
``compare`` print the note. A temperature of 0.05 fitted on 40 all-correct images made every
confidence 1.000000 and the scaled NLL 17 times the raw one. Recipes say how
their logits are scaled through :meth:`mmix_applied.engine.recipe.Recipe.calibration_scaler`
(``None``: no temperature, e.g. CTC, whose per-frame distributions are not one prediction).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import torch

from mmix_applied.engine.checkpoints import load_checkpoint
from mmix_applied.metrics.ood import ood_metrics, ood_scores
from mmix_applied.metrics.temperature import CalibrationWarning
from mmix_applied.utils.atomic import atomic_write, atomic_write_text

__all__ = ["calibrate_run", "calibration_reason", "fallback_note", "ood_figures", "read_temperature",
           "temperature_note"]

TEMPERATURE_FILE = "temperature.json"


def calibration_reason(config: Any, recipe: Any) -> str | None:
    """Why no temperature is fitted for this run (``None`` when one is)."""
    if recipe.calibration_scaler() is None:
        return (f"recipe {recipe.name!r} has no temperature (its outputs are not one class distribution per "
                "item; CTC decodes per-frame distributions into strings)")
    if not getattr(config.options, "calibrate", True):
        return "options.calibrate is false"
    if config.train.limit_val_batches == 0:
        return "no validation batches (train.limit_val_batches=0)"
    return None


def fallback_note(fit: Any) -> str | None:
    """The note stored when a fit is not used (``None``: the fit is used); ``fit`` is a ``TemperatureFit``."""
    if fit is None or not fit.degenerate:
        return None
    return f"fell back to T = 1 (raw probabilities): {fit.reason}"


def temperature_note(state: dict[str, Any]) -> str | None:
    """The fallback note a checkpoint carries (``ckpt["mmix"]["temperature_note"]``), or ``None``."""
    note = (state.get("mmix") or {}).get("temperature_note")
    return note if isinstance(note, str) and note else None


def _checkpoints(run_dir: Path) -> list[Path]:
    folder = run_dir / "checkpoints"
    return sorted(p for p in folder.glob("*.ckpt") if p.is_file()) if folder.is_dir() else []


def calibrate_run(config: Any, run_dir: Path, recipe: Any, module: Any, datamodule: Any,
                  *, build_trainer: Any) -> dict[str, Any]:
    """Fit a temperature for every checkpoint of ``run_dir``; write them into the checkpoints and the JSON.

    Args:
        config: The run's config.
        run_dir: The run directory (its ``checkpoints/*.ckpt`` are rewritten with the temperature).
        recipe: The recipe instance.
        module: The :class:`~mmix_applied.engine.module.MixupModule` that was trained.
        datamodule: The run's data module (its validation split is the fitting split).
        build_trainer: ``engine.runner.build_trainer`` (passed in: the runner imports this module).

    Returns:
        ``{"temperature": T of last.ckpt or None, "checkpoints": {name: T}, "positions": n,
        "reason": why none, "warnings": [...], "notes": {name: why T = 1 was kept}, "fitted": {name:
        T found}}``; also written to ``run_dir/temperature.json`` when a temperature was fitted.
    """
    reason = calibration_reason(config, recipe)
    info: dict[str, Any] = {"temperature": None, "checkpoints": {}, "positions": 0, "reason": reason,
                            "warnings": [], "notes": {}, "fitted": {}}
    if reason is not None:
        return info
    seen: set[str] = set()
    for ckpt in _checkpoints(run_dir):
        scaler = recipe.calibration_scaler()
        module.__dict__["scaler"] = scaler
        try:
            trainer = build_trainer(config, run_dir, recipe, stage="test")
            trainer.validate(module, datamodule=datamodule, ckpt_path=str(ckpt), verbose=False)
        finally:
            module.__dict__["scaler"] = None
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", CalibrationWarning)
            fitted = float(scaler.fit())
        note = fallback_note(getattr(scaler, "last_fit", None))
        t = 1.0 if note is not None else fitted
        texts = [str(w.message) for w in caught if issubclass(w.category, CalibrationWarning)]
        if note is not None:
            texts = [f"temperature: {note}; the scaled figures equal the raw ones (fix the validation split: more "
                     "images, every class, not all correct)"]
        for text in texts:  # surface each distinct warning once (the same case repeats per checkpoint)
            if text not in seen:
                seen.add(text)
                info["warnings"].append(text)
                warnings.warn(f"{text} (temperature of {ckpt.name})", CalibrationWarning, stacklevel=2)
        state = load_checkpoint(ckpt)
        state.setdefault("mmix", {})["temperature"] = t
        state["mmix"]["temperature_positions"] = scaler.num_positions
        state["mmix"]["temperature_fitted"] = fitted
        state["mmix"]["temperature_note"] = note
        info["fitted"][ckpt.name] = fitted
        if note is not None:
            info["notes"][ckpt.name] = note
        atomic_write(ckpt, lambda fh, s=state: torch.save(s, fh))
        info["checkpoints"][ckpt.name] = t
        # the validation NLL raw and at T: the figures settings are chosen on (test figures are only reported)
        info.setdefault("val_nll", {})[ckpt.name] = scaler.nll(1.0)
        info.setdefault("val_nll_scaled", {})[ckpt.name] = scaler.nll(t)
        info["positions"] = max(info["positions"], scaler.num_positions)
    info["temperature"] = info["checkpoints"].get("last.ckpt")
    if info["checkpoints"]:
        atomic_write_text(run_dir / TEMPERATURE_FILE, json.dumps(
            {**info, "split": "validation", "fitted_by": "mmix_applied.metrics.temperature.TemperatureScaler"},
            indent=2, sort_keys=True))
    return info


def read_temperature(run_dir: str | Path) -> float | None:
    """The temperature of ``last.ckpt`` from ``run_dir/temperature.json`` (``None`` when absent)."""
    path = Path(run_dir) / TEMPERATURE_FILE
    if not path.is_file():
        return None
    value = json.loads(path.read_text()).get("temperature")
    return None if value is None else float(value)


@torch.no_grad()
def ood_figures(model: torch.nn.Module, inputs: torch.Tensor, in_scores: dict[str, list[torch.Tensor]], *,
                temperature: float | None, batch_size: int = 256) -> dict[str, float]:
    """Max-softmax AUROC and FPR95 of the test split against the OOD ``inputs``, raw and scaled.

    Args:
        model: The network (run in its current mode and device).
        inputs: ``(N, C, H, W)`` OOD images, preprocessed as the test images are.
        in_scores: ``{"raw": [...], "scaled": [...]}`` max-softmax scores of the test batches.
        temperature: The fitted temperature (``None``: raw figures only).
        batch_size: OOD images per forward pass.

    Returns:
        ``ood_auroc``, ``ood_fpr95`` (raw scores) and, with a temperature, ``ood_auroc_scaled``,
        ``ood_fpr95_scaled`` (scores of ``logits / T``).
    """
    device = next(model.parameters()).device
    logits = torch.cat([model(inputs[i:i + batch_size].to(device)).float().cpu()
                        for i in range(0, len(inputs), batch_size)])
    out: dict[str, float] = {}
    for kind, t in (("raw", 1.0), ("scaled", temperature)):
        if t is None or not in_scores.get(kind):
            continue
        found = ood_metrics(torch.cat(in_scores[kind]), ood_scores(logits, temperature=t))
        suffix = "" if kind == "raw" else "_scaled"
        out[f"ood_auroc{suffix}"], out[f"ood_fpr95{suffix}"] = found["auroc"], found["fpr95"]
    return out
