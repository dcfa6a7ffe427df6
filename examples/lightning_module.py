"""Manifold Mixup in your own LightningModule, resumed exactly with ``MixerCheckpoint``.

The module is an ordinary LightningModule: the mixer is made once in ``__init__`` on the model it
trains, ``training_step`` draws a plan and runs the forward inside it, validation runs the model
as it is (``eval()`` never mixes). The mixer's generator is not a tensor of the model, so without
help a resumed run would draw the plans of the first epoch again; the ``MixerCheckpoint``
callback saves and restores every mixer of the module in Lightning's checkpoints (per rank under
DDP). Data: scikit-learn's 1,797 handwritten digits (8x8); nothing is downloaded.

    python examples/lightning_module.py --epochs 2 --out /tmp/run            # train 2 epochs
    python examples/lightning_module.py --epochs 1 --out /tmp/split          # stop after 1 ...
    python examples/lightning_module.py --epochs 2 --out /tmp/split --resume  # ... and continue

The last line prints ``weights_sum`` and ``mixer_draws``; the resumed run's equal the straight run's.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import lightning.pytorch as pl
import timm
import torch
import torch.nn.functional as F

from mmix_applied import ManifoldMixup
from mmix_applied.adapters import Classification
from mmix_applied.data.sampling import SeededRandomSampler
from mmix_applied.lightning import MixerCheckpoint


class DigitsModule(pl.LightningModule):
    """A timm classifier trained with manifold mixup through the ``Classification`` adapter."""

    def __init__(self, model_name: str = "test_resnet", alpha: float = 2.0, lr: float = 2e-3, seed: int = 0) -> None:
        super().__init__()
        self.model = timm.create_model(model_name, num_classes=10, in_chans=1)
        self.mixer = ManifoldMixup(self.model, alpha=alpha, seed=seed)  # once, here: not in setup()
        self.adapter = Classification(10)
        self.lr = lr

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        plan = self.mixer.sample(len(x), x.device, input_shape=x.shape)
        with self.mixer.apply(plan):
            out = self.model(x)
        loss = self.adapter.loss(out, y, plan)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        out = self.model(x)  # eval mode: the plain model
        self.log("val_accuracy", (out.argmax(1) == y).float().mean())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=self.lr)


def digits(limit: int | None) -> tuple[torch.utils.data.Dataset, torch.utils.data.Dataset]:
    """scikit-learn's digits, 16x16, split 80/20."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    x = F.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False)
    y = torch.tensor(data.target, dtype=torch.long)
    if limit:
        x, y = x[:limit], y[:limit]
    n_val = max(len(x) // 5, 1)
    return (torch.utils.data.TensorDataset(x[n_val:], y[n_val:]), torch.utils.data.TensorDataset(x[:n_val], y[:n_val]))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="test_resnet", help="any timm model name")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--limit", type=int, default=None, help="use only the first N images")
    parser.add_argument("--out", default="runs/lightning_example", help="checkpoint folder")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/last.ckpt")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-mixer-checkpoint", action="store_true",
                        help="leave MixerCheckpoint out (to see a resumed run draw other plans)")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")

    pl.seed_everything(args.seed, verbose=False)
    train, val = digits(args.limit)
    # an order that depends on (seed, epoch) alone, so the resumed epoch sees the batches it would have seen
    # (a shuffling loader with a generator seeded once replays epoch 0's order after a resume)
    sampler = SeededRandomSampler(train, seed=args.seed)
    train_loader = torch.utils.data.DataLoader(train, batch_size=args.batch_size, sampler=sampler, drop_last=True)
    val_loader = torch.utils.data.DataLoader(val, batch_size=args.batch_size)
    module = DigitsModule(args.model, seed=args.seed)
    saver = pl.callbacks.ModelCheckpoint(dirpath=args.out, filename="last", save_top_k=1, monitor=None,
                                         enable_version_counter=False)
    trainer = pl.Trainer(max_epochs=args.epochs, accelerator="cpu", devices=1, logger=False,
                         enable_progress_bar=False, enable_model_summary=False, deterministic=True,
                         callbacks=[saver] if args.no_mixer_checkpoint else [MixerCheckpoint(), saver])
    ckpt = str(Path(args.out) / "last.ckpt") if args.resume else None
    trainer.fit(module, train_loader, val_loader, ckpt_path=ckpt)
    weights = sum(float(p.detach().double().sum()) for p in module.parameters())
    draws = torch.rand(1, generator=module.mixer.generator).item()  # the mixer's next draw
    print(f"epochs {trainer.current_epoch} val_accuracy {float(trainer.callback_metrics['val_accuracy']):.4f}")
    print(f"weights_sum {weights:.10f} mixer_draws {draws:.10f}")
    module.mixer.close()


if __name__ == "__main__":
    main()
