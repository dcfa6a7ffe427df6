"""Manifold Mixup in a MONAI-tutorial-style 3D segmentation loop.

The network is MONAI's own ``UNet``, unmodified. ``points="auto"`` puts a cut after each encoder
level, and the mixer mixes every tensor that crosses the cut, including the skip that MONAI's
``SkipConnection`` joins with a bare ``torch.cat``. The ``Segmentation`` adapter mixes the masks
with the same plan (soft one-hot targets) and computes cross-entropy plus a soft Dice. The data
are random spheres made by ``monai.data.create_test_image_3d``, as in MONAI's tutorials.

    python examples/monai_loop.py                     # 40 volumes of 64^3, 5 epochs
    python examples/monai_loop.py --size 16 --volumes 4 --epochs 1 --channels 4 8 16
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from monai.data import create_test_image_3d
from monai.metrics import DiceMetric
from monai.networks.nets import UNet

from mmix_applied import ManifoldMixup
from mmix_applied.adapters import Segmentation


def volumes(n: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` images ``(n, 1, size, size, size)`` and their masks of the same shape (0 or 1)."""
    rng = np.random.RandomState(seed)
    radii = {"rad_max": max(size // 4, 3), "rad_min": max(size // 16, 1)}
    pairs = [create_test_image_3d(size, size, size, num_seg_classes=1, channel_dim=0, random_state=rng, **radii)
             for _ in range(n)]
    images = torch.tensor(np.stack([p[0] for p in pairs]), dtype=torch.float32)
    masks = torch.tensor(np.stack([p[1] for p in pairs]), dtype=torch.long)
    return images, masks


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--volumes", type=int, default=40)
    parser.add_argument("--size", type=int, default=64, help="edge of each cubic volume")
    parser.add_argument("--channels", type=int, nargs="+", default=[16, 32, 64, 128, 256])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--alpha", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    images, masks = volumes(args.volumes, args.size, args.seed)
    n_val = max(args.volumes // 4, 1)
    train = torch.utils.data.TensorDataset(images[n_val:], masks[n_val:])
    loader = torch.utils.data.DataLoader(train, batch_size=args.batch_size, shuffle=True)

    model = UNet(spatial_dims=3, in_channels=1, out_channels=2, channels=args.channels,
                 strides=(2,) * (len(args.channels) - 1), num_res_units=2).to(args.device)
    mixer = ManifoldMixup(model, points="auto", alpha=args.alpha, seed=args.seed)
    adapter = Segmentation(2)  # masks (B, 1, D, H, W) of class indices, as MONAI loads them
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    dice = DiceMetric(include_background=False)
    how = "traced graph (skips mixed)" if mixer.trace_error is None else "hooks (skips NOT mixed)"
    print(f"mix points {mixer.points} via {how}")

    for epoch in range(args.epochs):
        model.train()
        for inputs, labels in loader:
            inputs, labels = inputs.to(args.device), labels.to(args.device)
            plan = mixer.sample(len(inputs), inputs.device, input_shape=inputs.shape)
            with mixer.apply(plan):
                outputs = model(inputs)
            loss = adapter.loss(outputs, labels, plan)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            pred = model(images[:n_val].to(args.device)).argmax(dim=1, keepdim=True).cpu()
        dice(torch.cat([pred == 0, pred == 1], dim=1).float(),
             torch.cat([masks[:n_val] == 0, masks[:n_val] == 1], dim=1).float())
        print(f"epoch {epoch} train_loss {loss.item():.4f} val_dice {dice.aggregate().item():.4f}")
        dice.reset()
    mixer.close()


if __name__ == "__main__":
    main()
