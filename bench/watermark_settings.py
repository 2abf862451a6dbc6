"""Choosing a watermark's embedding settings on the owner's side only. Not a test.

For each candidate setting (``--candidate "epochs=5 key_grid=8"``, repeatable; ``""`` is the defaults) the host is
marked and the script prints what an owner can measure without any suspect: the test-accuracy change, the marked
model's own scores (1 - bit error rate white-box, key accuracy black-box) and the host's, and the scores of a copy
the owner fine-tunes themselves (all layers, 2 epochs at lr 0.01: the zoo's FTAL recipe with another seed than the
zoo's). The evaluation zoo's suspects are never read.

    python bench/watermark_settings.py runs/paper/target.safetensors --data ../shared/data/cifar10_test_32 \\
        --candidate "" --candidate "key_grid=8"
"""

from __future__ import annotations

import argparse
import shlex
import time

from modelprint.access import WhiteBox
from modelprint.checks import parse_assignments
from modelprint.data import load_data
from modelprint.models import load_model
from modelprint.watermarks.fidelity import fidelity, read_test
from modelprint.watermarks import watermark_named
from modelprint.zoo import TRANSFORMS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("host")
    parser.add_argument("--data", required=True)
    parser.add_argument("--scheme", default="deepsigns")
    parser.add_argument("--candidate", action="append", default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    host = load_model(args.host)
    data = load_data(args.data, channels=host.spec.channels, size=host.spec.input_size[0])
    print("| settings | accuracy change | KL | marked wb / bb | host wb / bb | own FTAL wb / bb | embed s |")
    print("|---|---|---|---|---|---|---|")
    host_reading = read_test(host, data)
    for text in args.candidate or [""]:
        scheme = watermark_named(args.scheme, **{**parse_assignments(shlex.split(text)), "seed": args.seed})
        began = time.perf_counter()
        marked, key = scheme.embed(host, data.train, progress=True)
        seconds = time.perf_counter() - began
        tuned = TRANSFORMS["finetune"](layers="all", epochs=2).apply(marked, data.train, seed=7000 + args.seed)
        figures = fidelity(host_reading, read_test(marked, data), host.spec.task)
        scores = {name: [scheme.verify(WhiteBox(m), key, mode=mode).matching_score for mode in scheme.modes]
                  for name, m in (("marked", marked), ("host", host), ("tuned", tuned))}
        cell = lambda name: " / ".join(f"{v:.3f}" for v in scores[name])  # noqa: E731
        print(f"| {text or 'defaults'} | {figures['test_metric_change']:+.4f} | {figures.get('kl_host_to_marked', float('nan')):.3f} | "
              f"{cell('marked')} | {cell('host')} | {cell('tuned')} | {seconds:.0f} |", flush=True)


if __name__ == "__main__":
    main()
