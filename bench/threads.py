"""Zoo-building throughput on this machine: two pool workers with one torch thread each, against two workers with
two threads each (oversubscribed), against one process with all threads building the suspects one after another.
Not a test.

    python bench/threads.py --target target.safetensors --data ../shared/data/cifar10_test_32

Each configuration builds the same suspects (independent models trained for --epochs) into a fresh folder and
reports wall seconds and training images per second. Run it alone: another heavy process on the same cores makes
the figures meaningless. Set GLIBC_TUNABLES before starting it to measure an allocator setting (pool workers
inherit the environment).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import torch

from modelprint import load_data, load_model
from modelprint.zoo.build import build_zoo
from modelprint.zoo.spec import SuspectSpec, ZooSpec

CONFIGURATIONS = {
    "pool 2 workers x 1 thread": {"executor": "pool", "workers": 2, "threads_per_worker": 1},
    "pool 2 workers x 2 threads": {"executor": "pool", "workers": 2, "threads_per_worker": 2},
    "in-process, 2 threads, sequential": {"executor": "inprocess", "workers": 1, "threads_per_worker": 2},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", required=True, help="the target model file (its architecture is what is trained)")
    parser.add_argument("--data", required=True)
    parser.add_argument("--suspects", type=int, default=2, help="independent models built per configuration")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--only", choices=list(CONFIGURATIONS), action="append", help="run only these configurations")
    args = parser.parse_args()

    images = len(load_data(args.data).train) * args.epochs * args.suspects
    spec = ZooSpec(tuple(SuspectSpec(f"independent_{i}", "negative", "independent", {"epochs": args.epochs}, 1000 + i) for i in range(args.suspects)))
    load_model(args.target)
    results = {}
    for name in args.only or CONFIGURATIONS:
        settings = dict(CONFIGURATIONS[name])
        threads = settings.pop("threads_per_worker")
        if settings["executor"] == "inprocess":
            torch.set_num_threads(threads)
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            build_zoo(spec, args.target, args.data, out, threads_per_worker=threads, progress=False, **settings)
            seconds = time.perf_counter() - start
        results[name] = {"seconds": round(seconds, 1), "images_per_s": round(images / seconds, 1)}
        print(f"{name:40s} {seconds:7.1f} s  {images / seconds:7.1f} images/s", flush=True)
    print(json.dumps({"suspects": args.suspects, "epochs": args.epochs, "images": images, "glibc_tunables": os.environ.get("GLIBC_TUNABLES"), "results": results}))


if __name__ == "__main__":
    main()
