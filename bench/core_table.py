"""The core issue's table on CIFAR-10: matching scores of the target, a 1-epoch fine-tuned copy, a 30%-pruned copy
and two independently trained models, for the paper-faithful and the default configuration. Not a test.

    python bench/core_table.py --data ../shared/data/cifar10_test_32 --epochs 30 --out bench/out/cifar
    python bench/core_table.py ... --target t0.safetensors --independent i1.safetensors i2.safetensors

Models are cached in OUT/models (an interrupted run resumes); pretrained files may be given instead.
"""

from __future__ import annotations

import argparse
import json

from modelprint.demo import run_demo, summary_notes, summary_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/cifar10_test_32")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--target", help="pretrained target (seed 0)")
    parser.add_argument("--independent", nargs="*", default=[], help="pretrained independent models (seeds 1, 2)")
    parser.add_argument("--out", default="bench/out/core_table")
    args = parser.parse_args()

    pretrained = {seed: path for seed, path in enumerate([args.target, *args.independent]) if path}
    summary = run_demo(args.out, data=args.data, pretrained=pretrained, epochs=args.epochs, width=args.width, n=args.n)
    header, rows = summary_table(summary)
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print()
    for line in summary_notes(summary):
        print(line)
    for name, config in summary["configurations"].items():
        print(name, json.dumps(config["scheme"]))
    print(f"total {summary['timings_s']['total_s']:.0f} s")


if __name__ == "__main__":
    main()
