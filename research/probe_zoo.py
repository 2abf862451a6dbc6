"""One fingerprint set of any scheme against a finished evaluation's zoo, white-box: the mean (lowest - highest)
matching score per transform. A quick probe of a setting before a full evaluation; not a test.

    python research/probe_zoo.py runs/paper --data ../shared/data/cifar10_test_32 tafa --set bend=0.2 --n 50
    python research/probe_zoo.py runs/paper --data ../shared/data/cifar10_test_32 ltrc --set variant=C

The run folder must hold target.safetensors and zoo/manifest.json (``modelprint evaluate --out RUN``); candidates
are the first 2000 training images of the data. Reads no helper models: for schemes that need them, use evaluate.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path

import torch

from modelprint.access import WhiteBox
from modelprint.data import load_data
from modelprint.fingerprints import SCHEMES
from modelprint.models import load_model
from modelprint.tasks import task_named


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("scheme", choices=sorted(SCHEMES))
    parser.add_argument("--data", required=True)
    parser.add_argument("--task", default="classification")
    parser.add_argument("--set", action="append", default=[], metavar="K=V")
    parser.add_argument("--n", type=int, default=50)
    args = parser.parse_args()
    torch.set_num_threads(1)
    cls = SCHEMES[args.scheme]
    scheme = cls(**{"n": args.n, **cls.parse_settings(args.set)})
    target = load_model(args.run / "target.safetensors")
    data, task = load_data(args.data), task_named(args.task)
    began = time.perf_counter()
    fingerprints = scheme.generate(target, data.train.images[:2000], data.train.labels[:2000], task)
    print(f"{scheme!r}: {time.perf_counter() - began:.1f} s", {k: v for k, v in fingerprints.stats.items() if isinstance(v, (int, float))})
    scores = defaultdict(list)
    scores["target"].append(scheme.verify(WhiteBox(target), fingerprints, mode="white-box").matching_score)
    for suspect in json.loads((args.run / "zoo" / "manifest.json").read_text())["suspects"]:
        model = load_model(args.run / "zoo" / "suspects" / f"{suspect['name']}.safetensors")
        scores[suspect["transform"]].append(scheme.verify(WhiteBox(model), fingerprints, mode="white-box").matching_score)
    for transform, values in scores.items():
        print(f"{transform:14s} {sum(values) / len(values):.2f} ({min(values):.2f}-{max(values):.2f})")


if __name__ == "__main__":
    main()
