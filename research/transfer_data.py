"""How well a thief distils the target on another data set. Not a test.

For a target model file and its data, distils a student on each other data set named (the distillation family's
transfer recipe: same architecture, soft labels at T = 4, SGD, seed 456 as the zoo's ``distill_transfer``) and
prints, on the target's test split, the student's accuracy, how often it agrees with the target's label, and how
many test images it gives each class (a student that answers a few classes whatever it is shown has learnt nothing
of the target):

    python research/transfer_data.py runs/paper_distill/target.safetensors --data ../shared/data/cifar10_test_32 \
        digits ../shared/data/utkface_age_64 ../shared/data/facescrub20_32 ../shared/data/coil20_angle_32
"""

from __future__ import annotations

import argparse
import time

import torch

from modelprint.data import load_data
from modelprint.models import load_model
from modelprint.zoo.distill import Distill
from modelprint.zoo.spec import FAMILY_SEED


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", help="the target's model file")
    parser.add_argument("transfer", nargs="+", help="data specs to distil on (as --data)")
    parser.add_argument("--data", required=True, help="the target's data (its test split scores the students)")
    parser.add_argument("--epochs", type=int, default=15)
    args = parser.parse_args()
    target = load_model(args.target)
    splits = load_data(args.data, channels=target.spec.channels, size=target.spec.input_size[0])
    x, y = splits.test.images, splits.test.labels
    with torch.no_grad():
        answers = target(x).argmax(dim=1)
    print(f"target: test accuracy {(answers == y).float().mean():.3f}")
    print("| transfer data | test accuracy | agreement with the target | test images per class | seconds |\n|---|---|---|---|---|")
    for transfer in args.transfer:
        start = time.perf_counter()
        student = Distill(epochs=args.epochs, transfer=transfer).apply(target, splits.train, seed=FAMILY_SEED + 6)
        with torch.no_grad():
            predicted = student(x).argmax(dim=1)
        counts = torch.bincount(predicted, minlength=int(y.max()) + 1).tolist()
        print(f"| {transfer} | {(predicted == y).float().mean():.3f} | {(predicted == answers).float().mean():.3f} | {counts} | {time.perf_counter() - start:.0f} |", flush=True)


if __name__ == "__main__":
    main()
