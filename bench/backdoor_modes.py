"""The deep-fidelity backdoor watermark's embedding modes on one host: trigger accuracy and every fidelity figure.
Not a test.

For each configuration (``--modes ftal,fixll,...``) and key seed (``--keys 3``) the host is marked by fine-tuning and
the script prints the marked model's trigger accuracy (and the host's), the test-accuracy change, KL divergence from
the host's softmax, top-1 agreement, penultimate distance, total weight change and last-layer change, and the
embedding's seconds; ``--json`` keeps every row. Only the owner's host and data are read.

    python bench/backdoor_modes.py runs/bd/host.safetensors --data digits --keys 3 --json runs/bd/modes.json
"""

from __future__ import annotations

import argparse
import json
import shlex
import time

from modelprint.access import WhiteBox
from modelprint.checks import parse_assignments
from modelprint.data import load_data
from modelprint.models import load_model
from modelprint.watermarks import WATERMARKS
from modelprint.watermarks.fidelity import fidelity, read_test

COLUMNS = ("test_metric_change", "kl_host_to_marked", "top1_agreement", "penultimate_distance", "total_weight_change", "last_layer_change")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("host")
    parser.add_argument("--data", required=True)
    parser.add_argument("--modes", default="ftal,fixll,fixll_twl,fixll_pfl,fixll_spl")
    parser.add_argument("--keys", type=int, default=3)
    parser.add_argument("--first-key", type=int, default=0, help="the first key's seed (keys FIRST .. FIRST + KEYS - 1)")
    parser.add_argument("--set", default="", help="settings on top of every mode's, e.g. 'epochs=5'")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    host = load_model(args.host)
    data = load_data(args.data, channels=host.spec.channels, size=host.spec.input_size[0])
    host_reading = read_test(host, data)
    scheme_class, rows = WATERMARKS["backdoor"], []
    print("| mode | key | trigger acc. marked / host | " + " | ".join(COLUMNS) + " | embed s |")
    print("|---" * (len(COLUMNS) + 4) + "|")
    for mode in args.modes.split(","):
        for seed in range(args.first_key, args.first_key + args.keys):
            scheme = scheme_class.named(mode, **{**parse_assignments(shlex.split(args.set)), "seed": seed})
            began = time.perf_counter()
            marked, key = scheme.embed(host, data.train, progress=False)
            seconds = time.perf_counter() - began
            figures = fidelity(host_reading, read_test(marked, data), host.spec.task, models=(host, marked))
            marked_acc = scheme.verify(WhiteBox(marked), key).matching_score
            host_acc = scheme.verify(WhiteBox(host), key).matching_score
            rows.append({"mode": mode, "seed": seed, "trigger_accuracy": marked_acc, "host_trigger_accuracy": host_acc, "embedding_s": seconds,
                         "embedding_epochs": key.stats["embedding_epochs"], **figures})
            print(f"| {mode} | {seed} | {marked_acc:.2f} / {host_acc:.2f} | " + " | ".join(f"{figures[c]:.4g}" for c in COLUMNS) + f" | {seconds:.0f} ({key.stats['embedding_epochs']} epochs) |", flush=True)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"host": args.host, "data": args.data, "settings": args.set, "rows": rows}, handle, indent=1)


if __name__ == "__main__":
    main()
