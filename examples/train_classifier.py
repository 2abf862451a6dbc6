"""An owner's own training script, as one would write it without modelprint: timm or torchvision, an image folder.

    python examples/train_classifier.py --data pets --arch timm:resnet18 --size 64 --epochs 6 --out weights.pt
    python examples/train_classifier.py ... --init weights.pt --epochs 2 --lr 0.01 --out stolen.pt   # a thief's fine-tune
    python examples/train_classifier.py ... --onnx model.onnx                                        # also export ONNX

It reads ``DATA/train/CLASS/*.png`` with torchvision's ImageFolder, normalises with ImageNet's mean and std (as
timm's and torchvision's ResNets expect), trains with SGD and a cosine schedule, and saves the state dict with
``torch.save`` (and the class names beside it, one per line). Nothing here is modelprint: the walk-through in
docs/own-model.md imports the result with ``modelprint import``.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torchvision import datasets, transforms


def build(arch: str, classes: int) -> torch.nn.Module:
    library, _, name = arch.partition(":")
    if library == "timm":
        import timm

        return timm.create_model(name, pretrained=False, num_classes=classes)
    import torchvision

    return torchvision.models.get_model(name, weights=None, num_classes=classes)


def tensors(folder: Path, size: int, mean, std) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    prepare = transforms.Compose([transforms.Resize(size), transforms.CenterCrop(size), transforms.ToTensor(), transforms.Normalize(mean, std)])
    data = datasets.ImageFolder(str(folder), transform=prepare)
    images = torch.stack([x for x, _ in data])
    return images, torch.tensor(data.targets), data.classes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--arch", default="timm:resnet18")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--init", type=Path, help="start from these weights (a fine-tune)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--onnx", type=Path, help="also export the trained model to this ONNX file")
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    x, y, classes = tensors(args.data / "train", args.size, mean, std)
    x_test, y_test, _ = tensors(args.data / "test", args.size, mean, std)
    model = build(args.arch, len(classes))
    if args.init is not None:
        model.load_state_dict(torch.load(args.init, weights_only=True))
    optimiser = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=5e-4, nesterov=True)
    steps = args.epochs * math.ceil(len(x) / 128)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(len(x))
        for start in range(0, len(x), 128):
            idx = order[start : start + 128]
            batch = x[idx]
            if torch.rand(()) < 0.5:
                batch = batch.flip(3)
            loss = F.cross_entropy(model(batch), y[idx])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
        model.eval()
        with torch.no_grad():
            accuracy = sum((model(x_test[i : i + 256]).argmax(1) == y_test[i : i + 256]).sum().item() for i in range(0, len(x_test), 256)) / len(x_test)
        print(f"epoch {epoch + 1}/{args.epochs}: loss {loss.item():.3f}, test accuracy {accuracy:.3f}", flush=True)
    torch.save(model.state_dict(), args.out)
    args.out.with_suffix(".classes.txt").write_text("\n".join(classes) + "\n")
    if args.onnx is not None:
        torch.onnx.export(model.eval(), (x[:1],), str(args.onnx), input_names=["image"], output_names=["logits"],
                          dynamic_axes={"image": {0: "n"}}, dynamo=False, opset_version=18)
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
