"""Seconds to generate fingerprints (default 100) for a ResNet-18 at 32x32 on this machine. Not a test.

    python bench/generate.py --model target.safetensors --data ../shared/data/cifar10_test_32
    python bench/generate.py                    # trains a ResNet-18 width 16 on digits first (not timed)

Run it alone: another heavy process on the same cores makes the figure meaningless.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from modelprint import SaliencyFingerprint, load_data, load_model
from modelprint.train import TrainConfig, train_new_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="target model file; a ResNet-18 width 16 is trained on --data when omitted")
    parser.add_argument("--data", default="digits")
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--preset", choices=["default", "paper"], default="default")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    data = load_data(args.data)
    if args.model:
        target = load_model(args.model)
    else:
        target, _ = train_new_model(data, arch="resnet18", width=16, config=TrainConfig(epochs=5, seed=0, augment=data.augment))
    scheme = SaliencyFingerprint.named(args.preset, n=args.n)

    seconds, stats = [], {}
    for repeat in range(args.repeats):
        start = time.perf_counter()
        fingerprints = scheme.generate(target, data.train.images, data.train.labels)
        seconds.append(time.perf_counter() - start)
        stats = fingerprints.stats
    report = {
        "model": args.model or "resnet18 width 16 trained 5 epochs on " + data.name,
        "arch": target.spec.arch,
        "arch_kwargs": target.spec.arch_kwargs,
        "input": [target.spec.channels, *target.spec.input_size],
        "data": data.name,
        "scheme": repr(scheme),
        "n": args.n,
        "seconds": seconds,
        "best_s": min(seconds),
        "candidates_optimised": stats.get("candidates_optimised"),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
    }
    print(json.dumps(report, indent=2))
    print(f"generated {args.n} fingerprints in {min(seconds):.1f} s (best of {args.repeats}; runs: "
          + ", ".join(f"{s:.1f}" for s in seconds) + ")")


if __name__ == "__main__":
    main()
