"""Train the evaluation feature network (dkdm_zoo/assets/digits_classifier.safetensors).

    python tools/train_digit_classifier.py --out dkdm_zoo/assets

Seeded, CPU only, well under a minute on an idle 2-core CPU. Trains on the digits TRAIN split (stratified 80%, seed 0)
and reports accuracy on the held-out TEST split, which is never used for any choice.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from dkdm_zoo.datasets import load_digits_images
from dkdm_zoo.evaluation.features import DIGITS_CLASSIFIER_FILE, DigitClassifier, predict


def augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random +-1 pixel shifts (background-padded) and light noise at 8x8: robustness to generated digits."""
    n = len(images)
    padded = F.pad(images, (1, 1, 1, 1), value=-1.0)
    dx = torch.randint(0, 3, (n,), generator=generator)
    dy = torch.randint(0, 3, (n,), generator=generator)
    rows = (dy[:, None] + torch.arange(8)[None]).view(n, 1, 8, 1).expand(n, 1, 8, 10)
    shifted = padded.gather(2, rows)
    cols = (dx[:, None] + torch.arange(8)[None]).view(n, 1, 1, 8).expand(n, 1, 8, 8)
    shifted = shifted.gather(3, cols)
    return (shifted + 0.1 * torch.randn(shifted.shape, generator=generator)).clamp(-1, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("dkdm_zoo/assets"))
    parser.add_argument("--epochs", type=int, default=25)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    torch.set_num_threads(1)  # a net this small trains fastest on one thread (and deterministically)
    gen = torch.Generator().manual_seed(args.seed)
    x_train, y_train = load_digits_images(8, "train", seed=0)
    x_test, y_test = load_digits_images(8, "test", seed=0)

    model = DigitClassifier()
    steps_per_epoch = (len(x_train) + args.batch_size - 1) // args.batch_size
    total_steps = args.epochs * steps_per_epoch
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=total_steps)
    start = time.perf_counter()
    model.train()
    for epoch in range(args.epochs):
        perm = torch.randperm(len(x_train), generator=gen)
        for i in range(0, len(perm), args.batch_size):
            idx = perm[i : i + args.batch_size]
            loss = F.cross_entropy(
                model.logits(augment(x_train[idx], gen)), y_train[idx], label_smoothing=0.05
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        if (epoch + 1) % 5 == 0:
            print(f"epoch {epoch + 1}/{args.epochs} loss {loss.item():.4f}")
    seconds = time.perf_counter() - start
    model.eval()

    # Timing stays out of the file's metadata so that retraining reproduces it byte for byte.
    report = {"seed": args.seed, "epochs": args.epochs, "steps": total_steps}
    for res in (8, 16):
        x16, y16 = load_digits_images(res, "test", seed=0)
        report[f"test_accuracy_{res}x{res}"] = round((predict(model, x16) == y16).double().mean().item(), 4)
    report["train_accuracy_8x8"] = round((predict(model, x_train) == y_train).double().mean().item(), 4)
    report["n_train"], report["n_test"] = len(y_train), len(y_test)
    report["parameters"] = sum(p.numel() for p in model.parameters())

    args.out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(args.out / DIGITS_CLASSIFIER_FILE), metadata={k: str(v) for k, v in report.items()})
    print(json.dumps({**report, "train_seconds": round(seconds, 1)}, indent=2))


if __name__ == "__main__":
    main()
