"""Manifold Mixup in a plain PyTorch loop with a timm classifier.

The loop is the one a timm user already has: ``criterion(output, target)`` with timm's
``SoftTargetCrossEntropy``. Three lines change it: draw a plan, mix the targets with the
``Classification`` adapter (label smoothing goes there, not into the loss), and run the forward
inside ``mixer.apply(plan)``. Data: scikit-learn's 1,797 handwritten digits (8x8, shipped with
scikit-learn), scaled to 32x32; nothing is downloaded.

    python examples/plain_loop.py                     # resnet18, 5 epochs
    python examples/plain_loop.py --model test_resnet --epochs 1 --limit 64
"""

from __future__ import annotations

import argparse

import timm
import torch
import torch.nn.functional as F
from timm.loss import SoftTargetCrossEntropy

from mmix_applied import ManifoldMixup
from mmix_applied.adapters import Classification


def digits(limit: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's digits as ``(N, 1, 32, 32)`` floats in [0, 1] and ``(N,)`` labels."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(data.target, dtype=torch.long)
    x = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False)
    return (x[:limit], y[:limit]) if limit else (x, y)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18", help="any timm model name")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--alpha", type=float, default=2.0, help="Beta(alpha, alpha) of the mixing weight")
    parser.add_argument("--smoothing", type=float, default=0.1)
    parser.add_argument("--limit", type=int, default=None, help="use only the first N images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    x, y = digits(args.limit)
    n_val = max(len(x) // 5, 1)
    train = torch.utils.data.TensorDataset(x[n_val:], y[n_val:])
    loader = torch.utils.data.DataLoader(train, batch_size=args.batch_size, shuffle=True)

    model = timm.create_model(args.model, num_classes=10, in_chans=1).to(args.device)
    mixer = ManifoldMixup(model, alpha=args.alpha, seed=args.seed)  # points: input + the first two feature_info stages
    adapter = Classification(10, label_smoothing=args.smoothing)  # the loss below takes its soft targets
    criterion = SoftTargetCrossEntropy()
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
    print(f"model {args.model}, mix points {mixer.points}")

    for epoch in range(args.epochs):
        model.train()
        for inputs, target in loader:
            inputs, target = inputs.to(args.device), target.to(args.device)
            plan = mixer.sample(len(inputs), inputs.device, input_shape=inputs.shape)
            target = adapter.mix_targets(target, plan)
            with mixer.apply(plan):
                output = model(inputs)
            loss = criterion(output, target)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        model.eval()  # no mixing in eval mode
        with torch.no_grad():
            predicted = model(x[:n_val].to(args.device)).argmax(dim=1).cpu()
        accuracy = (predicted == y[:n_val]).float().mean().item()
        print(f"epoch {epoch} train_loss {loss.item():.4f} val_accuracy {accuracy:.4f}")
    mixer.close()  # the model is the plain timm model again


if __name__ == "__main__":
    main()
