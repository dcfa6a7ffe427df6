"""Run by tests/test_lightning.py under Lightning DDP (2 CPU processes, gloo):
``python mixer_checkpoint_ddp.py {full|half|resume} OUT``. Each rank's mixer draws its own
plans; at the end each rank saves its generator state and the weights to OUT/{mode}_rank{r}.pt."""

import sys
from pathlib import Path

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from mmix_applied import ManifoldMixup
from mmix_applied.lightning import MixerCheckpoint


class RankModule(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
        self.mixer = ManifoldMixup(self.net, points=["input", "1"], seed=0)

    def setup(self, stage: str) -> None:
        self.mixer.generator.manual_seed(100 + self.global_rank)  # each rank its own stream

    def training_step(self, batch, _index):
        x, y = batch
        out, plan = self.mixer(x)
        return plan.lam * F.cross_entropy(out, y) + (1 - plan.lam) * F.cross_entropy(out, y[plan.perm])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.5)


def main(mode: str, out: Path) -> None:
    g = torch.Generator().manual_seed(1)
    data = TensorDataset(torch.randn(24, 6, generator=g), torch.randint(0, 3, (24,), generator=g))
    module = RankModule()
    trainer = pl.Trainer(max_epochs=1 if mode == "half" else 2, accelerator="cpu", devices=2, strategy="ddp",
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[MixerCheckpoint()])
    trainer.fit(module, DataLoader(data, batch_size=4, shuffle=False),
                ckpt_path=out / "half.ckpt" if mode == "resume" else None)
    if mode == "half":
        trainer.save_checkpoint(out / "half.ckpt")
    weights = torch.cat([p.detach().flatten() for p in module.net.parameters()])
    torch.save({"generator": module.mixer.generator.get_state(), "weights": weights},
               out / f"{mode}_rank{trainer.global_rank}.pt")


if __name__ == "__main__":
    import os
    import traceback
    try:
        main(sys.argv[1], Path(sys.argv[2]))
    except BaseException:
        Path(sys.argv[2], f"error_{os.environ.get('LOCAL_RANK', '0')}.txt").write_text(traceback.format_exc())
        raise
